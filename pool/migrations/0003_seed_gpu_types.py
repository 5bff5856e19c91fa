"""Seed the GPU types of the reference production cluster, each with a default pool at target 0."""

from django.db import migrations

NODE_LABEL_KEY = "gpudev.io/gpu-type"

# (name, GPUs or MIG slices per node, is MIG); CPU types offer no GPUs.
GPU_TYPES = [
    ("t4", 4, False),
    ("l4", 4, False),
    ("a10g", 4, False),
    ("a100", 8, False),
    ("h100", 8, False),
    ("h200", 8, False),
    ("b200", 8, False),
    ("h100-mig-1g", 16, True),
    ("h100-mig-2g", 8, True),
    ("h100-mig-3g", 8, True),
    ("cpu-x86", 0, False),
    ("cpu-arm", 0, False),
]


def seed(apps, schema_editor):
    GpuType = apps.get_model("pool", "GpuType")
    Pool = apps.get_model("pool", "Pool")
    for name, gpus_per_node, is_mig in GPU_TYPES:
        gpu_type, _ = GpuType.objects.get_or_create(
            name=name,
            defaults={
                "gpus_per_node": gpus_per_node,
                "is_mig": is_mig,
                "node_label": f"{NODE_LABEL_KEY}={name}",
            },
        )
        Pool.objects.get_or_create(
            gpu_type=gpu_type,
            profile="default",
            defaults={"gpus_per_pod": 1 if gpus_per_node else 0, "target": 0},
        )


def unseed(apps, schema_editor):
    GpuType = apps.get_model("pool", "GpuType")
    Pool = apps.get_model("pool", "Pool")
    names = [name for name, _, _ in GPU_TYPES]
    Pool.objects.filter(gpu_type__name__in=names, profile="default", target=0).delete()
    GpuType.objects.filter(name__in=names, pools__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [("pool", "0002_initial")]

    operations = [migrations.RunPython(seed, unseed)]

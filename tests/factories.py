"""Small builders for the domain objects tests need; named for what they make."""

from datetime import timedelta

from django.utils import timezone

from pool.models import GpuType, PodKind, PodRecord, PodState, Pool
from reservations.models import Reservation


def pool_of(gpu_type: str = "h100", profile: str = "default", **fields) -> Pool:
    """Return the pool of ``gpu_type``/``profile`` (made if absent), updated by ``fields``."""
    kind = GpuType.objects.get(name=gpu_type)
    pool, _ = Pool.objects.get_or_create(
        gpu_type=kind, profile=profile, defaults={"gpus_per_pod": min(kind.gpus_per_node, 1)}
    )
    if fields:
        for name, value in fields.items():
            setattr(pool, name, value)
        pool.save()
    return pool


def pod_record(pool: Pool, name: str, *, state=PodState.READY, kind=PodKind.WARM, **fields):
    return PodRecord.objects.create(pool=pool, name=name, state=state, kind=kind, **fields)


def reservation_for(user, pool: Pool, *, gpu_count: int = 1, hours: float = 2, **fields):
    fields.setdefault("created_at", timezone.now())
    return Reservation.objects.create(
        user=user, pool=pool, gpu_count=gpu_count, duration=timedelta(hours=hours), **fields
    )

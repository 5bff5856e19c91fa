"""GPU node types and the cluster shapes the sim starts with.

Instance types and sizes follow the production cluster in ``reference/osdc.md``. A MIG node type
counts its slices as ``nvidia.com/gpu``, as the NVIDIA device plugin's "single" strategy does.
"""

from collections.abc import Mapping
from dataclasses import dataclass, replace

GPU_TYPE_LABEL = "gpudev.io/gpu-type"


@dataclass(frozen=True)
class NodeType:
    """One kind of node: its instance type, GPUs (or MIG slices), CPU, memory and architecture."""

    name: str
    instance_type: str
    gpus: int
    cpu: int
    memory_gib: int
    arch: str = "amd64"
    gpu_product: str = ""


NODE_TYPES: dict[str, NodeType] = {
    t.name: t
    for t in (
        NodeType("t4", "g4dn.12xlarge", 4, 48, 192, gpu_product="Tesla-T4"),
        NodeType("l4", "g6.12xlarge", 4, 48, 192, gpu_product="NVIDIA-L4"),
        NodeType("a10g", "g5.12xlarge", 4, 48, 192, gpu_product="NVIDIA-A10G"),
        NodeType("a100", "p4d.24xlarge", 8, 96, 1152, gpu_product="NVIDIA-A100-SXM4-40GB"),
        NodeType("h100", "p5.48xlarge", 8, 192, 2048, gpu_product="NVIDIA-H100-80GB-HBM3"),
        NodeType("h200", "p5e.48xlarge", 8, 192, 2048, gpu_product="NVIDIA-H200"),
        NodeType("b200", "p6-b200.48xlarge", 8, 192, 2048, gpu_product="NVIDIA-B200"),
        NodeType(
            "h100-mig-1g",
            "p5.48xlarge",
            16,
            192,
            2048,
            gpu_product="NVIDIA-H100-80GB-HBM3-MIG-1g.10gb",
        ),
        NodeType("cpu-x86", "c7i.8xlarge", 0, 32, 64),
        NodeType("cpu-arm", "c7g.8xlarge", 0, 32, 64, arch="arm64"),
    )
}


@dataclass(frozen=True)
class Preset:
    """A cluster shape: nodes per type, the image's size and each node's pull bandwidth."""

    name: str
    nodes: Mapping[str, int]
    image_size_gb: float
    bandwidth_mb_s: float

    def with_nodes(self, counts: Mapping[str, int]) -> "Preset":
        """Return this preset with some node counts replaced."""
        unknown = set(counts) - set(NODE_TYPES)
        if unknown:
            raise ValueError(f"unknown node types: {', '.join(sorted(unknown))}")
        return replace(self, nodes={**self.nodes, **counts})


# Production (osdc, mid-2026): ~24 GPU nodes running the prepuller, a 27 GB image that takes
# 5-6 minutes to pull per node (27e9 B / 80e6 B/s = 5m37s).
SEED = Preset(
    "seed",
    nodes={"h100": 9, "h100-mig-1g": 1, "h200": 8, "b200": 7, "cpu-x86": 10, "cpu-arm": 10},
    image_size_gb=27,
    bandwidth_mb_s=80,
)
# For tests: a handful of nodes and a 1 GB image that pulls in 10 s.
SMALL = Preset(
    "small",
    nodes={"h100": 2, "a10g": 1, "cpu-x86": 1},
    image_size_gb=1,
    bandwidth_mb_s=100,
)
PRESETS = {preset.name: preset for preset in (SEED, SMALL)}


def get(name: str) -> Preset:
    """Return the preset called ``name``."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None


def parse_node_counts(text: str) -> dict[str, int]:
    """Parse ``h100=4,cpu-x86=2`` into node counts per type."""
    counts = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, count = part.partition("=")
        if name not in NODE_TYPES or not count.isdigit():
            raise ValueError(
                f"expected TYPE=COUNT with TYPE one of {', '.join(NODE_TYPES)}: {part!r}"
            )
        counts[name] = int(count)
    return counts

"""Fixtures for the reservation tests: SSH keys, a cluster's worth of nodes, a current image."""

import pytest
from django.conf import settings
from django.utils import timezone

from pool.models import GpuType, ImageRelease, NodeRecord
from reservations.models import SshKey
from reservations.sshkeys import parse_public_key

# Made with ssh-keygen; the fingerprints are what ``ssh-keygen -lf`` prints for them.
ED25519 = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHzjCLSMcRPByZewKuweKU5RnPQRZaL2a03p1VI9XFBP me@host x"
)
ED25519_FINGERPRINT = "SHA256:9JwlpOIcf3SISeNFB61nope3M5lyXlDNUGr4dzhapas"
ECDSA = (
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBBy7OPTUg+R6axHp0v9u"
    "Z/dGNy7i3MCg32XiiliV6nJPBR/CHq5ce5HKsNXnM7sAOxDb36ILGttAOi63tgVG4U4= me@host x"
)
ECDSA_FINGERPRINT = "SHA256:8rWB8opVZRkq+UoiX4EXbQNG9m/pQ4KztKP08d1CjME"


def add_key(user, line: str = ED25519) -> SshKey:
    key = parse_public_key(line)
    return SshKey.objects.create(
        user=user, title=key.comment, public_key=key.line, fingerprint=key.fingerprint
    )


def ready_nodes(gpu_type: str, count: int, *, gpus_used: int = 0) -> list[NodeRecord]:
    """Mirror ``count`` ready nodes of ``gpu_type``, each with ``gpus_used`` GPUs taken."""
    kind = GpuType.objects.get(name=gpu_type)
    return [
        NodeRecord.objects.create(
            name=f"{gpu_type}-node-{index}",
            gpu_type=kind,
            gpus_allocatable=kind.gpus_per_node,
            gpus_used=gpus_used,
            ready=True,
        )
        for index in range(count)
    ]


@pytest.fixture
def release(db) -> ImageRelease:
    """A current image release, pinned by digest."""
    digest = "sha256:" + "ab" * 32
    return ImageRelease.objects.create(
        repo=settings.IMAGE_REPOSITORY,
        tag="latest",
        digest=digest,
        immutable_ref=f"{settings.IMAGE_REPOSITORY}@{digest}",
        is_current=True,
        first_seen_at=timezone.now(),
    )


@pytest.fixture
def keyed_alice(alice):
    """alice with an SSH key, so she may reserve."""
    add_key(alice)
    return alice


@pytest.fixture
def keyed_bob(bob):
    add_key(bob, ECDSA)
    return bob

"""The registry seam: the tag's digest from ECR (boto3) or any OCI registry; unknown on failure."""

from urllib.parse import urlparse

import pytest
from django.utils import timezone

from pool import images, registry
from pool.models import AuditEvent, GpuType, ImageRelease, NodeRecord, PrepullStatus

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def test_ecr_gives_the_digest_and_the_immutable_context_tag(engine):
    digest, tag = engine.sim.push_image(context_hash="1a2b3c4d")
    found = registry.current_digest(engine.sim.image_repo, "latest")
    assert found.digest == digest
    assert found.context_hash == "1a2b3c4d"
    assert found.immutable_ref == f"{engine.sim.image_repo}:{tag}"


def test_an_oci_registry_is_read_from_the_manifest_digest_header(engine, settings):
    digest, _ = engine.sim.push_image()
    host = urlparse(engine.sim.api_url).netloc
    settings.REGISTRY_KIND = "oci"
    settings.REGISTRY_TOKEN = engine.sim.token
    found = registry.current_digest(f"{host}/gpu-dev", "latest")
    assert found.digest == digest
    assert found.immutable_ref == f"{host}/gpu-dev@{digest}"

    settings.REGISTRY_TOKEN = "wrong"
    assert registry.current_digest(f"{host}/gpu-dev", "latest") is None


def test_a_registry_outage_or_an_unknown_tag_is_unknown_not_an_error(engine):
    assert registry.current_digest(engine.sim.image_repo, "no-such-tag") is None
    engine.sim.faults.registry_down = True
    assert registry.current_digest(engine.sim.image_repo, "latest") is None
    release, answered = images.refresh_release(now=timezone.now())
    assert release == images.current_release()
    assert answered is False


def test_a_moved_tag_becomes_one_new_current_release(engine):
    NodeRecord.objects.create(name="untyped-1")
    NodeRecord.objects.create(name="h100-8", gpu_type=GpuType.objects.get(name="h100"))
    before = images.current_release()
    digest, tag = engine.sim.push_image()
    release, answered = images.refresh_release(now=timezone.now())
    assert answered
    assert (release.digest, release.immutable_ref) == (digest, f"{engine.sim.image_repo}:{tag}")
    assert images.refresh_release(now=timezone.now())[0] == release
    assert list(ImageRelease.objects.filter(is_current=True)) == [release]
    assert ImageRelease.objects.get(pk=before.pk).is_current is False
    event = AuditEvent.objects.get(action="release_new", reason__contains=release.short_digest)
    assert before.short_digest in event.reason
    assert list(
        PrepullStatus.objects.filter(release=release).values_list("node_name", "phase")
    ) == [("h100-8", "waiting")]


def _gpu_type(name):
    from pool.models import GpuType

    return GpuType.objects.get(name=name)

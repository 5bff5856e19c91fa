"""/metrics: Prometheus text with the pools' gauges, counters and histograms, behind a token."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from pool import reconciler
from pool.models import NodeRecord, PodRecord
from tests.factories import pool_of
from tests.live import wait_for

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def scrape(client: Client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def pool_gauge(samples, name: str, pool: str) -> float:
    return samples[(f"gpudev_pool_{name}", (("pool", pool),))]


def test_pool_gauges_follow_a_reconcile_on_clustersim(engine, settings):
    settings.METRICS_TOKEN = "scrape-me"
    client = Client()
    before = scrape(client)
    spawned_before = before.get(("gpudev_spawns_total", (("pool", "h100-default"),)), 0)

    pool = pool_of("h100", target=2)
    reconciler.reconcile()
    engine.sim.advance_until(
        lambda: PodRecord.objects.filter(pool=pool).idle_warm().count() == 2, max_seconds=300
    )
    samples = scrape(client)
    assert pool_gauge(samples, "target", "h100-default") == 2
    assert pool_gauge(samples, "ready", "h100-default") == 2
    assert pool_gauge(samples, "spawning", "h100-default") == 0
    assert pool_gauge(samples, "stale", "h100-default") == 0
    assert pool_gauge(samples, "target", "a10g-default") == 0
    assert samples[("gpudev_spawns_total", (("pool", "h100-default"),))] == spawned_before + 2
    assert samples[("gpudev_reconcile_tick_seconds_count", ())] >= 1
    assert samples[("gpudev_reconcile_last_tick_timestamp_seconds", ())] > 0

    engine.push_image()
    wait_for(lambda: pool_gauge(scrape(client), "stale", "h100-default") == 2)


def test_reservations_are_counted_by_path_and_warm_claims_timed(engine, settings, alice):
    from reservations.claims import ReservationRequest, reserve
    from reservations.models import SshKey

    settings.METRICS_TOKEN = "scrape-me"
    client = Client()
    before = scrape(client)
    engine.start_watcher()  # room for a cold start is counted on the mirrored nodes
    wait_for(lambda: NodeRecord.objects.filter(gpu_type__name="h100").count() == 2)
    pool = pool_of("h100", target=1)
    reconciler.reconcile()
    engine.sim.advance_until(
        lambda: PodRecord.objects.filter(pool=pool).idle_warm().exists(), max_seconds=300
    )
    SshKey.objects.create(user=alice, public_key="ssh-ed25519 AAAA", fingerprint="SHA256:x")
    request = ReservationRequest(pool=pool, gpu_count=1, duration=timedelta(hours=1))
    reserve(alice, request, now=timezone.now())
    reserve(alice, request, now=timezone.now())
    after = scrape(client)

    def grew(name, labels=()):
        return after.get((name, labels), 0) - before.get((name, labels), 0)

    warm = (("path", "warm"), ("pool", "h100-default"))
    cold = (("path", "cold"), ("pool", "h100-default"))
    assert grew("gpudev_claims_total", warm) == 1
    assert grew("gpudev_claims_total", cold) == 1
    assert grew("gpudev_claim_latency_seconds_count") == 1


def test_metrics_need_the_token_outside_the_embedded_default(db, settings):
    settings.METRICS_TOKEN = "scrape-me"
    client = Client()
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 403
    settings.METRICS_TOKEN = ""
    settings.EMBEDDED = False
    response = client.get("/metrics")
    assert response.status_code == 403
    assert b"METRICS_TOKEN" in response.content

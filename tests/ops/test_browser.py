"""What an operator sees in Chromium, with the site running on clustersim.

The engine (clustersim, a Celery worker, the watcher) runs in this process; uvicorn serves the
ASGI site; pushes travel watcher → broadcast → Redis → OpsConsumer → the page. No test reloads
a page to see a change: each one marks the window first and checks the mark survived.
"""

import re
from collections.abc import Callable

import pytest
from django.utils import timezone

from pool import images, reconciler
from pool.models import AuditEvent, PodRecord, PodState, Pool, PrepullPhase, PrepullStatus
from reservations.models import DomainMapping, LeaseHolder, ReservationStatus
from tests.factories import pool_of, reservation_for
from tests.live import ARTIFACTS, Remote, sign_in, wait_for

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


def tick() -> None:
    reconciler.reconcile()


def run_sim_until(sim, condition: Callable[[], object], *, what: str, timeout: float = 60):
    """Step the sim a second at a time (in real time, so threads keep up) until ``condition``."""

    def stepped():
        if condition():
            return True
        sim.step(1)
        return False

    wait_for(stepped, timeout=timeout, what=what)


def settle(engine, pool: Pool, *, ready: int) -> None:
    """Run the sim until the pool has ``ready`` idle ready pods and nothing in flight."""

    def settled() -> bool:
        pods = PodRecord.objects.filter(pool=pool)
        in_flight = pods.filter(state__in=(PodState.SLOT, PodState.PENDING)).exists()
        return not in_flight and pods.idle_warm().count() == ready

    run_sim_until(engine.sim, settled, what=f"{pool} to settle at {ready} ready")


def open_live(page: Remote, expect, url: str) -> None:
    """Open a dashboard page, wait for its socket, and mark the window to detect reloads."""
    page.goto(url)
    expect(page.locator("#live-status")).to_have_text("Live")
    page.evaluate("window.__notReloaded = true")


def assert_not_reloaded(page: Remote) -> None:
    assert page.evaluate("window.__notReloaded === true")


def test_developer_gets_403(live_server_url, page, expect, alice):
    sign_in(page, live_server_url, alice)
    for path in ("/ops/", "/ops/pods/", "/ops/images/", "/ops/names/", "/ops/audit/"):
        response = page.goto(f"{live_server_url}{path}")
        assert response.status == 403, path


def test_pod_created_in_the_cluster_appears_in_the_open_table(
    engine, live_server_url, page, expect, olga
):
    engine.start_watcher()
    pool = pool_of("h100")
    sign_in(page, live_server_url, olga)
    open_live(page, expect, f"{live_server_url}/ops/pods/?pool={pool.pk}")
    expect(page.locator("tr.pod-row")).to_have_count(0)

    Pool.objects.filter(pk=pool.pk).update(target=1)
    tick()
    row = page.locator("tr.pod-row")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("h100/default")

    settle(engine, pool, ready=1)
    expect(row.locator(".badge.green")).to_have_text("Ready")
    node = PodRecord.objects.get(pool=pool).node_name
    expect(row).to_contain_text(node)
    assert_not_reloaded(page)


def test_new_image_shows_prepull_progress_and_rollout_to_n_of_n(
    engine, live_server_url, page, expect, olga
):
    engine.start_watcher()
    pool = pool_of("h100", target=2)
    images.refresh_and_prepull(now=timezone.now())
    first = images.current_release()
    tick()
    settle(engine, pool, ready=2)
    run_sim_until(
        engine.sim,
        lambda: images.prepull_summary(first)["done"] == images.prepull_summary(first)["total"],
        what="the first release on every node",
    )
    sign_in(page, live_server_url, olga)
    open_live(page, expect, f"{live_server_url}/ops/images/")

    digest, _ = engine.push_image()
    release = images.current_release()
    images.ensure_prepuller(release)
    expect(page.locator("#release-current")).to_contain_text(digest)

    run_sim_until(
        engine.sim,
        lambda: release.prepulls.filter(phase=PrepullPhase.PULLING).exists(),
        what="a node to start pulling the new release",
    )
    pulling = PrepullStatus.objects.filter(release=release, phase=PrepullPhase.PULLING).first()
    pulling_row = page.locator(f"#prepull-{pulling.node_name}")
    expect(pulling_row.locator(".badge")).to_have_text("Pulling")
    expect(pulling_row).to_contain_text(re.compile(r"estimate|no estimate yet"))

    total = images.prepull_summary(release)["total"]
    run_sim_until(
        engine.sim,
        lambda: images.prepull_summary(release)["done"] == total,
        what="the new release on every node",
    )
    expect(page.locator("#prepull")).to_contain_text(f"{total} of {total} nodes hold")
    assert_not_reloaded(page)

    open_live(page, expect, f"{live_server_url}/ops/")
    rollout = page.locator(f"#pool-{pool.pk} .rollout-text")
    expect(rollout).to_contain_text("0 of 2")
    for on_new in (1, 2):
        tick()
        settle(engine, pool, ready=2)
        expect(rollout).to_contain_text(f"{on_new} of 2")
    assert_not_reloaded(page)


def test_recycle_removes_a_warm_pod_and_the_pool_refills(
    engine, live_server_url, page, expect, olga
):
    engine.start_watcher()
    pool = pool_of("h100", target=1)
    tick()
    settle(engine, pool, ready=1)
    old = PodRecord.objects.get(pool=pool, state=PodState.READY)
    sign_in(page, live_server_url, olga)
    open_live(page, expect, f"{live_server_url}/ops/pods/?pool={pool.pk}")

    page.locator(f"#pod-{old.name}").get_by_role("link", name="Recycle").click()
    dialog = page.locator("#ops-dialog")
    expect(dialog).to_contain_text(f"Recycle {old.name}?")
    dialog.get_by_role("button", name="Recycle pod").click()
    expect(dialog).to_contain_text(f"Recycled {old.name}")
    assert old.name_lease is not None
    assert DomainMapping.objects.get(pk=old.name_lease_id).released_at is not None

    run_sim_until(
        engine.sim,
        lambda: PodRecord.objects.get(pk=old.pk).state == PodState.GONE,
        what="the recycled pod to be gone",
    )
    expect(page.locator(f"#pod-{old.name}")).to_have_count(0)

    tick()
    settle(engine, pool, ready=1)
    fresh = PodRecord.objects.get(pool=pool, state=PodState.READY)
    assert fresh.name != old.name
    expect(page.locator(f"#pod-{fresh.name} .badge.green")).to_have_text("Ready")
    assert_not_reloaded(page)


def test_claimed_pod_has_no_recycle_button(engine, live_server_url, page, expect, olga, alice):
    pool = pool_of("h100", target=1)
    tick()
    settle(engine, pool, ready=1)
    pod = PodRecord.objects.get(pool=pool)
    reservation = reservation_for(alice, pool, status=ReservationStatus.ACTIVE)
    pod.claim(reservation, now=timezone.now(), actor="alice")
    sign_in(page, live_server_url, olga)
    page.goto(f"{live_server_url}/ops/pods/")
    row = page.locator(f"#pod-{pod.name}")
    expect(row.locator(".badge.purple")).to_have_text("Claimed")
    expect(row).to_contain_text("alice")
    expect(row.get_by_role("link", name="Recycle")).to_have_count(0)


def test_orphan_preview_lists_the_planted_orphans_and_cleanup_removes_only_them(
    engine, live_server_url, page, expect, olga, alice
):
    pool = pool_of("h100", target=1)
    tick()
    settle(engine, pool, ready=1)
    held = PodRecord.objects.get(pool=pool).name_lease
    now = timezone.now()
    ended = reservation_for(alice, pool, status=ReservationStatus.CANCELLED)
    planted = {
        DomainMapping.objects.create(
            name=name,
            base=name,
            holder=holder,
            reservation=reservation,
            expires_at=now + timezone.timedelta(hours=2),
        ).name
        for name, holder, reservation in [
            ("lost-fox", LeaseHolder.WARM, None),
            ("lost-owl", LeaseHolder.WARM, None),
            ("ended-elk", LeaseHolder.RESERVATION, ended),
        ]
    }
    sign_in(page, live_server_url, olga)
    open_live(page, expect, f"{live_server_url}/ops/names/")
    expect(page.locator("#orphans tbody tr")).to_have_count(3)

    page.get_by_role("link", name="Preview cleanup").click()
    preview = page.locator("#cleanup-panel")
    expect(preview).to_contain_text("3 names would be released")
    listed = set(preview.locator("tr.preview-row td.mono").all_inner_texts())
    assert listed == planted
    assert held.name not in listed

    preview.get_by_role("button", name="Clean up 3 names").click()
    expect(preview).to_contain_text("Released 3 names")
    expect(page.locator("#orphans")).to_contain_text("No orphaned names.")
    live = set(
        DomainMapping.objects.filter(released_at__isnull=True).values_list("name", flat=True)
    )
    assert live == {held.name}
    assert_not_reloaded(page)


def test_every_page_for_the_record(engine, live_server_url, page, expect, olga, alice):
    """Screenshots of each page on a small busy cluster, for people to look at."""
    engine.start_watcher()
    h100, a10g = pool_of("h100", target=3), pool_of("a10g", target=1)
    images.refresh_and_prepull(now=timezone.now())
    tick()
    settle(engine, h100, ready=3)
    settle(engine, a10g, ready=1)
    pod = PodRecord.objects.filter(pool=h100, state=PodState.READY).first()
    pod.claim(
        reservation_for(alice, h100, status=ReservationStatus.ACTIVE),
        now=timezone.now(),
        actor="alice",
    )
    Pool.objects.filter(pk=a10g.pk).update(rotation_paused=True)
    DomainMapping.objects.create(
        name="lost-fox",
        base="lost-fox",
        holder=LeaseHolder.WARM,
        expires_at=timezone.now() + timezone.timedelta(hours=2),
    )
    engine.push_image()
    images.refresh_and_prepull(now=timezone.now())
    engine.sim.step(4)
    sign_in(page, live_server_url, olga)
    ARTIFACTS.mkdir(exist_ok=True)
    for name, path in [
        ("pools", "/ops/"),
        ("pods", "/ops/pods/"),
        ("images", "/ops/images/"),
        ("names", "/ops/names/"),
        ("audit", "/ops/audit/"),
    ]:
        open_live(page, expect, f"{live_server_url}{path}")
        page.screenshot(path=str(ARTIFACTS / f"ops-{name}.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    open_live(page, expect, f"{live_server_url}/ops/")
    page.screenshot(path=str(ARTIFACTS / "ops-pools-phone.png"), full_page=True)


def test_target_and_rotation_change_in_place_and_are_audited(
    engine, live_server_url, page, expect, olga
):
    pool = pool_of("h100", target=1)
    sign_in(page, live_server_url, olga)
    open_live(page, expect, f"{live_server_url}/ops/")
    card = page.locator(f"#pool-{pool.pk}")

    card.get_by_label("Target").fill("2")
    card.get_by_role("button", name="Set").click()
    expect(page.locator("#ops-flash")).to_contain_text("h100/default: target set to 2.")
    expect(card.locator(".stat.target dd")).to_have_text("2")

    card.get_by_role("button", name="Pause rotation").click()
    expect(card.get_by_role("button", name="Resume rotation")).to_be_visible()
    pool.refresh_from_db()
    assert (pool.target, pool.rotation_paused) == (2, True)
    assert list(
        AuditEvent.objects.filter(actor="olga").order_by("id").values_list("action", "reason")
    ) == [("pool_target", "target 1 → 2"), ("rotation_pause", "rotation paused by an operator")]
    assert_not_reloaded(page)

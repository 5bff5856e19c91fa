"""The ops dashboard's pages and actions, as an operator (olga) and a developer (alice) use them."""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from pool.models import AuditEvent, PodKind, PodRecord, PodState, Pool, PrepullStatus
from reservations.models import DomainMapping, LeaseHolder, ReservationStatus
from tests.factories import pod_record, pool_of, reservation_for
from tests.ops.conftest import NEW_DIGEST, OLD_DIGEST

pytestmark = pytest.mark.django_db

PAGES = ["/ops/", "/ops/pods/", "/ops/images/", "/ops/names/", "/ops/audit/"]


def rows(response) -> list[str]:
    """Return the pod names of the table rows in a pods page, in order."""
    return re.findall(r'<tr id="pod-([^"]+)"', response.content.decode())


def lease(name: str, *, holder=LeaseHolder.WARM, hours: float = 2, **fields) -> DomainMapping:
    now = timezone.now()
    return DomainMapping.objects.create(
        name=name, base=name, holder=holder, expires_at=now + timedelta(hours=hours), **fields
    )


# --- Who may open the dashboard ------------------------------------------------------------


@pytest.mark.parametrize("url", PAGES)
def test_anonymous_visitor_is_sent_to_sign_in(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


@pytest.mark.parametrize("url", PAGES)
def test_developer_gets_403(client, alice, url):
    client.force_login(alice)
    assert client.get(url).status_code == 403


def test_developer_cannot_act(client, alice):
    pool = pool_of("h100")
    client.force_login(alice)
    assert client.post(f"/ops/pools/{pool.pk}/target/", {"target": 9}).status_code == 403
    assert client.post(f"/ops/pools/{pool.pk}/rotation/", {"action": "pause"}).status_code == 403
    pool.refresh_from_db()
    assert pool.target == 0
    assert not pool.rotation_paused
    assert not AuditEvent.objects.exists()


@pytest.mark.parametrize("url", PAGES)
def test_operator_pages_connect_their_live_view(ops, url):
    response = ops.get(url)
    assert response.status_code == 200
    assert 'hx-ext="ws" ws-connect="/ws/ops/?screen=' in response.content.decode()


# --- CSRF -------------------------------------------------------------------------------------


def test_every_action_needs_csrf(olga):
    pool = pool_of("h100", target=1)
    pod = pod_record(pool, "gpudev-h100-default-aaaaaa")
    orphan = lease("lost-fox")
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(olga)
    posts = [
        (f"/ops/pools/{pool.pk}/target/", {"target": 3}),
        (f"/ops/pools/{pool.pk}/rotation/", {"action": "pause"}),
        (f"/ops/pods/{pod.name}/recycle/", {}),
        ("/ops/names/cleanup/", {"lease": [orphan.pk]}),
    ]
    for url, data in posts:
        assert strict.post(url, data).status_code == 403, url
    pool.refresh_from_db()
    pod.refresh_from_db()
    orphan.refresh_from_db()
    assert (pool.target, pool.rotation_paused, pod.state) == (1, False, PodState.READY)
    assert orphan.released_at is None
    assert not AuditEvent.objects.exists()


def test_actions_are_post_only(ops):
    pool = pool_of("h100")
    assert ops.get(f"/ops/pools/{pool.pk}/target/?target=5").status_code == 405
    assert ops.get(f"/ops/pools/{pool.pk}/rotation/?action=pause").status_code == 405


# --- Pools ------------------------------------------------------------------------------------


def test_pool_card_counts_pods_by_what_operators_ask(ops, alice, current_release):
    pool = pool_of("h100", target=6)
    pod_record(pool, "h-ready-new", running_digest=NEW_DIGEST)
    pod_record(pool, "h-ready-old", running_digest=OLD_DIGEST)
    pod_record(pool, "h-ready-unknown")
    pod_record(pool, "h-pending", state=PodState.PENDING)
    pod_record(pool, "h-slot", state=PodState.SLOT)
    pod_record(pool, "h-failed", state=PodState.FAILED)
    pod_record(pool, "h-gone", state=PodState.GONE)
    pod_record(
        pool,
        "h-claimed",
        state=PodState.CLAIMED,
        running_digest=OLD_DIGEST,
        reservation=reservation_for(alice, pool),
    )
    card = ops.get("/ops/").context["cards"][0]
    assert card.pool == pool
    assert (card.ready, card.spawning, card.claimed, card.stale, card.failed) == (3, 2, 1, 1, 1)
    assert card.on_current == 1


def test_pool_card_shows_the_rollout_since_the_push(ops, current_release):
    pool = pool_of("h100", target=3)
    for i, digest in enumerate([NEW_DIGEST, NEW_DIGEST, OLD_DIGEST]):
        pod_record(pool, f"h-{i}", running_digest=digest)
    html = ops.get("/ops/").content.decode()
    assert "<strong>2 of 3</strong> ready warm pods on" in html
    assert "sha256:cd34cd34cd34" in html
    assert "9m00s since push" in html


def test_idle_pools_are_hidden_until_asked_for(ops):
    busy = pool_of("h100", target=2)
    idle = pool_of("a10g")
    page = ops.get("/ops/")
    assert [card.pool for card in page.context["cards"]] == [busy]
    assert page.context["idle_hidden"] == Pool.objects.count() - 1
    assert "show idle pools" in page.content.decode()
    shown = [card.pool for card in ops.get("/ops/?idle=1").context["cards"]]
    assert idle in shown
    assert busy in shown


def test_pool_card_lists_its_recent_actions_with_reasons(ops):
    pool = pool_of("h100", target=1)
    for i in range(7):
        AuditEvent.objects.create(
            actor="reconciler", action="pod_spawn", pool=pool, reason=f"deficit {i} of 1"
        )
    AuditEvent.objects.create(
        actor="reconciler",
        action="pod_recycle",
        pool=pool,
        reason="too old to show",
        created_at=timezone.now() - timedelta(days=2),
    )
    recent = ops.get("/ops/").context["cards"][0].recent
    assert [event.reason for event in recent] == [f"deficit {i} of 1" for i in (6, 5, 4, 3, 2)]


def test_pools_page_queries_do_not_grow_with_pods_and_events(
    ops, alice, current_release, django_assert_max_num_queries
):
    for gpu_type in ("h100", "a10g", "h200"):
        pool = pool_of(gpu_type, target=500)
        many_pods(pool, 500, alice=alice)
        AuditEvent.objects.bulk_create(
            AuditEvent(actor="reconciler", action="pod_spawn", pool=pool) for _ in range(300)
        )
    # Session, user, the release, the counts, the pools, the recent actions.
    with django_assert_max_num_queries(6):
        cards = ops.get("/ops/").context["cards"]
    assert [len(card.recent) for card in cards] == [5, 5, 5]


def test_target_change_is_audited_with_the_operator(ops):
    pool = pool_of("h100", target=2)
    response = ops.post(f"/ops/pools/{pool.pk}/target/", {"target": 24})
    assert response.status_code == 302
    pool.refresh_from_db()
    assert pool.target == 24
    event = AuditEvent.objects.get(action="pool_target")
    assert (event.actor, event.pool, event.reason) == ("olga", pool, "target 2 → 24")


def test_target_change_over_htmx_returns_the_updated_card(ops):
    pool = pool_of("h100", target=2)
    response = ops.post(f"/ops/pools/{pool.pk}/target/", {"target": 5}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith(f'<article id="pool-{pool.pk}"')
    assert '<p id="ops-flash"' in html
    assert "h100/default: target set to 5." in html


@pytest.mark.parametrize("value", ["-1", "501", "ten", "", "2.5"])
def test_invalid_target_is_refused_and_changes_nothing(ops, value):
    pool = pool_of("h100", target=2)
    response = ops.post(f"/ops/pools/{pool.pk}/target/", {"target": value}, HTTP_HX_REQUEST="true")
    assert response.status_code == 422
    assert 'class="error" role="alert"' in response.content.decode()
    pool.refresh_from_db()
    assert pool.target == 2
    assert not AuditEvent.objects.exists()


def test_invalid_target_without_htmx_says_why(ops):
    pool = pool_of("h100", target=2)
    response = ops.post(f"/ops/pools/{pool.pk}/target/", {"target": 900}, follow=True)
    assert "less than or equal to 500" in response.content.decode()
    pool.refresh_from_db()
    assert pool.target == 2


def test_pause_and_resume_rotation_are_audited(ops):
    pool = pool_of("h100", target=2)
    ops.post(f"/ops/pools/{pool.pk}/rotation/", {"action": "pause"})
    pool.refresh_from_db()
    assert pool.rotation_paused
    response = ops.post(
        f"/ops/pools/{pool.pk}/rotation/", {"action": "resume"}, HTTP_HX_REQUEST="true"
    )
    assert "Pause rotation" in response.content.decode()
    pool.refresh_from_db()
    assert not pool.rotation_paused
    assert list(AuditEvent.objects.order_by("id").values_list("actor", "action", "pool_id")) == [
        ("olga", "rotation_pause", pool.pk),
        ("olga", "rotation_resume", pool.pk),
    ]


def test_setting_the_same_target_records_nothing(ops):
    pool = pool_of("h100", target=2)
    ops.post(f"/ops/pools/{pool.pk}/target/", {"target": 2})
    assert not AuditEvent.objects.exists()


# --- Pods -------------------------------------------------------------------------------------


@pytest.fixture
def mixed_pods(alice, current_release):
    """Pods of two pools in several states, on the current and an old image."""
    h100, a10g = pool_of("h100", target=3), pool_of("a10g", target=1)
    pod_record(h100, "h100-ready-new", running_digest=NEW_DIGEST, node_name="n1")
    pod_record(h100, "h100-ready-old", running_digest=OLD_DIGEST, node_name="n1")
    pod_record(h100, "h100-pending", state=PodState.PENDING)
    pod_record(h100, "h100-gone", state=PodState.GONE)
    pod_record(
        h100,
        "h100-claimed",
        state=PodState.CLAIMED,
        running_digest=OLD_DIGEST,
        reservation=reservation_for(alice, h100, status=ReservationStatus.ACTIVE),
    )
    pod_record(a10g, "a10g-ready-old", running_digest=OLD_DIGEST)
    return h100, a10g


def test_pods_lists_every_pod_we_own_but_the_gone(ops, mixed_pods):
    assert set(rows(ops.get("/ops/pods/"))) == {
        "h100-ready-new",
        "h100-ready-old",
        "h100-pending",
        "h100-claimed",
        "a10g-ready-old",
    }


def test_pods_filter_by_pool_state_and_stale(ops, mixed_pods):
    h100, a10g = mixed_pods
    assert set(rows(ops.get(f"/ops/pods/?pool={a10g.pk}"))) == {"a10g-ready-old"}
    assert set(rows(ops.get(f"/ops/pods/?pool={h100.pk}&state=ready"))) == {
        "h100-ready-new",
        "h100-ready-old",
    }
    assert set(rows(ops.get("/ops/pods/?stale=1"))) == {
        "h100-ready-old",
        "h100-claimed",
        "a10g-ready-old",
    }
    assert set(rows(ops.get(f"/ops/pods/?pool={h100.pk}&state=ready&stale=1"))) == {
        "h100-ready-old"
    }


@pytest.mark.parametrize("query", ["pool=99999", "state=bogus", "group=nope", "pool=h100"])
def test_an_unknown_filter_value_matches_nothing_and_says_so(ops, mixed_pods, query):
    """A stale bookmark must not show every pod as if they were the ones asked for."""
    response = ops.get(f"/ops/pods/?{query}")
    assert rows(response) == []
    assert "Nothing matches:" in response.content.decode()


def test_audit_log_for_an_actor_with_no_events_is_empty(ops):
    AuditEvent.objects.create(actor="reconciler", action="pod_spawn")
    assert list(ops.get("/ops/audit/?actor=newcomer").context["events"]) == []
    assert len(ops.get("/ops/audit/?pool=99999").context["events"]) == 0


def test_each_pool_card_count_links_to_exactly_the_pods_it_counts(ops, mixed_pods, alice):
    h100, _ = mixed_pods
    pod_record(h100, "h100-slot", state=PodState.SLOT)
    pod_record(
        h100,
        "h100-cold",
        kind=PodKind.RESERVATION,
        state=PodState.PENDING,
        reservation=reservation_for(alice, h100, status=ReservationStatus.STARTING),
    )
    card = next(card for card in ops.get("/ops/").context["cards"] if card.pool == h100)
    for stat in card.stats:
        listed = rows(ops.get(f"/ops/pods/?{stat.query}"))
        assert len(listed) == stat.value, stat.label
    assert {s.label: s.value for s in card.stats} == {
        "Ready": 2,
        "Spawning": 2,
        "Claimed": 2,
        "Stale": 1,
        "Failed": 0,
    }


def test_pod_row_shows_state_colour_stale_badge_lease_and_reservation(ops, mixed_pods):
    claimed = PodRecord.objects.get(name="h100-claimed")
    claimed.name_lease = lease("bright-fox", holder=LeaseHolder.RESERVATION)
    claimed.save()
    html = ops.get("/ops/pods/").content.decode()
    row = re.search(r'<tr id="pod-h100-claimed".*?</tr>', html, re.S).group(0)
    assert '<span class="badge purple">Claimed</span>' in row
    assert ">stale</span>" in row
    assert "bright-fox" in row
    assert claimed.reservation.short_id in row
    assert "alice" in row
    assert "Recycle" not in row
    fresh = re.search(r'<tr id="pod-h100-ready-new".*?</tr>', html, re.S).group(0)
    assert '<span class="badge green">Ready</span>' in fresh
    assert ">stale</span>" not in fresh
    assert "Recycle" in fresh


def test_filter_links_are_real_links_kept_live_by_htmx(ops, mixed_pods):
    h100, _ = mixed_pods
    html = ops.get(f"/ops/pods/?pool={h100.pk}").content.decode()
    link = f'href="?pool={h100.pk}&amp;state=ready" hx-get="?pool={h100.pk}&amp;state=ready"'
    assert link in html
    assert f'ws-connect="/ws/ops/?pool={h100.pk}&amp;screen=pods"' in html


def many_pods(pool: Pool, count: int, *, alice=None) -> None:
    """Insert ``count`` pods of ``pool``; every tenth claimed by a reservation with a lease."""
    now = timezone.now()
    reservation = reservation_for(alice, pool) if alice is not None else None
    pods = []
    for i in range(count):
        claimed = alice is not None and i % 10 == 0
        pods.append(
            PodRecord(
                pool=pool,
                name=f"gpudev-{pool.slug}-{i:06d}",
                kind=PodKind.WARM,
                state=PodState.CLAIMED if claimed else PodState.READY,
                reservation=reservation if claimed else None,
                running_digest=OLD_DIGEST if i % 3 else NEW_DIGEST,
                node_name=f"node-{i % 40}",
                created_at=now - timedelta(seconds=count - i),
            )
        )
    PodRecord.objects.bulk_create(pods)


def test_pods_paginate_by_100(ops, current_release):
    pool = pool_of("h100", target=250)
    many_pods(pool, 250)
    first, last = ops.get("/ops/pods/"), ops.get("/ops/pods/?page=3")
    assert len(rows(first)) == 100
    assert rows(first)[0] == "gpudev-h100-default-000000"
    assert len(rows(last)) == 50
    assert rows(last)[-1] == "gpudev-h100-default-000249"
    assert "page 3 of 3" in last.content.decode()
    assert 'href="?page=2"' in first.content.decode()


def test_pods_page_queries_do_not_grow_with_5000_pods(
    ops, alice, current_release, django_assert_max_num_queries
):
    pool = pool_of("h100", target=5000)
    many_pods(pool, 5000, alice=alice)
    for i in range(0, 5000, 10):
        PodRecord.objects.filter(name=f"gpudev-h100-default-{i:06d}").update(
            name_lease=lease(f"name-{i}", holder=LeaseHolder.RESERVATION)
        )
    # Session, user, the filter's pool, the release, the count, the page, the pool menu.
    with django_assert_max_num_queries(7):
        page = ops.get(f"/ops/pods/?page=7&pool={pool.pk}")
    assert len(rows(page)) == 100
    with django_assert_max_num_queries(7):
        page = ops.get("/ops/pods/?stale=1&state=ready&page=20")
    assert len(rows(page)) == 100


# --- Recycle ----------------------------------------------------------------------------------


def test_recycle_asks_first(ops, current_release):
    pod = pod_record(pool_of("h100", target=1), "gpudev-h100-default-aaaaaa")
    confirm = ops.get(f"/ops/pods/{pod.name}/recycle/", HTTP_HX_REQUEST="true")
    html = confirm.content.decode()
    assert confirm.status_code == 200
    assert f"Recycle {pod.name}?" in html
    assert f'hx-post="/ops/pods/{pod.name}/recycle/"' in html
    pod.refresh_from_db()
    assert pod.state == PodState.READY


def test_recycle_drains_the_pod_frees_its_name_and_audits_the_operator(
    ops, clustersim, settings, current_release
):
    """Against clustersim: the deletes find nothing to delete and the recycle still completes."""
    settings.KUBECONFIG = str(clustersim.kubeconfig_path)
    name_lease = lease("calm-otter", pod_name="gpudev-h100-default-aaaaaa")
    pod = pod_record(pool_of("h100", target=1), "gpudev-h100-default-aaaaaa", name_lease=name_lease)
    response = ops.post(f"/ops/pods/{pod.name}/recycle/", follow=True)
    assert "Recycled gpudev-h100-default-aaaaaa" in response.content.decode()
    pod.refresh_from_db()
    name_lease.refresh_from_db()
    assert pod.state == PodState.DRAINING
    assert name_lease.released_at is not None
    event = AuditEvent.objects.get(action="pod_recycle")
    assert (event.actor, event.pod_name, event.reason) == (
        "olga",
        pod.name,
        "recycled by olga",
    )


def test_recycle_when_the_cluster_does_not_answer_still_frees_the_name(ops, settings):
    settings.KUBECONFIG = ""
    name_lease = lease("calm-otter")
    pod = pod_record(pool_of("h100", target=1), "gpudev-h100-default-aaaaaa", name_lease=name_lease)
    response = ops.post(f"/ops/pods/{pod.name}/recycle/", HTTP_HX_REQUEST="true")
    assert "the reconciler retries the delete" in response.content.decode()
    pod.refresh_from_db()
    name_lease.refresh_from_db()
    assert pod.state == PodState.DRAINING
    assert name_lease.released_at is not None


def test_recycle_is_refused_for_a_claimed_pod(ops, alice, settings):
    settings.KUBECONFIG = ""
    pool = pool_of("h100", target=1)
    reservation = reservation_for(alice, pool, status=ReservationStatus.ACTIVE)
    pod = pod_record(pool, "gpudev-h100-default-aaaaaa", state=PodState.CLAIMED)
    pod.reservation = reservation
    pod.save()
    confirm = ops.get(f"/ops/pods/{pod.name}/recycle/", HTTP_HX_REQUEST="true")
    assert confirm.status_code == 409
    assert f"serves reservation {reservation.short_id} (alice)" in confirm.content.decode()
    assert "hx-post" not in confirm.content.decode()
    refused = ops.post(f"/ops/pods/{pod.name}/recycle/", HTTP_HX_REQUEST="true")
    assert refused.status_code == 409
    plain = ops.post(f"/ops/pods/{pod.name}/recycle/", follow=True)
    assert "only warm pods that belong to no reservation" in plain.content.decode()
    pod.refresh_from_db()
    assert pod.state == PodState.CLAIMED
    assert not AuditEvent.objects.filter(action="pod_recycle").exists()


def test_recycle_is_refused_for_a_cold_reservation_pod(ops, alice, settings):
    settings.KUBECONFIG = ""
    pool = pool_of("h100")
    pod = pod_record(
        pool,
        "gpudev-h100-cold-aaaaaa",
        kind=PodKind.RESERVATION,
        state=PodState.PENDING,
        reservation=reservation_for(alice, pool, status=ReservationStatus.STARTING),
    )
    assert ops.post(f"/ops/pods/{pod.name}/recycle/").status_code == 302
    pod.refresh_from_db()
    assert pod.state == PodState.PENDING


def test_recycle_keeps_the_operator_on_their_filtered_page(ops, settings):
    settings.KUBECONFIG = ""
    pod = pod_record(pool_of("h100", target=1), "gpudev-h100-default-aaaaaa")
    back = "/ops/pods/?state=ready&page=2"
    response = ops.post(f"/ops/pods/{pod.name}/recycle/", {"next": back})
    assert response["Location"] == back
    evil = ops.post(f"/ops/pods/{pod.name}/recycle/", {"next": "https://evil.example/"})
    assert evil["Location"] == "/ops/pods/"


# --- Images -----------------------------------------------------------------------------------


def prepull(release, node: str, phase: str, *, started: float | None, finished=None, message=""):
    now = timezone.now()
    return PrepullStatus.objects.create(
        release=release,
        node_name=node,
        phase=phase,
        message=message,
        started_at=now - timedelta(seconds=started) if started is not None else None,
        finished_at=now - timedelta(seconds=finished) if finished is not None else None,
    )


def test_images_page_shows_the_release_and_prepull_per_node(ops, current_release):
    prepull(current_release, "node-a", "done", started=300, finished=200)
    prepull(current_release, "node-b", "pulling", started=50)
    prepull(current_release, "node-c", "failed", started=60, message="ErrImagePull: no space")
    prepull(current_release, "node-d", "waiting", started=None)
    response = ops.get("/ops/images/")
    html = response.content.decode()
    assert current_release.digest in html
    assert current_release.immutable_ref in html
    by_node = {row.node_name: row for row in response.context["prepulls"]}
    assert by_node["node-a"].percent == 100
    assert by_node["node-a"].took == timedelta(seconds=100)
    assert by_node["node-b"].percent == 50  # 50 s of a typical 100 s
    assert "~50% (estimate)" in html
    assert [row.node_name for row in response.context["failed_nodes"]] == ["node-c"]
    assert "1 node failed to pull" in html
    assert "ErrImagePull: no space" in html
    assert by_node["node-d"].percent == 0
    # Failures first, then pulls under way, waiting, done.
    assert [row.node_name for row in response.context["prepulls"]] == [
        "node-c",
        "node-b",
        "node-d",
        "node-a",
    ]


def test_estimate_is_capped_until_the_node_is_done(ops, current_release):
    prepull(current_release, "node-a", "done", started=300, finished=200)
    prepull(current_release, "node-b", "pulling", started=500)
    by_node = {row.node_name: row for row in ops.get("/ops/images/").context["prepulls"]}
    assert by_node["node-b"].percent == 95


def test_first_pulls_of_a_release_are_estimated_from_the_previous_one(ops, current_release):
    previous = current_release.__class__.objects.get(is_current=False)
    prepull(previous, "node-a", "done", started=1000, finished=800)
    prepull(current_release, "node-a", "pulling", started=100)
    response = ops.get("/ops/images/")
    assert response.context["prepulls"][0].percent == 50
    assert "(previous release)" in response.content.decode()


def test_pull_without_any_history_is_indeterminate(ops, current_release):
    prepull(current_release, "node-a", "pulling", started=100)
    response = ops.get("/ops/images/")
    assert response.context["prepulls"][0].percent is None
    assert "no estimate yet" in response.content.decode()


def test_images_page_counts_nodes_holding_the_image_and_the_daemonset_rollout(ops, current_release):
    from pool.models import GpuType, NodeRecord

    h100 = GpuType.objects.get(name="h100")
    NodeRecord.objects.create(name="node-a", gpu_type=h100, cached_digests=[NEW_DIGEST])
    NodeRecord.objects.create(name="node-b", gpu_type=h100, cached_digests=[OLD_DIGEST])
    current_release.prepuller_status = {
        "desiredNumberScheduled": 2,
        "updatedNumberScheduled": 2,
        "numberReady": 1,
    }
    current_release.save()
    html = ops.get("/ops/images/").content.decode()
    assert "<strong>1 of 2</strong> nodes hold the current image" in html
    assert "2 of 2 updated, 1 ready" in html


# --- Names ------------------------------------------------------------------------------------


@pytest.fixture
def planted_orphans(alice):
    """Two orphaned names among live ones: a warm name no pod holds and an ended reservation's."""
    pool = pool_of("h100", target=1)
    held = lease("held-name")
    pod_record(pool, "gpudev-h100-default-aaaaaa", name_lease=held)
    ended = reservation_for(alice, pool, status=ReservationStatus.EXPIRED)
    open_ = reservation_for(alice, pool, status=ReservationStatus.ACTIVE)
    lease("active-name", holder=LeaseHolder.RESERVATION, reservation=open_)
    lease("lapsed-name", hours=-1)
    return [
        lease("lost-fox", pod_name="gpudev-h100-default-zzzzzz"),
        lease("ended-owl", holder=LeaseHolder.RESERVATION, reservation=ended),
    ]


def test_names_page_counts_leases_and_lists_orphans_with_reasons(ops, planted_orphans):
    response = ops.get("/ops/names/")
    assert response.context["counts"] == {"active": 2, "warm": 2, "expired": 1, "orphans": 2}
    html = response.content.decode()
    assert "pod gpudev-h100-default-zzzzzz is gone or holds another name" in html
    # A lease past its expiry no longer holds its name: expired, not an orphan.
    assert {o.name for o in response.context["orphans"]} == {"lost-fox", "ended-owl"}
    assert [lease.name for lease in response.context["expired"]] == ["lapsed-name"]


def test_names_page_queries_do_not_grow_with_449_leaked_names(
    ops, alice, django_assert_max_num_queries
):
    """PR #199's production numbers: 449 live placeholder leases against 24 warm pods."""
    pool = pool_of("h100", target=24)
    now = timezone.now()
    DomainMapping.objects.bulk_create(
        DomainMapping(
            name=f"leaked-{i}",
            base=f"leaked-{i}",
            holder=LeaseHolder.WARM,
            expires_at=now + timedelta(days=7),
        )
        for i in range(449)
    )
    for i in range(24):
        pod_record(pool, f"warm-{i}", name_lease=DomainMapping.objects.get(name=f"leaked-{i}"))
    # Session, user, the counts, the two orphan queries, and one per lease list.
    with django_assert_max_num_queries(8):
        response = ops.get("/ops/names/")
    assert response.context["counts"]["orphans"] == 425


def test_cleanup_preview_carries_exactly_the_orphans(ops, planted_orphans):
    html = ops.get("/ops/names/cleanup/", HTTP_HX_REQUEST="true").content.decode()
    ids = sorted(int(i) for i in re.findall(r'name="lease" value="(\d+)"', html))
    assert ids == sorted(o.pk for o in planted_orphans)
    assert "Clean up 2 names" in html


def test_cleanup_releases_exactly_the_previewed_orphans(ops, planted_orphans):
    live_before = set(
        DomainMapping.objects.filter(released_at__isnull=True).values_list("name", flat=True)
    )
    response = ops.post("/ops/names/cleanup/", {"lease": [o.pk for o in planted_orphans]})
    assert "Released 2 names" in response.content.decode()
    live_after = set(
        DomainMapping.objects.filter(released_at__isnull=True).values_list("name", flat=True)
    )
    assert live_before - live_after == {"lost-fox", "ended-owl"}
    assert set(
        AuditEvent.objects.filter(action="lease_cleanup").values_list("actor", flat=True)
    ) == {"olga"}


def test_cleanup_keeps_a_lease_that_became_live_after_the_preview(ops, planted_orphans):
    lost_fox, ended_owl = planted_orphans
    pod_record(pool_of("h100"), "gpudev-h100-default-zzzzzz", name_lease=lost_fox)
    response = ops.post("/ops/names/cleanup/", {"lease": [lost_fox.pk, ended_owl.pk]})
    html = response.content.decode()
    assert "Released 1 name" in html
    assert "Kept 1" in html
    assert "lost-fox" in html
    lost_fox.refresh_from_db()
    assert lost_fox.released_at is None


def test_cleanup_without_ids_changes_nothing(ops, planted_orphans):
    response = ops.post("/ops/names/cleanup/", {"lease": ["x"]}, HTTP_HX_REQUEST="true")
    assert response.status_code == 422
    assert ops.post("/ops/names/cleanup/", {}).status_code == 422
    assert DomainMapping.objects.filter(released_at__isnull=False).count() == 0


# --- Audit log --------------------------------------------------------------------------------


def test_audit_log_filters_by_pool_pod_actor_and_action(ops):
    h100, a10g = pool_of("h100"), pool_of("a10g")
    AuditEvent.objects.create(actor="reconciler", action="pod_spawn", pool=h100, pod_name="p1")
    AuditEvent.objects.create(actor="olga", action="pool_target", pool=h100)
    AuditEvent.objects.create(actor="watcher", action="pod_ready", pool=a10g, pod_name="p2")

    def actions(query: str) -> list[str]:
        return [event.action for event in ops.get(f"/ops/audit/{query}").context["events"]]

    assert actions(f"?pool={h100.pk}") == ["pool_target", "pod_spawn"]
    assert actions("?pod=p2") == ["pod_ready"]
    assert actions("?actor=olga") == ["pool_target"]
    assert actions("?action=pod_spawn") == ["pod_spawn"]
    assert actions(f"?pool={a10g.pk}&actor=olga") == []


def test_audit_log_paginates_newest_first(ops):
    now = timezone.now()
    AuditEvent.objects.bulk_create(
        AuditEvent(actor="reconciler", action="pod_spawn", reason=f"#{i}", created_at=now)
        for i in range(120)
    )
    first = ops.get("/ops/audit/").context
    assert len(first["events"]) == 50
    assert first["events"][0].reason == "#119"
    assert len(ops.get("/ops/audit/?page=3").context["events"]) == 20

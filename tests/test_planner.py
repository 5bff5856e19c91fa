"""The reconciler's planner, rule by rule: snapshot + now in, actions with reasons out."""

from datetime import UTC, datetime, timedelta

import pytest

from pool.planner import Action, ClusterPod, PodView, PoolView, Snapshot, Verb, plan

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
OLD = "sha256:" + "ab12" * 16
NEW = "sha256:" + "cd34" * 16
MAX_AGE = timedelta(hours=12)


def pod(name, state="ready", *, age=None, digest=NEW, kind="warm", reservation=None):
    if age is None:
        age = timedelta(minutes=1) if state in ("slot", "pending") else timedelta(hours=1)
    return PodView(
        name=name,
        kind=kind,
        state=state,
        created_at=NOW - age,
        running_digest=digest,
        reservation_id=reservation,
    )


def snapshot(*pods, target=3, current=NEW, paused=False, backoff_until=None, **extra):
    pool = PoolView(
        id=1,
        name="h100/default",
        target=target,
        max_age=MAX_AGE,
        rotation_paused=paused,
        backoff_until=backoff_until,
        pods=tuple(pods),
    )
    extra.setdefault("has_release", True)
    return Snapshot(
        pools=(pool,), current_digest=current, stuck_spawn_cutoff=timedelta(minutes=7), **extra
    )


def verbs(actions: list[Action]) -> list[tuple[str, str]]:
    return [(a.verb.value, a.pod_name or str(a.count)) for a in actions]


def test_pool_at_target_on_the_current_digest_needs_nothing():
    assert plan(snapshot(pod("a"), pod("b"), pod("c")), NOW) == []


def test_empty_pool_spawns_its_whole_target():
    (action,) = plan(snapshot(target=5), NOW)
    assert (action.verb, action.count, action.reason) == (Verb.SPAWN, 5, "deficit 5 of 5")


def test_deficit_counts_ready_and_in_flight_pods():
    actions = plan(snapshot(pod("a"), pod("b", "pending"), pod("c", "slot"), target=5), NOW)
    assert verbs(actions) == [("spawn", "2")]
    assert actions[0].reason == "deficit 2 of 5"


def test_claimed_pods_do_not_count_toward_the_target():
    claimed = pod("c", "claimed", reservation="r1")
    assert verbs(plan(snapshot(pod("a"), claimed, target=2), NOW)) == [("spawn", "1")]


@pytest.mark.parametrize(
    "protected",
    [
        pod("claimed", "claimed", age=timedelta(hours=30), digest=OLD, reservation="r1"),
        pod(
            "cold",
            "ready",
            age=timedelta(hours=30),
            digest=OLD,
            kind="reservation",
            reservation="r2",
        ),
        pod("failed-claimed", "failed", digest=OLD, reservation="r3"),
    ],
    ids=["claimed-old-stale", "reservation-pod", "failed-but-claimed"],
)
def test_pods_of_reservations_are_never_touched(protected):
    actions = plan(snapshot(protected, target=0), NOW)
    assert all(action.pod_name != protected.name for action in actions)


def test_failed_warm_pod_is_recycled_and_replaced():
    actions = plan(snapshot(pod("a"), pod("b"), pod("bad", "failed"), target=3), NOW)
    assert verbs(actions) == [("recycle", "bad"), ("spawn", "1")]
    assert actions[0].reason == "pod failed"


def test_over_age_pod_is_recycled_with_its_age():
    old = pod("old", age=timedelta(hours=12, minutes=3))
    actions = plan(snapshot(pod("a"), pod("b"), old), NOW)
    assert verbs(actions) == [("recycle", "old"), ("spawn", "1")]
    assert actions[0].reason == "age 12h03m > 12h00m"


def test_stuck_spawn_past_the_cutoff_is_recycled():
    stuck = pod("stuck", "pending", age=timedelta(minutes=8))
    actions = plan(snapshot(pod("a"), pod("b"), stuck), NOW)
    assert verbs(actions) == [("recycle", "stuck"), ("spawn", "1")]
    assert actions[0].reason == "spawn stuck 8m00s > cutoff 7m00s"


def test_spawn_inside_its_deadline_is_left_alone():
    slow = pod("slow", "pending", age=timedelta(minutes=6, seconds=59))
    assert plan(snapshot(pod("a"), pod("b"), slow), NOW) == []


def test_surplus_drops_pending_before_ready_oldest_first():
    pods = [
        pod("ready-old", age=timedelta(hours=3)),
        pod("ready-new", age=timedelta(hours=1)),
        pod("pending-old", "pending", age=timedelta(minutes=3)),
        pod("pending-new", "pending", age=timedelta(minutes=1)),
    ]
    actions = plan(snapshot(*pods, target=1), NOW)
    assert verbs(actions) == [
        ("recycle", "pending-old"),
        ("recycle", "pending-new"),
        ("recycle", "ready-old"),
    ]
    assert actions[0].reason == "surplus: 4 warm pods > target 1"


def test_target_zero_empties_the_pool():
    actions = plan(snapshot(pod("a"), pod("b", "slot"), target=0), NOW)
    assert sorted(verbs(actions)) == [("recycle", "a"), ("recycle", "b")]


def test_rotates_one_stale_pod_per_tick_oldest_first():
    pods = [
        pod("stale-new", digest=OLD, age=timedelta(hours=1)),
        pod("stale-old", digest=OLD, age=timedelta(hours=2)),
        pod("fresh", digest=NEW),
    ]
    actions = plan(snapshot(*pods), NOW)
    assert verbs(actions) == [("rotate", "stale-old"), ("spawn", "1")]
    assert actions[0].reason == "stale digest sha256:ab12ab12ab12 ≠ current sha256:cd34cd34cd34"


def test_no_rotation_when_the_current_digest_is_unknown():
    pods = [pod("a", digest=OLD), pod("b", digest=OLD), pod("c", digest=OLD)]
    assert plan(snapshot(*pods, current=""), NOW) == []


def test_no_rotation_of_a_pod_whose_running_digest_is_unknown():
    assert plan(snapshot(pod("a", digest=""), pod("b"), pod("c")), NOW) == []


def test_no_rotation_while_paused():
    pods = [pod("a", digest=OLD), pod("b"), pod("c")]
    assert plan(snapshot(*pods, paused=True), NOW) == []


def test_no_rotation_while_a_replacement_is_still_in_flight():
    pods = [pod("a", digest=OLD), pod("b", digest=OLD), pod("new", "pending")]
    assert plan(snapshot(*pods), NOW) == []


def test_claimed_pod_on_a_stale_digest_is_not_rotated():
    claimed = pod("claimed", "claimed", digest=OLD, reservation="r1")
    actions = plan(snapshot(claimed, pod("b"), pod("c"), target=2), NOW)
    assert actions == []


def test_backoff_holds_spawns_and_says_for_how_long():
    actions = plan(snapshot(target=2, backoff_until=NOW + timedelta(seconds=90)), NOW)
    assert verbs(actions) == [("hold", "0")]
    assert actions[0].reason == "spawn backoff for 1m30s after failures"


def test_no_spawn_before_any_image_release_is_known():
    actions = plan(snapshot(target=2, current="", has_release=False), NOW)
    assert verbs(actions) == [("hold", "0")]
    assert actions[0].reason == "no image release known yet"


def test_stranded_pods_are_deleted_after_the_grace_period():
    cluster = (
        ClusterPod("known", NOW - timedelta(hours=1)),
        ClusterPod("stranded", NOW - timedelta(minutes=3)),
        ClusterPod("just-created", NOW - timedelta(seconds=30)),
    )
    snap = snapshot(
        pod("known"), target=1, cluster_pods=cluster, live_pod_names=frozenset({"known"})
    )
    actions = plan(snap, NOW)
    assert verbs(actions) == [("delete_stranded", "stranded")]
    assert actions[0].reason == "stranded: labelled as ours, no live record, 3m00s old"


def test_no_stranded_sweep_when_the_cluster_list_failed():
    assert plan(snapshot(pod("a"), target=1, cluster_pods=None), NOW) == []

"""The kubelet: image cache and pull policies, pull time, init containers, pull failures."""

from tests.clustersim.conftest import NAMESPACE, pod_events, pod_manifest


def on_node(name, image, node="h100-1", policy=None, **spec):
    """Return a pod manifest pinned to ``node`` running ``image``."""
    manifest = pod_manifest(
        name, image=image, nodeSelector={"kubernetes.io/hostname": node}, **spec
    )
    if policy:
        manifest["spec"]["containers"][0]["imagePullPolicy"] = policy
    return manifest


def running(core, name):
    return core.read_namespaced_pod(name, NAMESPACE).status.phase == "Running"


def image_id(core, name):
    return core.read_namespaced_pod(name, NAMESPACE).status.container_statuses[0].image_id


def latest_digest(ecr):
    images = ecr.describe_images(repositoryName="gpu-dev", imageIds=[{"imageTag": "latest"}])
    return images["imageDetails"][0]["imageDigest"]


def test_a_cached_latest_keeps_the_old_digest_while_a_pinned_tag_gets_the_new_one(
    clustersim, core, ecr
):
    """The PR #202 incident: ``:latest`` + IfNotPresent serves a stale image after a rebuild."""
    latest = f"{clustersim.image_repo}:latest"
    old = latest_digest(ecr)
    core.create_namespaced_pod(NAMESPACE, on_node("before", latest, policy="IfNotPresent"))
    clustersim.advance_until(lambda: running(core, "before"), 60)
    assert image_id(core, "before") == f"{clustersim.image_repo}@{old}"

    new, immutable_tag = clustersim.push_image()
    assert latest_digest(ecr) == new != old
    core.create_namespaced_pod(NAMESPACE, on_node("stale", latest, policy="IfNotPresent"))
    core.create_namespaced_pod(
        NAMESPACE, on_node("pinned", f"{clustersim.image_repo}:{immutable_tag}")
    )
    clustersim.advance_until(lambda: running(core, "stale") and running(core, "pinned"), 60)

    assert image_id(core, "stale") == f"{clustersim.image_repo}@{old}"
    assert ("Pulled", f'Container image "{latest}" already present on machine') in pod_events(
        core, "stale"
    )
    assert image_id(core, "pinned") == f"{clustersim.image_repo}@{new}"
    status = core.read_namespaced_pod("pinned", NAMESPACE).status.container_statuses[0]
    assert status.image == f"{clustersim.image_repo}:{immutable_tag}"
    assert (status.ready, status.started, status.restart_count) == (True, True, 0)


def test_pull_always_resolves_the_tag_at_the_registry(clustersim, core):
    latest = f"{clustersim.image_repo}:latest"
    core.create_namespaced_pod(NAMESPACE, on_node("first", latest))
    clustersim.advance_until(lambda: running(core, "first"), 60)
    new, _ = clustersim.push_image()
    core.create_namespaced_pod(NAMESPACE, on_node("second", latest))
    clustersim.advance_until(lambda: running(core, "second"), 60)
    assert image_id(core, "second") == f"{clustersim.image_repo}@{new}"


def test_pull_time_follows_image_size_and_node_bandwidth(clustersim, core):
    clustersim.push_image(size_gb=2)  # 2 GB at the small preset's 100 MB/s: 20 s
    image = f"{clustersim.image_repo}:latest"
    core.create_namespaced_pod(NAMESPACE, on_node("p", image))
    clustersim.step(19.5)
    pod = core.read_namespaced_pod("p", NAMESPACE)
    assert pod.status.phase == "Pending"
    assert pod.status.container_statuses[0].state.waiting.reason == "ContainerCreating"
    clustersim.step(0.5)
    assert running(core, "p")
    assert (
        "Pulled",
        f'Successfully pulled image "{image}" in 20s (20s including waiting). '
        "Image size: 2000000000 bytes.",
    ) in pod_events(core, "p")


def test_a_rebuild_pulls_only_its_changed_layers(clustersim, core):
    repo = clustersim.image_repo
    _, first = clustersim.push_image(size_gb=2)
    core.create_namespaced_pod(NAMESPACE, on_node("old", f"{repo}:{first}"))
    clustersim.advance_until(lambda: running(core, "old"), 60)
    _, second = clustersim.push_image(size_gb=2, changed_fraction=0.3)
    core.create_namespaced_pod(NAMESPACE, on_node("new", f"{repo}:{second}"))
    # The rebuild replaces whole top layers holding at least 30% of the bytes: 6 s, not 20 s.
    elapsed = clustersim.advance_until(lambda: running(core, "new"), 60, interval=0.5)
    assert 6 <= elapsed <= 7
    cold = on_node("cold", f"{repo}:{second}", node="h100-2")
    core.create_namespaced_pod(NAMESPACE, cold)
    assert clustersim.advance_until(lambda: running(core, "cold"), 60, interval=0.5) == 20


def test_pulls_on_one_node_run_one_at_a_time(clustersim, core):
    clustersim.push_image(size_gb=1)
    core.create_namespaced_pod(NAMESPACE, on_node("a", f"{clustersim.image_repo}:latest"))
    core.create_namespaced_pod(NAMESPACE, on_node("b", "python:3.11-slim"))
    clustersim.advance_until(lambda: running(core, "b"), 60)
    pulled = dict(pod_events(core, "b"))["Pulled"]
    assert pulled.endswith(" in 1s (11s including waiting). Image size: 100000000 bytes.")


def test_node_status_lists_held_images_and_the_tag_moves(clustersim, core):
    repo = clustersim.image_repo
    core.create_namespaced_pod(NAMESPACE, on_node("a", f"{repo}:latest"))
    clustersim.advance_until(lambda: running(core, "a"), 60)
    first = image_id(core, "a")
    clustersim.push_image()
    core.create_namespaced_pod(NAMESPACE, on_node("b", f"{repo}:latest"))
    clustersim.advance_until(lambda: running(core, "b"), 60)
    images = {tuple(i.names): i.size_bytes for i in core.read_node("h100-1").status.images}
    assert images == {
        (image_id(core, "b"), f"{repo}:latest"): 10**9,
        (first,): 10**9,
    }


def test_init_containers_run_in_order_before_the_main_container(clustersim, core):
    """The prepuller shows ``Init:0/1`` while its init container pulls."""
    repo = clustersim.image_repo
    manifest = on_node(
        "prepull", "busybox:1.36", initContainers=[{"name": "pull", "image": f"{repo}:latest"}]
    )
    core.create_namespaced_pod(NAMESPACE, manifest)
    clustersim.step(1)
    pod = core.read_namespaced_pod("prepull", NAMESPACE)
    assert pod.status.init_container_statuses[0].state.waiting.reason == "PodInitializing"
    assert pod.status.container_statuses[0].state.waiting.reason == "PodInitializing"
    assert next(c for c in pod.status.conditions if c.type == "Initialized").status == "False"
    clustersim.step(9)
    pod = core.read_namespaced_pod("prepull", NAMESPACE)
    assert pod.status.init_container_statuses[0].state.running is not None
    assert pod.status.phase == "Pending"
    clustersim.step(5)  # the init container runs for the sim's 5 s
    pod = core.read_namespaced_pod("prepull", NAMESPACE)
    terminated = pod.status.init_container_statuses[0].state.terminated
    assert (terminated.reason, terminated.exit_code) == ("Completed", 0)
    clustersim.step(1)
    pod = core.read_namespaced_pod("prepull", NAMESPACE)
    assert pod.status.phase == "Running"
    assert all(c.status == "True" for c in pod.status.conditions)
    assert pod.status.pod_ip
    assert pod.status.host_ip
    assert pod.status.start_time


def test_failing_pulls_back_off_and_recover_when_healed(clustersim, core):
    clustersim.faults.fail_pulls_on(["h100-1"])
    core.create_namespaced_pod(NAMESPACE, on_node("p", f"{clustersim.image_repo}:latest"))
    clustersim.step(0.5)
    waiting = core.read_namespaced_pod("p", NAMESPACE).status.container_statuses[0].state.waiting
    assert waiting.reason == "ErrImagePull"
    assert "i/o timeout" in waiting.message
    clustersim.step(1)
    waiting = core.read_namespaced_pod("p", NAMESPACE).status.container_statuses[0].state.waiting
    assert waiting.reason == "ImagePullBackOff"
    reasons = [reason for reason, _ in pod_events(core, "p")]
    assert {"Failed", "BackOff"} <= set(reasons)
    clustersim.step(60)  # retries after 10 s, 20 s, ...: one BackOff event, counted up
    (back_off,) = core.list_namespaced_event(NAMESPACE, field_selector="reason=BackOff").items
    assert back_off.count >= 3
    clustersim.faults.fail_pulls_on([])
    clustersim.advance_until(lambda: running(core, "p"), 60)


def test_a_missing_tag_fails_to_pull(clustersim, core):
    core.create_namespaced_pod(NAMESPACE, on_node("p", f"{clustersim.image_repo}:nope"))
    clustersim.step(1)
    waiting = core.read_namespaced_pod("p", NAMESPACE).status.container_statuses[0].state.waiting
    assert waiting.reason in ("ErrImagePull", "ImagePullBackOff")
    failures = [message for reason, message in pod_events(core, "p") if reason == "Failed"]
    assert failures[0].endswith(f"{clustersim.image_repo}:nope: not found")


def test_changing_a_running_containers_image_restarts_it(clustersim, core):
    core.create_namespaced_pod(NAMESPACE, on_node("p", "busybox:1.36"))
    clustersim.advance_until(lambda: running(core, "p"), 60)
    core.patch_namespaced_pod(
        "p", NAMESPACE, {"spec": {"containers": [{"name": "main", "image": "busybox:1.37"}]}}
    )
    clustersim.step(5)
    status = core.read_namespaced_pod("p", NAMESPACE).status.container_statuses[0]
    assert status.image == "docker.io/library/busybox:1.37"
    assert status.restart_count == 1
    assert status.ready


def test_a_readiness_probe_delays_ready(clustersim, core):
    manifest = on_node("p", "busybox:1.36")
    manifest["spec"]["containers"][0]["readinessProbe"] = {
        "tcpSocket": {"port": 22},
        "initialDelaySeconds": 30,
    }
    core.create_namespaced_pod(NAMESPACE, manifest)
    clustersim.step(10)
    pod = core.read_namespaced_pod("p", NAMESPACE)
    assert pod.status.phase == "Running"
    assert not pod.status.container_statuses[0].ready
    clustersim.step(30)
    assert core.read_namespaced_pod("p", NAMESPACE).status.container_statuses[0].ready

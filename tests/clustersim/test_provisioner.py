"""Slow node provisioning, as in the PR #671 incident: a new node appears minutes later."""

from tests.clustersim.conftest import NAMESPACE, pod_events, pod_manifest


def node_names(core) -> list[str]:
    return sorted(
        n.metadata.name for n in core.list_node(label_selector="gpudev.io/gpu-type=h100").items
    )


def test_an_unschedulable_pod_brings_a_node_after_the_delay_not_before(clustersim, core):
    clustersim.set_provisioning(gpu_type="h100", delay=180, max_nodes=3)
    for name in ("a", "b", "c"):
        core.create_namespaced_pod(NAMESPACE, pod_manifest(name, gpu_type="h100", gpus=8))
    clustersim.step(1)
    assert core.read_namespaced_pod("c", NAMESPACE).spec.node_name is None
    assert "Nominated" in [reason for reason, _ in pod_events(core, "c")]
    clustersim.step(178)
    assert node_names(core) == ["h100-1", "h100-2"]
    assert core.read_namespaced_pod("c", NAMESPACE).status.phase == "Pending"
    clustersim.step(1)
    assert node_names(core) == ["h100-1", "h100-2", "h100-3"]
    node = core.read_node("h100-3")
    assert node.status.allocatable["nvidia.com/gpu"] == "8"
    assert node.metadata.labels["node.kubernetes.io/instance-type"] == "p5.48xlarge"
    assert core.read_namespaced_pod("c", NAMESPACE).spec.node_name == "h100-3"


def test_provisioning_stops_at_the_node_cap(clustersim, core):
    clustersim.set_provisioning(gpu_type="h100", delay=60, max_nodes=3)
    for name in ("a", "b", "c", "d"):
        core.create_namespaced_pod(NAMESPACE, pod_manifest(name, gpu_type="h100", gpus=8))
    clustersim.step(600)
    assert node_names(core) == ["h100-1", "h100-2", "h100-3"]
    assert core.read_namespaced_pod("d", NAMESPACE).spec.node_name is None


def test_pods_that_fit_one_new_node_share_it(clustersim, core):
    clustersim.set_provisioning(gpu_type="a10g", delay=60, max_nodes=5)
    for name in ("a", "b", "c"):
        core.create_namespaced_pod(NAMESPACE, pod_manifest(name, gpu_type="a10g", gpus=2))
    clustersim.step(61)
    nodes = sorted(
        n.metadata.name for n in core.list_node(label_selector="gpudev.io/gpu-type=a10g").items
    )
    assert nodes == ["a10g-1", "a10g-2"]
    assert all(core.read_namespaced_pod(n, NAMESPACE).spec.node_name for n in ("a", "b", "c"))


def test_a_pod_waiting_for_a_new_node_outlives_a_thirty_second_deadline(clustersim, core):
    """What PR #671 got wrong: pod-ready on a fresh node takes minutes, not 30 s."""
    clustersim.set_provisioning(gpu_type="h100", delay=150, max_nodes=4)
    for name in ("a", "b"):
        core.create_namespaced_pod(NAMESPACE, pod_manifest(name, gpu_type="h100", gpus=8))
    clustersim.step(1)
    core.create_namespaced_pod(
        NAMESPACE,
        pod_manifest("warm", image=f"{clustersim.image_repo}:latest", gpu_type="h100", gpus=8),
    )
    clustersim.step(30)
    assert core.read_namespaced_pod("warm", NAMESPACE).status.phase == "Pending"
    elapsed = 30 + clustersim.advance_until(
        lambda: core.read_namespaced_pod("warm", NAMESPACE).status.phase == "Running",
        600,
        interval=5,
    )
    assert elapsed >= 150 + 10  # the node's delay, then the 1 GB pull at 100 MB/s

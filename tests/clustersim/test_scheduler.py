"""Scheduling: node selectors, GPU counts, bin-packing, Pending with a reason, preemption."""

from tests.clustersim.conftest import NAMESPACE, pod_events, pod_manifest


def test_pods_land_on_nodes_of_their_gpu_type(clustersim, core):
    core.create_namespaced_pod(NAMESPACE, pod_manifest("gpu", gpu_type="h100", gpus=4))
    core.create_namespaced_pod(NAMESPACE, pod_manifest("cpu", gpu_type="cpu-x86"))
    clustersim.step(1)
    assert core.read_namespaced_pod("gpu", NAMESPACE).spec.node_name.startswith("h100-")
    assert core.read_namespaced_pod("cpu", NAMESPACE).spec.node_name == "cpu-x86-1"
    reason, message = pod_events(core, "gpu")[0]
    assert reason == "Scheduled"
    assert message.startswith(f"Successfully assigned {NAMESPACE}/gpu to h100-")


def test_required_node_affinity_in_is_honoured(clustersim, core):
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "gpudev.io/gpu-type", "operator": "In", "values": ["a10g"]}
                        ]
                    }
                ]
            }
        }
    }
    core.create_namespaced_pod(NAMESPACE, pod_manifest("p", gpus=1, affinity=affinity))
    clustersim.step(1)
    assert core.read_namespaced_pod("p", NAMESPACE).spec.node_name == "a10g-1"


def test_gpu_pods_bin_pack_onto_the_fullest_node(clustersim, core):
    for name in ("a", "b", "c"):
        core.create_namespaced_pod(NAMESPACE, pod_manifest(name, gpu_type="h100", gpus=2))
    clustersim.step(1)
    nodes = {core.read_namespaced_pod(n, NAMESPACE).spec.node_name for n in ("a", "b", "c")}
    assert len(nodes) == 1


def test_a_pod_that_fits_nowhere_stays_pending_with_a_failed_scheduling_event(clustersim, core):
    core.create_namespaced_pod(NAMESPACE, pod_manifest("big", gpu_type="h100", gpus=16))
    clustersim.step(1)
    pod = core.read_namespaced_pod("big", NAMESPACE)
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name is None
    condition = next(c for c in pod.status.conditions if c.type == "PodScheduled")
    assert (condition.status, condition.reason) == ("False", "Unschedulable")
    expected = (
        "0/4 nodes are available: 2 Insufficient nvidia.com/gpu, "
        "2 node(s) didn't match Pod's node affinity/selector."
    )
    assert condition.message == expected
    event = core.list_namespaced_event(NAMESPACE, field_selector="reason=FailedScheduling").items
    assert [(e.type, e.message, e.involved_object.name) for e in event] == [
        ("Warning", expected, "big")
    ]


def test_deleting_a_pod_frees_its_gpus_after_the_grace_period(clustersim, core):
    core.create_namespaced_pod(NAMESPACE, pod_manifest("first", gpu_type="a10g", gpus=4))
    clustersim.step(1)
    core.create_namespaced_pod(NAMESPACE, pod_manifest("second", gpu_type="a10g", gpus=4))
    clustersim.step(1)
    assert core.read_namespaced_pod("second", NAMESPACE).spec.node_name is None
    core.delete_namespaced_pod("first", NAMESPACE, grace_period_seconds=20)
    clustersim.step(19)
    assert core.read_namespaced_pod("second", NAMESPACE).spec.node_name is None
    clustersim.step(1)
    assert core.read_namespaced_pod("second", NAMESPACE).spec.node_name == "a10g-1"


def test_a_higher_priority_pod_preempts_lower_priority_pods(clustersim, core):
    core.create_namespaced_pod(
        NAMESPACE, pod_manifest("warm", gpu_type="a10g", gpus=4, priority=-10)
    )
    clustersim.step(1)
    core.create_namespaced_pod(
        NAMESPACE, pod_manifest("reserved", gpu_type="a10g", gpus=2, priority=100)
    )
    clustersim.step(1)
    warm = core.read_namespaced_pod("warm", NAMESPACE)
    assert warm.metadata.deletion_timestamp is not None
    reasons = [reason for reason, _ in pod_events(core, "warm")]
    assert reasons[-2:] == ["Preempted", "Killing"]
    assert core.read_namespaced_pod("reserved", NAMESPACE).status.nominated_node_name == "a10g-1"
    clustersim.step(30)
    assert core.read_namespaced_pod("reserved", NAMESPACE).spec.node_name == "a10g-1"

"""The DaemonSet controller: one pod per node, rolled within maxUnavailable, status counts."""

import pytest
from kubernetes import client, config

from tests.clustersim.conftest import NAMESPACE


def prepuller(image: str, max_unavailable: int | str) -> dict:
    labels = {"app": "prepuller"}
    return {
        "metadata": {"name": "prepuller"},
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": max_unavailable},
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {"gpudev.io/gpu-type": "h100"},
                    "initContainers": [
                        {"name": "pull", "image": image, "imagePullPolicy": "Always"}
                    ],
                    "containers": [{"name": "pause", "image": "busybox:1.36"}],
                },
            },
        },
    }


@pytest.fixture
def fleet(clustersim_factory):
    """A sim with five h100 nodes, and its core and apps clients."""
    sim = clustersim_factory(nodes={"h100": 5})
    api = config.new_client_from_config(config_file=sim.kubeconfig_path)
    yield sim, client.CoreV1Api(api), client.AppsV1Api(api)
    api.close()


def ready_by_node(core) -> dict[str, tuple[str, bool]]:
    """Return, per node, the live prepuller pod's revision and whether it is ready."""
    pods = core.list_namespaced_pod(NAMESPACE, label_selector="app=prepuller").items
    return {
        pod.spec.node_name: (
            pod.metadata.labels["controller-revision-hash"],
            any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []),
        )
        for pod in pods
        if pod.metadata.deletion_timestamp is None
    }


def all_ready(core, revision: str | None = None) -> bool:
    """Say whether all five nodes run a ready prepuller pod (of ``revision``, if given)."""
    state = ready_by_node(core)
    return len(state) == 5 and all(
        ready and revision in (None, rev) for rev, ready in state.values()
    )


def test_a_daemonset_runs_one_pod_per_matching_node(fleet):
    sim, core, apps = fleet
    apps.create_namespaced_daemon_set(NAMESPACE, prepuller(f"{sim.image_repo}:latest", 1))
    sim.step(1)
    pods = core.list_namespaced_pod(NAMESPACE, label_selector="app=prepuller").items
    assert sorted(p.spec.node_name for p in pods) == [f"h100-{i}" for i in range(1, 6)]
    owner = pods[0].metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("DaemonSet", "prepuller", True)
    sim.advance_until(lambda: all_ready(core), 120, interval=5)
    status = apps.read_namespaced_daemon_set("prepuller", NAMESPACE).status
    assert (status.desired_number_scheduled, status.current_number_scheduled) == (5, 5)
    assert (status.number_ready, status.number_available, status.updated_number_scheduled) == (
        5,
        5,
        5,
    )
    assert status.number_unavailable is None
    assert status.observed_generation == 1


@pytest.mark.parametrize(("max_unavailable", "budget"), [(1, 1), ("40%", 2)])
def test_a_new_template_rolls_node_by_node_within_max_unavailable(fleet, max_unavailable, budget):
    sim, core, apps = fleet
    _, first = sim.push_image()
    apps.create_namespaced_daemon_set(
        NAMESPACE, prepuller(f"{sim.image_repo}:{first}", max_unavailable)
    )
    sim.advance_until(lambda: all_ready(core), 120, interval=5)
    old_revision = next(iter(ready_by_node(core).values()))[0]

    _, second = sim.push_image()
    apps.patch_namespaced_daemon_set(
        "prepuller",
        NAMESPACE,
        {
            "spec": {
                "template": {
                    "spec": {
                        "initContainers": [{"name": "pull", "image": f"{sim.image_repo}:{second}"}]
                    }
                }
            }
        },
    )
    assert apps.read_namespaced_daemon_set("prepuller", NAMESPACE).metadata.generation == 2
    replaced_order: list[str] = []
    for _ in range(200):
        sim.step(1)
        state = ready_by_node(core)
        unavailable = sum(
            1 for node in range(1, 6) if not state.get(f"h100-{node}", ("", False))[1]
        )
        assert unavailable <= budget
        for node, (revision, _) in sorted(state.items()):
            if revision != old_revision and node not in replaced_order:
                replaced_order.append(node)
        if all(rev != old_revision and ready for rev, ready in state.values()) and len(state) == 5:
            break
    else:
        pytest.fail("the rollout did not finish")
    if budget == 1:
        assert replaced_order == [f"h100-{i}" for i in range(1, 6)]
    sim.step(1)
    daemonset = apps.read_namespaced_daemon_set("prepuller", NAMESPACE)
    status = daemonset.status
    assert status.observed_generation == 2
    assert (status.updated_number_scheduled, status.number_ready, status.number_available) == (
        5,
        5,
        5,
    )
    assert status.number_unavailable is None


def test_a_new_node_gets_a_daemon_pod_and_deleting_the_daemonset_removes_its_pods(fleet):
    sim, core, apps = fleet
    apps.create_namespaced_daemon_set(NAMESPACE, prepuller("busybox:1.36", 1))
    sim.step(1)
    (node,) = sim.add_nodes("h100")
    sim.step(1)
    assert node in ready_by_node(core)
    apps.delete_namespaced_daemon_set("prepuller", NAMESPACE)
    sim.step(1)
    sim.step(30)
    assert core.list_namespaced_pod(NAMESPACE, label_selector="app=prepuller").items == []

"""The Kubernetes API as the official client sees it: CRUD, selectors, watches, errors."""

import json
import threading
from datetime import UTC, datetime

import pytest
import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.clustersim.conftest import NAMESPACE, pod_manifest


def test_discovery_lists_the_served_groups(kube):
    assert client.VersionApi(kube).get_code().git_version.startswith("v1.")
    groups = {g.name for g in client.ApisApi(kube).get_api_versions().groups}
    assert groups == {"apps", "coordination.k8s.io"}
    core_resources = {r.name for r in client.CoreV1Api(kube).get_api_resources().resources}
    assert {"pods", "pods/status", "nodes", "services", "events"} <= core_resources
    assert "daemonsets" in {r.name for r in client.AppsV1Api(kube).get_api_resources().resources}


def test_a_wrong_token_is_refused(clustersim):
    configuration = client.Configuration()
    configuration.host = clustersim.api_url
    configuration.api_key = {"BearerToken": "not-the-token"}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    with client.ApiClient(configuration) as api, pytest.raises(ApiException) as caught:
        client.CoreV1Api(api).list_node()
    assert caught.value.status == 401


def test_create_fills_in_server_fields_and_generates_names(core):
    pod = core.create_namespaced_pod(
        NAMESPACE, {"metadata": {"generateName": "warm-"}, "spec": pod_manifest("x")["spec"]}
    )
    assert pod.metadata.name.startswith("warm-")
    assert len(pod.metadata.name) == 10
    assert pod.metadata.uid
    assert pod.metadata.creation_timestamp
    assert pod.metadata.resource_version
    assert pod.metadata.namespace == NAMESPACE
    assert pod.spec.containers[0].image_pull_policy == "IfNotPresent"
    assert pod.status.phase == "Pending"


def test_latest_and_untagged_images_default_to_pull_always(core):
    pod = core.create_namespaced_pod(
        NAMESPACE,
        {
            "metadata": {"name": "p"},
            "spec": {
                "containers": [
                    {"name": "a", "image": "repo.example.com/x:latest"},
                    {"name": "b", "image": "busybox"},
                    {"name": "c", "image": "busybox@sha256:" + "0" * 64},
                ]
            },
        },
    )
    policies = [c.image_pull_policy for c in pod.spec.containers]
    assert policies == ["Always", "Always", "IfNotPresent"]


def test_create_conflict_is_409_already_exists(core):
    core.create_namespaced_pod(NAMESPACE, pod_manifest("twin"))
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_pod(NAMESPACE, pod_manifest("twin"))
    assert caught.value.status == 409
    status = json.loads(caught.value.body)
    assert status["kind"] == "Status"
    assert status["status"] == "Failure"
    assert status["reason"] == "AlreadyExists"
    assert status["details"] == {"name": "twin", "kind": "pods"}


def test_missing_object_is_404_with_a_status(core):
    with pytest.raises(ApiException) as caught:
        core.read_namespaced_pod("ghost", NAMESPACE)
    assert caught.value.status == 404
    assert json.loads(caught.value.body)["message"] == 'pods "ghost" not found'


def test_invalid_pod_is_422(core):
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_pod(
            NAMESPACE, {"metadata": {"name": "Bad_Name"}, "spec": pod_manifest("x")["spec"]}
        )
    assert caught.value.status == 422
    assert json.loads(caught.value.body)["reason"] == "Invalid"


def test_list_filters_by_label_selector(core):
    core.create_namespaced_pod(
        NAMESPACE, pod_manifest("a", labels={"pool": "h100", "state": "ready"})
    )
    core.create_namespaced_pod(NAMESPACE, pod_manifest("b", labels={"pool": "h100"}))
    core.create_namespaced_pod(
        NAMESPACE, pod_manifest("c", labels={"pool": "b200", "state": "claimed"})
    )

    def names(selector):
        return sorted(
            p.metadata.name
            for p in core.list_namespaced_pod(NAMESPACE, label_selector=selector).items
        )

    assert names("pool=h100") == ["a", "b"]
    assert names("pool==h100,state") == ["a"]
    assert names("pool!=h100") == ["c"]
    assert names("pool in (h100, b200),!state") == ["b"]
    assert names("state notin (claimed)") == ["a", "b"]
    assert names("") == ["a", "b", "c"]


def test_list_filters_by_field_selector(clustersim, core):
    core.create_namespaced_pod(NAMESPACE, pod_manifest("on-h100", gpu_type="h100", gpus=1))
    core.create_namespaced_pod(NAMESPACE, pod_manifest("nowhere", gpu_type="h100", gpus=99))
    core.create_namespaced_pod("other", pod_manifest("elsewhere", gpu_type="cpu-x86"))
    clustersim.step(1)
    node = core.read_namespaced_pod("on-h100", NAMESPACE).spec.node_name

    def names(selector):
        return sorted(
            p.metadata.name for p in core.list_pod_for_all_namespaces(field_selector=selector).items
        )

    assert names(f"spec.nodeName={node}") == ["on-h100"]
    assert names("spec.nodeName=") == ["nowhere"]
    assert names("metadata.name=on-h100") == ["on-h100"]
    assert names("metadata.namespace=other") == ["elsewhere"]
    assert names("status.phase=Pending") == ["nowhere"]
    assert names("status.phase=Running,metadata.namespace!=other") == ["on-h100"]
    with pytest.raises(ApiException) as caught:
        core.list_node(field_selector="status.phase=Running")
    assert caught.value.status == 400


def test_list_pages_with_limit_and_continue(core):
    for index in range(5):
        core.create_namespaced_pod(NAMESPACE, pod_manifest(f"p{index}"))
    first = core.list_namespaced_pod(NAMESPACE, limit=2)
    assert [p.metadata.name for p in first.items] == ["p0", "p1"]
    assert first.metadata.remaining_item_count == 3
    rest = core.list_namespaced_pod(NAMESPACE, limit=10, _continue=first.metadata._continue)
    assert [p.metadata.name for p in rest.items] == ["p2", "p3", "p4"]
    assert not rest.metadata._continue


def test_patch_merges_labels_annotations_and_images(core):
    core.create_namespaced_pod(NAMESPACE, pod_manifest("p", labels={"keep": "1", "drop": "1"}))
    core.patch_namespaced_pod(
        "p",
        NAMESPACE,
        {
            "metadata": {"labels": {"drop": None, "new": "2"}, "annotations": {"a": "b"}},
            "spec": {"containers": [{"name": "main", "image": "busybox:1.37"}]},
        },
    )
    pod = core.read_namespaced_pod("p", NAMESPACE)
    assert pod.metadata.labels == {"keep": "1", "new": "2"}
    assert pod.metadata.annotations == {"a": "b"}
    assert pod.spec.containers[0].image == "busybox:1.37"
    assert pod.spec.containers[0].name == "main"


def test_merge_patch_and_json_patch(core):
    core.create_namespaced_pod(NAMESPACE, pod_manifest("p", labels={"a": "1"}))
    core.patch_namespaced_pod(
        "p",
        NAMESPACE,
        {"metadata": {"labels": {"b": "2"}}},
        _content_type="application/merge-patch+json",
    )
    core.patch_namespaced_pod(
        "p",
        NAMESPACE,
        [
            {"op": "test", "path": "/metadata/labels/a", "value": "1"},
            {"op": "remove", "path": "/metadata/labels/a"},
            {"op": "add", "path": "/metadata/annotations", "value": {"x": "y"}},
        ],
    )
    pod = core.read_namespaced_pod("p", NAMESPACE)
    assert pod.metadata.labels == {"b": "2"}
    assert pod.metadata.annotations == {"x": "y"}


def test_stale_resource_version_in_patch_or_put_is_409_conflict(core):
    created = core.create_namespaced_pod(NAMESPACE, pod_manifest("p"))
    stale = created.metadata.resource_version
    core.patch_namespaced_pod("p", NAMESPACE, {"metadata": {"labels": {"claimed": "yes"}}})
    with pytest.raises(ApiException) as caught:
        core.patch_namespaced_pod(
            "p", NAMESPACE, {"metadata": {"resourceVersion": stale, "labels": {"claimed": "again"}}}
        )
    assert caught.value.status == 409
    assert json.loads(caught.value.body)["reason"] == "Conflict"
    lease = client.CoordinationV1Api(core.api_client)
    held = lease.create_namespaced_lease(
        NAMESPACE, {"metadata": {"name": "watcher"}, "spec": {"holderIdentity": "a"}}
    )
    body = held.to_dict()
    lease.replace_namespaced_lease("watcher", NAMESPACE, {**body, "spec": {"holderIdentity": "b"}})
    with pytest.raises(ApiException) as caught:
        lease.replace_namespaced_lease(
            "watcher", NAMESPACE, {**body, "spec": {"holderIdentity": "c"}}
        )
    assert caught.value.status == 409
    assert lease.read_namespaced_lease("watcher", NAMESPACE).spec.holder_identity == "b"


def test_pod_spec_other_than_images_is_immutable(core):
    core.create_namespaced_pod(NAMESPACE, pod_manifest("p"))
    with pytest.raises(ApiException) as caught:
        core.patch_namespaced_pod("p", NAMESPACE, {"spec": {"nodeSelector": {"x": "y"}}})
    assert caught.value.status == 422


def test_status_subresource_writes_only_status(core):
    core.create_namespaced_pod(NAMESPACE, pod_manifest("p"))
    core.patch_namespaced_pod_status(
        "p", NAMESPACE, {"metadata": {"labels": {"ignored": "1"}}, "status": {"phase": "Failed"}}
    )
    core.patch_namespaced_pod("p", NAMESPACE, {"status": {"phase": "Running"}})
    pod = core.read_namespaced_pod("p", NAMESPACE)
    assert pod.status.phase == "Failed"
    assert not pod.metadata.labels


def test_every_write_gets_a_higher_resource_version_across_kinds(core):
    versions = [
        int(core.create_namespaced_pod(NAMESPACE, pod_manifest("p")).metadata.resource_version)
    ]
    versions.append(
        int(
            core.create_namespaced_service(
                NAMESPACE, {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 22}]}}
            ).metadata.resource_version
        )
    )
    versions.append(
        int(
            core.patch_namespaced_pod(
                "p", NAMESPACE, {"metadata": {"labels": {"a": "b"}}}
            ).metadata.resource_version
        )
    )
    assert versions == sorted(versions)
    assert len(set(versions)) == 3


def test_node_port_services_get_a_port(core):
    service = core.create_namespaced_service(
        NAMESPACE,
        {"metadata": {"name": "p-ssh"}, "spec": {"type": "NodePort", "ports": [{"port": 22}]}},
    )
    port = service.spec.ports[0]
    assert 30000 <= port.node_port <= 32767
    assert port.target_port == 22
    assert service.spec.cluster_ip
    deleted = core.delete_namespaced_service("p-ssh", NAMESPACE)
    assert deleted.metadata.name == "p-ssh"


def test_graceful_delete_marks_then_removes_after_the_grace_period(clustersim, core):
    core.create_namespaced_pod(NAMESPACE, pod_manifest("p", gpu_type="h100", gpus=1))
    clustersim.step(1)
    deleted = core.delete_namespaced_pod("p", NAMESPACE, grace_period_seconds=30)
    assert deleted.metadata.deletion_timestamp is not None
    assert deleted.metadata.deletion_grace_period_seconds == 30
    clustersim.step(29)
    assert core.read_namespaced_pod("p", NAMESPACE).metadata.deletion_timestamp
    clustersim.step(1)
    with pytest.raises(ApiException) as caught:
        core.read_namespaced_pod("p", NAMESPACE)
    assert caught.value.status == 404


def test_grace_period_zero_and_unscheduled_pods_delete_at_once(clustersim, core):
    core.create_namespaced_pod(NAMESPACE, pod_manifest("bound", gpu_type="h100", gpus=1))
    core.create_namespaced_pod(NAMESPACE, pod_manifest("unbound", gpu_type="h100", gpus=99))
    clustersim.step(1)
    core.delete_namespaced_pod("bound", NAMESPACE, grace_period_seconds=0)
    core.delete_namespaced_pod("unbound", NAMESPACE)
    assert core.list_namespaced_pod(NAMESPACE).items == []


def test_deleting_a_daemonset_returns_a_success_status(apps):
    apps.create_namespaced_daemon_set(NAMESPACE, daemonset_manifest("ds"))
    status = apps.delete_namespaced_daemon_set("ds", NAMESPACE)
    assert status["kind"] == "Status"
    assert status["status"] == "Success"


def test_watch_streams_added_modified_deleted_with_selectors(clustersim, core):
    start = core.list_namespaced_pod(NAMESPACE).metadata.resource_version
    core.create_namespaced_pod(NAMESPACE, pod_manifest("ours", labels={"app": "gpudev"}))
    core.create_namespaced_pod(NAMESPACE, pod_manifest("theirs", labels={"app": "other"}))
    core.patch_namespaced_pod("ours", NAMESPACE, {"metadata": {"labels": {"state": "claimed"}}})
    core.delete_namespaced_pod("ours", NAMESPACE)
    events = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(
            core.list_namespaced_pod,
            NAMESPACE,
            label_selector="app=gpudev",
            resource_version=start,
            timeout_seconds=1,
        )
    ]
    assert events == [("ADDED", "ours"), ("MODIFIED", "ours"), ("DELETED", "ours")]


def test_watch_sees_objects_leave_and_enter_its_selection(core):
    start = core.list_namespaced_pod(NAMESPACE).metadata.resource_version
    core.create_namespaced_pod(NAMESPACE, pod_manifest("p", labels={"state": "ready"}))
    core.patch_namespaced_pod("p", NAMESPACE, {"metadata": {"labels": {"state": "claimed"}}})
    core.patch_namespaced_pod("p", NAMESPACE, {"metadata": {"labels": {"state": "ready"}}})
    events = [
        e["type"]
        for e in watch.Watch().stream(
            core.list_namespaced_pod,
            NAMESPACE,
            label_selector="state=ready",
            resource_version=start,
            timeout_seconds=1,
        )
    ]
    assert events == ["ADDED", "DELETED", "ADDED"]


def test_watch_without_a_version_starts_with_every_object(core):
    core.create_namespaced_pod(NAMESPACE, pod_manifest("a"))
    stream = watch.Watch().stream(core.list_namespaced_pod, NAMESPACE, timeout_seconds=1)
    assert [(e["type"], e["object"].metadata.name) for e in stream] == [("ADDED", "a")]


def test_watch_receives_changes_made_by_stepping_promptly(clustersim, core):
    core.create_namespaced_pod(NAMESPACE, pod_manifest("p", gpu_type="h100", gpus=1))
    version = core.list_namespaced_pod(NAMESPACE).metadata.resource_version
    received = []
    seen_scheduled = threading.Event()
    watcher = watch.Watch()

    def consume():
        for event in watcher.stream(
            core.list_namespaced_pod, NAMESPACE, resource_version=version, timeout_seconds=10
        ):
            received.append(event["object"].spec.node_name)
            if event["object"].spec.node_name:
                seen_scheduled.set()
                watcher.stop()

    thread = threading.Thread(target=consume)
    thread.start()
    clustersim.step(1)
    assert seen_scheduled.wait(5)
    thread.join(5)


def test_watch_from_an_expired_version_is_410_and_a_relist_recovers(clustersim_factory):
    sim = clustersim_factory(watch_history=5)
    api = config.new_client_from_config(config_file=sim.kubeconfig_path)
    core = client.CoreV1Api(api)
    old = core.list_namespaced_pod(NAMESPACE).metadata.resource_version
    for index in range(10):
        core.create_namespaced_pod(NAMESPACE, pod_manifest(f"p{index}"))
    with pytest.raises(ApiException) as caught:
        list(watch.Watch().stream(core.list_namespaced_pod, NAMESPACE, resource_version=old))
    assert caught.value.status == 410
    relisted = core.list_namespaced_pod(NAMESPACE)
    assert len(relisted.items) == 10
    core.create_namespaced_pod(NAMESPACE, pod_manifest("after"))
    events = watch.Watch().stream(
        core.list_namespaced_pod,
        NAMESPACE,
        resource_version=relisted.metadata.resource_version,
        timeout_seconds=1,
    )
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "after")]
    api.close()


def test_watch_with_bookmarks_ends_with_a_bookmark_at_the_current_version(core):
    core.create_namespaced_pod(NAMESPACE, pod_manifest("a"))
    version = core.list_namespaced_pod(NAMESPACE).metadata.resource_version
    events = list(
        watch.Watch().stream(
            core.list_namespaced_pod,
            NAMESPACE,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=1,
        )
    )
    assert [e["type"] for e in events] == ["BOOKMARK"]
    assert events[0]["raw_object"]["metadata"]["resourceVersion"] == version


def test_watch_stream_is_chunked_json_lines(clustersim):
    http = urllib3.PoolManager()
    core_url = f"{clustersim.api_url}/api/v1/namespaces/{NAMESPACE}/pods"
    headers = {"Authorization": f"Bearer {clustersim.token}"}
    http.request("POST", core_url, headers=headers, body=json.dumps(pod_manifest("a")))
    response = http.request(
        "GET", f"{core_url}?watch=true&timeoutSeconds=1", headers=headers, preload_content=False
    )
    assert response.headers["Transfer-Encoding"] == "chunked"
    lines = b"".join(response.stream()).decode().splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["ADDED"]


def test_cluster_wide_lists(clustersim, core):
    core.create_namespaced_pod("one", pod_manifest("a"))
    core.create_namespaced_pod("two", pod_manifest("b"))
    core.create_namespaced_service(
        "two", {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 1}]}}
    )
    clustersim.step(5)
    assert {p.metadata.namespace for p in core.list_pod_for_all_namespaces().items} == {
        "one",
        "two",
    }
    assert len(core.list_service_for_all_namespaces().items) == 1
    assert {e.metadata.namespace for e in core.list_event_for_all_namespaces().items} == {
        "one",
        "two",
    }


def daemonset_manifest(name: str, image: str = "busybox:1.36", **strategy) -> dict:
    labels = {"app": name}
    return {
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {"gpudev.io/gpu-type": "h100"},
                    "containers": [{"name": "main", "image": image}],
                },
            },
            **strategy,
        },
    }


def test_delete_collection_removes_matching_objects(core):
    for name, pool in (("a", "h100"), ("b", "h100"), ("c", "b200")):
        core.create_namespaced_pod(NAMESPACE, pod_manifest(name, labels={"pool": pool}))
    core.delete_collection_namespaced_pod(NAMESPACE, label_selector="pool=h100")
    assert [p.metadata.name for p in core.list_namespaced_pod(NAMESPACE).items] == ["c"]


def test_dependents_go_with_their_owner_unless_orphaned(clustersim, core):
    for name in ("kept", "dropped"):
        pod = core.create_namespaced_pod(NAMESPACE, pod_manifest(name))
        owner = {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": pod.metadata.uid}
        core.create_namespaced_service(
            NAMESPACE,
            {
                "metadata": {"name": f"{name}-ssh", "ownerReferences": [owner]},
                "spec": {"type": "NodePort", "ports": [{"port": 22}]},
            },
        )
    core.delete_namespaced_pod("kept", NAMESPACE, propagation_policy="Orphan")
    core.delete_namespaced_pod("dropped", NAMESPACE)
    clustersim.step(1)
    assert [s.metadata.name for s in core.list_namespaced_service(NAMESPACE).items] == ["kept-ssh"]


def test_watching_nodes_sees_a_node_join(clustersim, core):
    version = core.list_node().metadata.resource_version
    clustersim.add_nodes("b200")
    events = watch.Watch().stream(core.list_node, resource_version=version, timeout_seconds=1)
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "b200-1")]


def test_leases_round_trip_micro_times(core):
    leases = client.CoordinationV1Api(core.api_client)
    renewed = datetime(2026, 11, 22, 20, 18, 0, 123456, tzinfo=UTC)
    leases.create_namespaced_lease(
        NAMESPACE,
        {
            "metadata": {"name": "watcher"},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": renewed},
        },
    )
    assert leases.read_namespaced_lease("watcher", NAMESPACE).spec.renew_time == renewed

"""Injected faults surface as the real clients' exceptions."""

import json
import threading
import time
import urllib.request

import botocore.exceptions
import pytest
import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.clustersim.conftest import NAMESPACE, pod_events, pod_manifest


def test_an_api_error_rate_fails_calls_with_500_status(clustersim, core):
    clustersim.faults.api_error_rate = 1.0
    with pytest.raises(ApiException) as caught:
        core.list_node()
    assert caught.value.status == 500
    status = json.loads(caught.value.body)
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "InternalError", 500)
    clustersim.faults.api_error_rate = 0.0
    assert core.list_node().items


def test_injected_errors_are_repeatable_for_a_seed(clustersim_factory):
    def failures(seed: int) -> list[bool]:
        sim = clustersim_factory(seed=seed)
        sim.faults.api_error_rate = 0.5
        with config.new_client_from_config(config_file=sim.kubeconfig_path) as api:
            core = client.CoreV1Api(api)
            outcomes = []
            for _ in range(12):
                try:
                    core.list_node()
                    outcomes.append(False)
                except ApiException:
                    outcomes.append(True)
        return outcomes

    first = failures(3)
    assert first == failures(3)
    assert any(first)
    assert not all(first)


def test_latency_slows_every_call(clustersim, core):
    clustersim.faults.latency = 0.2
    started = time.monotonic()
    core.list_node()
    assert time.monotonic() - started >= 0.2


def test_an_outage_refuses_connections_until_it_ends_on_the_sim_clock(clustersim, core):
    core.list_node()  # leaves a kept-alive connection, which the outage must drop too
    clustersim.faults.outage(seconds=10)
    with pytest.raises(urllib3.exceptions.MaxRetryError) as caught:
        core.list_node()
    assert isinstance(caught.value.reason, urllib3.exceptions.NewConnectionError)
    clustersim.step(9)
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        core.list_node()
    clustersim.step(1)
    assert core.list_node().items


def test_cutting_watches_ends_open_streams(clustersim, core):
    ended = threading.Event()
    started = threading.Event()

    def consume():
        stream = watch.Watch().stream(core.list_namespaced_pod, NAMESPACE, timeout_seconds=30)
        for _ in stream:
            started.set()
        ended.set()

    core.create_namespaced_pod(NAMESPACE, pod_manifest("p"))
    thread = threading.Thread(target=consume)
    thread.start()
    assert started.wait(5)
    clustersim.faults.cut_watches()
    assert ended.wait(5)
    thread.join()


def test_registry_down_fails_describe_images_and_pulls_but_not_cached_images(clustersim, core, ecr):
    latest = f"{clustersim.image_repo}:latest"
    pin = {"nodeSelector": {"kubernetes.io/hostname": "h100-1"}}
    core.create_namespaced_pod(NAMESPACE, pod_manifest("cached", image=latest, **pin))
    clustersim.step(15)
    digest = ecr.describe_images(repositoryName="gpu-dev")["imageDetails"][0]["imageDigest"]

    clustersim.faults.registry_down = True
    with pytest.raises(botocore.exceptions.EndpointConnectionError):
        ecr.describe_images(repositoryName="gpu-dev", imageIds=[{"imageTag": "latest"}])
    core.create_namespaced_pod(NAMESPACE, pod_manifest("cold", image=latest, gpu_type="a10g"))
    manifest = pod_manifest("warm", image=latest, **pin)
    manifest["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    core.create_namespaced_pod(NAMESPACE, manifest)
    clustersim.step(1)
    cold = core.read_namespaced_pod("cold", NAMESPACE).status.container_statuses[0].state.waiting
    assert cold.reason in ("ErrImagePull", "ImagePullBackOff")
    failed = [m for reason, m in pod_events(core, "cold") if reason == "Failed"]
    assert "connection refused" in failed[0]
    assert core.read_namespaced_pod("warm", NAMESPACE).status.phase == "Running"

    clustersim.faults.registry_down = False
    found = ecr.describe_images(repositoryName="gpu-dev", imageIds=[{"imageTag": "latest"}])
    assert found["imageDetails"][0]["imageDigest"] == digest
    clustersim.advance_until(
        lambda: core.read_namespaced_pod("cold", NAMESPACE).status.phase == "Running", 120
    )


def test_faults_can_be_set_through_the_admin_api(clustersim, core):
    request = urllib.request.Request(
        f"{clustersim.api_url}/clustersim/v1/faults",
        data=json.dumps({"api_error_rate": 1.0, "fail_pulls_on": ["h100-2"]}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request) as response:
        assert json.load(response)["fail_pulls_on"] == ["h100-2"]
    with pytest.raises(ApiException) as caught:
        core.list_node()
    assert caught.value.status == 500


def test_an_outage_set_over_http_is_stepped_away_on_the_admin_port(clustersim, core):
    def post(path, body):
        request = urllib.request.Request(
            f"{clustersim.admin_url}/clustersim/v1/{path}",
            data=json.dumps(body).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request) as response:
            return json.load(response)

    assert post("faults", {"outage_seconds": 5})["outage_until"]
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        core.list_node()
    post("step", {"seconds": 5})
    assert core.list_node().items

"""The sim as a whole: repeatable runs, the fast clock, the admin API and the CLI."""

import json
import subprocess
import sys
import time
import urllib.request

import boto3
from kubernetes import client, config

from tests.clustersim.conftest import NAMESPACE, pod_manifest


def scenario_fingerprint(sim) -> list:
    """Run a small scenario and return what a client saw of it."""
    with config.new_client_from_config(config_file=sim.kubeconfig_path) as api:
        core = client.CoreV1Api(api)
        for index in range(3):
            core.create_namespaced_pod(
                NAMESPACE,
                {
                    "metadata": {"generateName": "warm-"},
                    "spec": pod_manifest(
                        "x", image=f"{sim.image_repo}:latest", gpu_type="h100", gpus=2 + index
                    )["spec"],
                },
            )
        sim.push_image()
        sim.step(60)
        pods = core.list_namespaced_pod(NAMESPACE).items
        return [
            (
                p.metadata.name,
                p.metadata.uid,
                p.spec.node_name,
                p.status.pod_ip,
                p.status.container_statuses[0].image_id.partition("@")[2],
            )
            for p in pods
        ]


def test_the_same_seed_gives_the_same_run(clustersim_factory):
    start = clustersim_factory(seed=5).now()
    first = scenario_fingerprint(clustersim_factory(seed=5, start_time=start))
    second = scenario_fingerprint(clustersim_factory(seed=5, start_time=start))
    assert first == second
    assert scenario_fingerprint(clustersim_factory(seed=6, start_time=start)) != first


def test_step_and_advance_until_move_the_sim_clock(clustersim):
    start = clustersim.now()
    assert start.tzinfo is not None
    clustersim.step(90)
    assert (clustersim.now() - start).total_seconds() == 90
    waited = clustersim.advance_until(lambda: (clustersim.now() - start).total_seconds() >= 100, 60)
    assert waited == 10


def test_timestamps_come_from_the_sim_clock(clustersim, core):
    clustersim.step(3600)
    pod = core.create_namespaced_pod(NAMESPACE, pod_manifest("p"))
    assert pod.metadata.creation_timestamp == clustersim.now()


def test_a_fast_clock_runs_the_sim_by_itself(clustersim_factory):
    sim = clustersim_factory(speed=600.0)
    with config.new_client_from_config(config_file=sim.kubeconfig_path) as api:
        core = client.CoreV1Api(api)
        core.create_namespaced_pod(NAMESPACE, pod_manifest("p", gpu_type="h100", gpus=1))
        deadline = time.monotonic() + 10
        while core.read_namespaced_pod("p", NAMESPACE).status.phase != "Running":
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_the_admin_api_steps_and_reports_state(clustersim):
    def post(path, body):
        request = urllib.request.Request(
            f"{clustersim.api_url}/clustersim/v1/{path}",
            data=json.dumps(body).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request) as response:
            return json.load(response)

    before = clustersim.now()
    post("step", {"seconds": 30})
    assert (clustersim.now() - before).total_seconds() == 30
    assert post("nodes", {"gpu_type": "b200", "count": 2}) == {"added": ["b200-1", "b200-2"]}
    post("provisioning", {"gpu_type": "h100", "delay": 120, "max_nodes": 4})
    with urllib.request.urlopen(f"{clustersim.api_url}/clustersim/v1/state") as response:
        state = json.load(response)
    assert state["nodes"]["b200-2"] == "b200"
    assert state["provisioning"] == {"h100": {"delay": 120.0, "max_nodes": 4}}


def test_the_cli_pushes_a_rebuild_to_a_running_sim(clustersim, ecr):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "clustersim",
            "push",
            "--url",
            clustersim.api_url,
            "--size-gb",
            "2",
            "--context-hash",
            "cafef00d",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"{clustersim.image_repo}:latest-cafef00d" in result.stdout
    tags = ecr.describe_images(repositoryName="gpu-dev", imageIds=[{"imageTag": "latest"}])
    assert "latest-cafef00d" in tags["imageDetails"][0]["imageTags"]


def test_the_cli_runs_a_sim_with_a_kubeconfig_where_asked(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clustersim",
            "--preset",
            "small",
            "--nodes",
            "h100=3,cpu-arm=1",
            "--speed",
            "0",
            "--kubeconfig",
            str(kubeconfig),
            "--provision-delay",
            "60",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [process.stdout.readline() for _ in range(6)]
        assert lines[0].startswith("clustersim small")
        registry = next(line.split()[1] for line in lines if "registry:" in line)
        with config.new_client_from_config(config_file=str(kubeconfig)) as api:
            names = sorted(n.metadata.name for n in client.CoreV1Api(api).list_node().items)
        assert names == ["a10g-1", "cpu-arm-1", "cpu-x86-1", "h100-1", "h100-2", "h100-3"]
        ecr = boto3.client("ecr", endpoint_url=registry, region_name="us-east-1")
        assert ecr.describe_images(repositoryName="gpu-dev")["imageDetails"]
    finally:
        process.terminate()
        process.wait(10)

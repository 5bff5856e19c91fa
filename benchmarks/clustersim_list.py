"""How long listing nodes and pods takes through the official client against clustersim.

    .venv/bin/python benchmarks/clustersim_list.py     # the full-scale numbers as JSON

The pods are copies of one pod that clustersim really ran (scheduled, pulled, Running), written
straight into the sim's store: going through the scheduler and kubelet for 10,000 pods would
measure the simulation, not the API. Each list is read three ways:

* **client models**: ``list_pod_for_all_namespaces()`` deserialised into the client's model
  objects, as ``kubernetes.watch`` and most operators read lists;
* **raw JSON**: ``_preload_content=False`` and ``json.loads``, as the product reads every list
  (``pool.cluster``);
* **server**: the same request without parsing the body: what the API server (clustersim, in
  this process) and the loopback transfer take.
"""

import copy
import gc
import json
import statistics
import time

from kubernetes import client, config

from clustersim import ClusterSim
from clustersim.presets import Preset
from clustersim.resources import PODS

FIGURE = "clustersim list"
FULL_SCALE = "1,000 nodes · 10,000 pods"
TARGET_P95_S = 1.0
NAMESPACE = "gpudev"


def size(scale: float) -> dict[str, int]:
    return {"nodes": round(1000 * scale), "pods": round(10_000 * scale)}


def run(scale: float, *, quick: bool = False) -> dict:
    """Time listing every node and every pod at ``scale`` of 1,000 nodes / 10,000 pods."""
    counts = size(scale)
    repeats = 3 if quick else 5
    preset = Preset(
        "benchmark", nodes={"h100": counts["nodes"]}, image_size_gb=1, bandwidth_mb_s=1000
    )
    with ClusterSim(preset, seed=1) as sim:
        _fill_with_running_pods(sim, counts["pods"], counts["nodes"])
        # The simulated cluster's objects live in this process; a real API server's do not.
        gc.collect()
        gc.freeze()
        with config.new_client_from_config(config_file=sim.kubeconfig_path) as api:
            core = client.CoreV1Api(api)
            samples = {
                "pods, raw JSON (the product's way)": _timed(
                    lambda: json.loads(_raw_pods(core).data), repeats
                ),
                "pods, client models": _timed(core.list_pod_for_all_namespaces, repeats),
                "pods, server and transfer only": _timed(lambda: _raw_pods(core).data, repeats),
                "nodes, raw JSON": _timed(
                    lambda: json.loads(core.list_node(_preload_content=False).data), repeats
                ),
                "nodes, client models": _timed(core.list_node, repeats),
            }
            body = _raw_pods(core).data
            listed = json.loads(body)["items"]
            if len(listed) != counts["pods"]:
                raise RuntimeError(f"listed {len(listed)} pods, expected {counts['pods']}")
    return {"size": counts, "samples": samples, "counts": {"pod_list_bytes": len(body)}}


def measure_list(nodes: int = 1000, pods: int = 10000, repeats: int = 5) -> dict:
    """Return median and p95 seconds of listing all nodes and all pods through client models."""
    preset = Preset("benchmark", nodes={"h100": nodes}, image_size_gb=1, bandwidth_mb_s=1000)
    with ClusterSim(preset, seed=1) as sim:
        _fill_with_running_pods(sim, pods, nodes)
        with config.new_client_from_config(config_file=sim.kubeconfig_path) as api:
            core = client.CoreV1Api(api)
            list_nodes = _summary(_timed(core.list_node, repeats))
            list_pods = _summary(_timed(core.list_pod_for_all_namespaces, repeats))
    return {
        "nodes": nodes,
        "pods": pods,
        "repeats": repeats,
        "list_nodes": list_nodes,
        "list_pods": list_pods,
    }


def _raw_pods(core: client.CoreV1Api):
    return core.list_pod_for_all_namespaces(_preload_content=False)


def _fill_with_running_pods(sim: ClusterSim, count: int, nodes: int) -> None:
    with config.new_client_from_config(config_file=sim.kubeconfig_path) as api:
        client.CoreV1Api(api).create_namespaced_pod(
            NAMESPACE,
            {
                "metadata": {"name": "pod-0", "labels": {"app.kubernetes.io/managed-by": "gpudev"}},
                "spec": {
                    "nodeName": "h100-1",
                    "containers": [
                        {
                            "name": "dev",
                            "image": f"{sim.image_repo}:latest",
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        }
                    ],
                },
            },
        )
    sim.step(5)
    with sim.lock:
        template = sim.store.get(PODS, NAMESPACE, "pod-0")
        for index in range(1, count):
            pod = copy.deepcopy(template)
            pod["metadata"]["name"] = f"pod-{index}"
            pod["metadata"]["uid"] = sim.rest.new_uid()
            pod["spec"]["nodeName"] = f"h100-{index % nodes + 1}"
            sim.store.create(PODS, pod)


def _timed(call, repeats: int) -> list[float]:
    call()  # warm-up: connection, caches
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return seconds


def _summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "median_s": statistics.median(ordered),
        "p95_s": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
    }


if __name__ == "__main__":
    print(json.dumps(measure_list(), indent=2))

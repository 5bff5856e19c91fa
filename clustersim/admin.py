"""The admin API under ``/clustersim/v1/``: push, step, nodes, provisioning, faults, state;
and the registry's OCI distribution API under ``/v2/`` (manifest lookups only).

The product never calls it; tests, the demo and ``python -m clustersim push`` do. Handlers run
the sim's methods in a worker thread, because some of them wait for the API server's loop.
"""

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from clustersim.images import ImageRef
from clustersim.registry import MANIFEST_TYPE, PullError

if TYPE_CHECKING:
    from clustersim.sim import ClusterSim

PREFIX = "/clustersim/v1"


def add_routes(app: web.Application, sim: "ClusterSim") -> None:
    """Register the admin routes for ``sim`` on ``app``."""

    async def run(call: Callable[[], Any]) -> web.Response:
        try:
            result = await asyncio.get_running_loop().run_in_executor(None, call)
        except (ValueError, TypeError, KeyError) as error:
            return web.json_response({"error": str(error)}, status=400)
        return web.json_response(result)

    async def body(request: web.Request) -> dict[str, Any]:
        text = await request.text()
        return json.loads(text) if text else {}

    async def state(request: web.Request) -> web.Response:
        return await run(sim.state)

    async def push(request: web.Request) -> web.Response:
        options = await body(request)

        def call() -> dict[str, str]:
            digest, tag = sim.push_image(
                size_gb=options.get("size_gb"),
                context_hash=options.get("context_hash"),
                changed_fraction=options.get("changed_fraction", 0.3),
            )
            return {"digest": digest, "tag": tag, "image": f"{sim.image_repo}:{tag}"}

        return await run(call)

    async def step(request: web.Request) -> web.Response:
        seconds = float((await body(request))["seconds"])

        def call() -> dict[str, str]:
            sim.step(seconds)
            return {"now": sim.now().isoformat()}

        return await run(call)

    async def nodes(request: web.Request) -> web.Response:
        options = await body(request)
        return await run(
            lambda: {"added": sim.add_nodes(options["gpu_type"], int(options.get("count", 1)))}
        )

    async def provisioning(request: web.Request) -> web.Response:
        options = await body(request)

        def call() -> dict[str, Any]:
            sim.set_provisioning(
                options["gpu_type"], float(options["delay"]), int(options["max_nodes"])
            )
            return sim.state()["provisioning"]

        return await run(call)

    async def faults(request: web.Request) -> web.Response:
        options = await body(request) if request.method == "POST" else {}

        def call() -> dict[str, Any]:
            if "api_error_rate" in options:
                sim.faults.api_error_rate = float(options["api_error_rate"])
            if "latency" in options:
                sim.faults.latency = float(options["latency"])
            if "registry_down" in options:
                sim.faults.registry_down = bool(options["registry_down"])
            if "fail_pulls_on" in options:
                sim.faults.fail_pulls_on(options["fail_pulls_on"])
            if options.get("cut_watches"):
                sim.faults.cut_watches()
            if "outage_seconds" in options:
                sim.faults.outage(float(options["outage_seconds"]))
            return sim.faults.describe()

        return await run(call)

    async def manifest(request: web.Request) -> web.Response:
        """Answer the OCI distribution API's manifest request for the sim's repository.

        This is the registry as a non-ECR client sees it (``HEAD /v2/<name>/manifests/<ref>``
        with the digest in ``Docker-Content-Digest``); the data is the ECR registry's.
        """
        if request.headers.get("Authorization") != f"Bearer {sim.token}":
            return web.json_response(
                {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="clustersim"'},
            )
        reference = request.match_info["reference"]
        separator = "@" if reference.startswith("sha256:") else ":"
        ref = ImageRef.parse(f"{sim.registry.uri}{separator}{reference}")

        def call() -> str:
            if sim.registry.uri.partition("/")[2] != request.match_info["name"]:
                raise PullError("repository not found")
            return sim.registry.resolve(ref).digest

        try:
            digest = await asyncio.get_running_loop().run_in_executor(None, call)
        except PullError as error:
            status = 503 if sim.faults.registry_down else 404
            return web.json_response(
                {"errors": [{"code": "MANIFEST_UNKNOWN", "message": str(error)}]}, status=status
            )
        return web.Response(
            status=200,
            headers={"Docker-Content-Digest": digest, "Content-Type": MANIFEST_TYPE},
        )

    app.router.add_route("HEAD", "/v2/{name:.+}/manifests/{reference}", manifest)
    app.router.add_route("GET", "/v2/{name:.+}/manifests/{reference}", manifest)
    app.router.add_get(f"{PREFIX}/state", state)
    app.router.add_post(f"{PREFIX}/push", push)
    app.router.add_post(f"{PREFIX}/step", step)
    app.router.add_post(f"{PREFIX}/nodes", nodes)
    app.router.add_post(f"{PREFIX}/provisioning", provisioning)
    app.router.add_route("GET", f"{PREFIX}/faults", faults)
    app.router.add_route("POST", f"{PREFIX}/faults", faults)

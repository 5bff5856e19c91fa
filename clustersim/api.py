"""The Kubernetes REST API over HTTP on loopback, on aiohttp in its own thread and event loop.

Handlers take the store's lock for each call; the simulation never waits for this loop while it
holds that lock, so the two threads cannot deadlock. Watch events written by any thread reach a
stream through its queue on this loop, and each event is written as one chunk.
"""

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from clustersim.errors import ApiError, bad_request
from clustersim.faults import Faults
from clustersim.patch import PATCH_TYPES
from clustersim.resources import (
    GROUP_VERSIONS,
    Resource,
    api_group,
    api_group_list,
    find_resource,
    resource_list,
)
from clustersim.rest import RestStorage

logger = logging.getLogger(__name__)

ADMIN_PREFIX = "/clustersim/"
OCI_PREFIX = "/v2/"  # the registry's own API, with its own auth
# Anyone may read these on a real cluster (system:public-info-viewer).
_PUBLIC_PATHS = {"/version", "/healthz", "/livez", "/readyz"}
# A real API server closes a watch without timeoutSeconds after 30 to 60 minutes.
DEFAULT_WATCH_SECONDS = 1800
# How often an idle watch sends a BOOKMARK (about once a minute, like a real API server) and
# checks whether its client went away.
BOOKMARK_INTERVAL = 60.0
_IDLE_CHECK = 1.0
VERSION_INFO = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-clustersim",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class _Target:
    resource: Resource
    namespace: str | None
    name: str | None
    subresource: str


class _Bookmark:
    """A queue item: send a BOOKMARK at this resourceVersion (and close, when ``last``)."""

    def __init__(self, resource_version: int, last: bool) -> None:
        self.resource_version = resource_version
        self.last = last


_CUT = object()  # a queue item: end the watch stream now


class ApiServer:
    """Serve the API on a loopback port from a background thread.

    The admin routes are served there too, and on a second port of their own that an API
    outage leaves up, so a stepped sim can be stepped out of an outage over HTTP.
    """

    def __init__(
        self,
        rest: RestStorage,
        faults: Faults,
        token: str,
        add_admin_routes: Callable[[web.Application], None],
        port: int = 0,
    ) -> None:
        self._rest = rest
        self._faults = faults
        self._token = token
        self._add_admin_routes = add_admin_routes
        self.port = port
        self.admin_port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._streams: set[asyncio.Queue] = set()

    @property
    def url(self) -> str:
        """Return the base URL, ``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        """Return the base URL of the port that serves only the admin routes."""
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self) -> None:
        """Start listening; return once the port is bound."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), name="clustersim-api", daemon=True
        )
        self._thread.start()
        ready.wait()

    def stop(self) -> None:
        """End every watch, stop serving and join the thread."""
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._loop = None

    def set_listening(self, listening: bool) -> None:
        """Open or close the port; closing also drops every open connection (an outage).

        Never call this with the store's lock held: it waits for the server's loop.
        """
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._set_listening(listening), self._loop).result()

    def cut_watches(self) -> None:
        """End every open watch stream, as an API server restart or a proxy timeout would."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._cut_all)

    def _serve(self, ready: threading.Event) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start_site())
        ready.set()
        self._loop.run_forever()

    async def _start_site(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024**2)
        self._add_admin_routes(app)
        app.router.add_route("*", "/{path:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await self._set_listening(True)
        admin_site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await admin_site.start()
        self.admin_port = _bound_port(admin_site)

    async def _set_listening(self, listening: bool) -> None:
        assert self._runner is not None
        if listening and self._site is None:
            self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
            await self._site.start()
            self.port = _bound_port(self._site)
        elif not listening and self._site is not None:
            await self._site.stop()
            self._site = None
            self._cut_all()
            assert self._runner.server is not None
            for connection in self._runner.server.connections:
                transport = connection.transport
                if transport is not None and transport.get_extra_info("sockname")[1] == self.port:
                    connection.force_close()

    async def _shutdown(self) -> None:
        self._cut_all()
        if self._runner is not None:
            await self._runner.cleanup()

    def _cut_all(self) -> None:
        for queue in self._streams:
            queue.put_nowait(_CUT)

    @web.middleware
    async def _middleware(self, request: web.Request, handler) -> web.StreamResponse:
        if request.path.startswith((ADMIN_PREFIX, OCI_PREFIX)):
            return await handler(request)
        try:
            if self._faults.latency:
                await asyncio.sleep(self._faults.latency)
            expected = f"Bearer {self._token}"
            if (
                request.path not in _PUBLIC_PATHS
                and request.headers.get("Authorization") != expected
            ):
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if self._faults.draw_api_error():
                raise ApiError(
                    500, "InternalError", "Internal error occurred: injected by clustersim"
                )
            return await handler(request)
        except ApiError as error:
            return _json(error.status(), error.code)
        except Exception as error:
            logger.exception("clustersim: %s %s failed", request.method, request.path)
            status = ApiError(500, "InternalError", f"Internal error occurred: {error}")
            return _json(status.status(), 500)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        segments = [s for s in request.path.split("/") if s]
        discovery = _discovery(segments)
        if discovery is not None:
            return _json(discovery)
        target = _target(segments)
        method = request.method
        query = request.query
        rest, lock = self._rest, self._rest.store.lock
        if method == "GET" and target.name is None:
            if query.get("watch") in ("true", "1"):
                return await self._watch(request, target)
            with lock:
                body = rest.list_objects(
                    target.resource,
                    target.namespace,
                    query.get("labelSelector"),
                    query.get("fieldSelector"),
                    _int(query, "limit") or 0,
                    query.get("continue", ""),
                )
            return _json(body)
        if target.name is None:
            if method == "POST" and (target.namespace or not target.resource.namespaced):
                payload = await _body(request)
                with lock:
                    return _json(rest.create(target.resource, target.namespace, payload), 201)
            if method == "DELETE":
                options = await _delete_options(request)
                with lock:
                    return _json(
                        rest.delete_collection(
                            target.resource,
                            target.namespace,
                            query.get("labelSelector"),
                            query.get("fieldSelector"),
                            options,
                        )
                    )
            raise _method_not_allowed(method)
        if method == "GET":
            with lock:
                return _json(rest.get(target.resource, target.namespace, target.name))
        if method == "PUT":
            payload = await _body(request)
            with lock:
                return _json(
                    rest.replace(
                        target.resource, target.namespace, target.name, payload, target.subresource
                    )
                )
        if method == "PATCH":
            content_type = request.content_type
            if content_type not in PATCH_TYPES:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types "
                    f"include: {', '.join(PATCH_TYPES)}",
                )
            payload = await _body(request)
            with lock:
                return _json(
                    rest.patch(
                        target.resource,
                        target.namespace,
                        target.name,
                        payload,
                        content_type,
                        target.subresource,
                    )
                )
        if method == "DELETE" and not target.subresource:
            options = await _delete_options(request)
            with lock:
                return _json(rest.delete(target.resource, target.namespace, target.name, options))
        raise _method_not_allowed(method)

    async def _watch(self, request: web.Request, target: _Target) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        store = self._rest.store

        def deliver(item: Any) -> None:
            # RuntimeError: the loop has closed at shutdown; the stream has ended anyway.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def bookmark(last: bool) -> None:
            with store.lock:  # ordered after every event already delivered
                deliver(_Bookmark(store.resource_version, last))

        query = request.query
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        timeout = _int(query, "timeoutSeconds") or DEFAULT_WATCH_SECONDS
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            with store.lock:
                initial, watcher = self._rest.watch(
                    target.resource,
                    target.namespace,
                    query.get("labelSelector"),
                    query.get("fieldSelector"),
                    query.get("resourceVersion"),
                    deliver,
                )
        except ApiError as error:
            if error.code != 410:
                raise
            await response.prepare(request)
            await _write_event(response, "ERROR", error.status())
            await response.write_eof()
            return response
        self._streams.add(queue)
        try:
            await response.prepare(request)
            for event_type, obj in initial:
                await _write_event(response, event_type, obj)
            deadline = loop.time() + timeout
            next_bookmark = loop.time() + BOOKMARK_INTERVAL
            closing = False
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0 and not closing:
                    closing = True
                    if not bookmarks:
                        break
                    bookmark(last=True)
                try:
                    item = await asyncio.wait_for(
                        queue.get(), max(min(remaining, _IDLE_CHECK), 0.05)
                    )
                except TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        break
                    if bookmarks and not closing and loop.time() >= next_bookmark:
                        next_bookmark = loop.time() + BOOKMARK_INTERVAL
                        bookmark(last=False)
                    continue
                if item is _CUT:
                    break
                if isinstance(item, _Bookmark):
                    await _write_event(
                        response,
                        "BOOKMARK",
                        {
                            "kind": target.resource.kind,
                            "apiVersion": target.resource.api_version,
                            "metadata": {"resourceVersion": str(item.resource_version)},
                        },
                    )
                    if item.last:
                        break
                    continue
                await _write_event(response, *item)
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._streams.discard(queue)
            with store.lock:
                store.unwatch(watcher)
        return response


def _bound_port(site: web.TCPSite) -> int:
    return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def _write_event(response: web.StreamResponse, event_type: str, obj: Any) -> None:
    line = json.dumps({"type": event_type, "object": obj}, separators=(",", ":")) + "\n"
    await response.write(line.encode())


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )


def _discovery(segments: list[str]) -> dict | None:
    if segments == ["version"]:
        return VERSION_INFO
    if segments in (["healthz"], ["livez"], ["readyz"]):
        return {"status": "ok"}
    if segments == ["api"]:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}
            ],
        }
    if segments == ["apis"]:
        return api_group_list()
    if (
        len(segments) == 2
        and segments[0] == "apis"
        and any(g == segments[1] for g, _ in GROUP_VERSIONS)
    ):
        return api_group(segments[1])
    if segments[:1] == ["api"] and len(segments) == 2 and ("", segments[1]) in GROUP_VERSIONS:
        return resource_list("", segments[1])
    if segments[:1] == ["apis"] and len(segments) == 3 and tuple(segments[1:]) in GROUP_VERSIONS:
        return resource_list(segments[1], segments[2])
    return None


def _target(segments: list[str]) -> _Target:
    if segments[:1] == ["api"] and len(segments) > 2:
        group, version, rest = "", segments[1], segments[2:]
    elif segments[:1] == ["apis"] and len(segments) > 3:
        group, version, rest = segments[1], segments[2], segments[3:]
    else:
        raise _not_served()
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource = find_resource(group, version, rest[0])
    if resource is None or len(rest) > 3 or (namespace and not resource.namespaced):
        raise _not_served()
    name = rest[1] if len(rest) > 1 else None
    subresource = rest[2] if len(rest) > 2 else ""
    if subresource and (subresource != "status" or not resource.has_status):
        raise _not_served()
    return _Target(resource, namespace, name, subresource)


def _not_served() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def _method_not_allowed(method: str) -> ApiError:
    return ApiError(
        405,
        "MethodNotAllowed",
        f"the server does not allow this method ({method}) on the requested resource",
        {},
    )


def _int(query, name: str) -> int | None:
    value = query.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"{name} must be an integer, not {value!r}") from None


async def _body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read() or b"null")
    except ValueError as error:
        raise bad_request(f"the request body is not JSON: {error}") from None


async def _delete_options(request: web.Request) -> dict[str, Any]:
    options = await _body(request) if request.can_read_body else None
    options = dict(options or {})
    grace = _int(request.query, "gracePeriodSeconds")
    if grace is not None:
        options["gracePeriodSeconds"] = grace
    if "propagationPolicy" in request.query:
        options["propagationPolicy"] = request.query["propagationPolicy"]
    return options


def write_kubeconfig(path: str, server: str, token: str) -> None:
    """Write a kubeconfig for ``server`` with a bearer token (JSON is valid kubeconfig YAML)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "clustersim", "cluster": {"server": server}}],
        "users": [{"name": "clustersim", "user": {"token": token}}],
        "contexts": [
            {"name": "clustersim", "context": {"cluster": "clustersim", "user": "clustersim"}}
        ],
        "current-context": "clustersim",
    }
    with open(path, "w") as handle:
        json.dump(config, handle, indent=2)

"""Fixtures that run the product for real: clustersim as the cluster and registry, an
in-process Celery worker and watcher, the ASGI site on uvicorn, and Debian's Chromium.

Chromium lives on a thread of its own, driven from the test thread through a proxy. Playwright's
sync API keeps its event loop marked as running on the thread that starts it; on that thread
Django would treat every ORM call as async code, ``async_to_sync`` (every broadcast a reconcile
tick sends) would refuse to run, and pytest-django's serialized rollback would no longer find
the test database's saved rows. So the test thread, which runs the engine, stays plain
synchronous code.
"""

import os
import queue
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from gpudev_site.celery import app
from gpudev_site.embedded import CLUSTERSIM_AWS_ENV, Background, clustersim_settings
from pool import images

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@dataclass
class Engine:
    """A product wired to a running clustersim, with a worker (and optionally the watcher)."""

    sim: object
    background: Background

    def start_watcher(self):
        """Start the watcher and wait until it holds the Lease."""
        watcher = self.background.start_watcher(identity=f"test-{os.getpid()}")
        wait_for(watcher.leading.is_set, what="the watcher to lead")
        return watcher

    def push_image(self, **kwargs) -> tuple[str, str]:
        """Push a rebuild to the registry and record it as the current release."""
        digest, tag = self.sim.push_image(**kwargs)
        images.refresh_release(now=timezone.now())
        return digest, tag


def wait_for(condition: Callable[[], object], *, timeout: float = 20, what: str = "") -> object:
    """Return the first truthy value of ``condition()``, polling for up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(0.05)


@pytest.fixture
def engine_factory(
    transactional_db, django_db_serialized_rollback, clustersim_factory, settings, monkeypatch
) -> Iterator[Callable[..., Engine]]:
    """Build the product pointed at a fresh clustersim (options as ClusterSim's), with a
    Celery worker running in-process and the sim's image recorded as the current release."""
    backgrounds: list[Background] = []

    def build(**sim_options) -> Engine:
        sim = clustersim_factory(**sim_options)
        for name, value in clustersim_settings(sim).items():
            setattr(settings, name, value)
        for name, value in CLUSTERSIM_AWS_ENV.items():
            monkeypatch.setenv(name, value)
        app.control.purge()
        background = Background()
        background.start_worker()
        backgrounds.append(background)
        images.refresh_release(now=timezone.now())
        return Engine(sim=sim, background=background)

    yield build
    for background in backgrounds:
        background.stop()


@pytest.fixture
def engine(engine_factory) -> Engine:
    """The product on a stepped clustersim (preset small) with a Celery worker."""
    return engine_factory()


@pytest.fixture
def live_server_url(transactional_db, django_db_serialized_rollback) -> Iterator[str]:
    """Serve the ASGI site (HTTP and WebSocket) with uvicorn on a free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            "gpudev_site.asgi:application",
            host="127.0.0.1",
            port=port,
            lifespan="off",
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True, name="uvicorn")
    thread.start()
    wait_for(lambda: server.started, timeout=10, what="uvicorn to start")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


WAIT_MS = 20_000


class BrowserThread:
    """Run callables on one thread that owns Playwright and Chromium."""

    def __init__(self) -> None:
        self._calls: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="playwright", daemon=True)
        self._thread.start()

    def call(self, function: Callable, *args, **kwargs) -> Any:
        """Run ``function`` on the browser thread; return its result or raise its exception."""
        future: Future = Future()
        self._calls.put((function, args, kwargs, future))
        return future.result()

    def stop(self) -> None:
        self._calls.put(None)
        self._thread.join(timeout=30)

    def _serve(self) -> None:
        while (item := self._calls.get()) is not None:
            function, args, kwargs, future = item
            try:
                future.set_result(function(*args, **kwargs))
            except BaseException as exc:  # every failure, assertions included, goes to the test
                future.set_exception(exc)


class Remote:
    """A Playwright object on the browser thread; attribute reads and calls hop to that thread."""

    def __init__(self, thread: BrowserThread, target: Any) -> None:
        object.__setattr__(self, "_thread", thread)
        object.__setattr__(self, "_target", target)

    def __getattr__(self, name: str) -> Any:
        value = self._thread.call(getattr, self._target, name)
        if callable(value):
            return lambda *args, **kwargs: self._wrap(
                self._thread.call(value, *_unwrap(args), **_unwrap(kwargs))
            )
        return self._wrap(value)

    def _wrap(self, value: Any) -> Any:
        if type(value).__module__.startswith("playwright."):
            return Remote(self._thread, value)
        if isinstance(value, list):
            return [self._wrap(item) for item in value]
        return value


def _unwrap(values):
    if isinstance(values, dict):
        return {key: _unwrap(value) for key, value in values.items()}
    if isinstance(values, (list, tuple)):
        return type(values)(_unwrap(value) for value in values)
    return object.__getattribute__(values, "_target") if isinstance(values, Remote) else values


@pytest.fixture(scope="session")
def browser_thread() -> Iterator[tuple[BrowserThread, Any]]:
    """Debian's Chromium on its own thread (never a browser Playwright downloads)."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium")
    from playwright.sync_api import expect, sync_playwright

    thread = BrowserThread()
    playwright = thread.call(lambda: sync_playwright().start())
    chromium = thread.call(
        playwright.chromium.launch,
        executable_path=str(CHROMIUM),
        args=CHROMIUM_ARGS,
        headless=True,
    )
    thread.call(expect.set_options, timeout=WAIT_MS)
    yield thread, chromium
    thread.call(chromium.close)
    thread.call(playwright.stop)
    thread.stop()


@pytest.fixture
def page(browser_thread, request) -> Iterator[Remote]:
    """A fresh page in Chromium; a screenshot of it is saved under test-artifacts/ afterwards."""
    thread, chromium = browser_thread
    context = thread.call(chromium.new_context, viewport={"width": 1360, "height": 900})
    page = thread.call(context.new_page)
    yield Remote(thread, page)
    ARTIFACTS.mkdir(exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid.split("::", 1)[-1])
    try:
        thread.call(page.screenshot, path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    finally:
        thread.call(context.close)


@pytest.fixture
def expect(browser_thread) -> Callable[[Remote], Remote]:
    """Playwright's ``expect``, run on the browser thread."""
    from playwright.sync_api import expect as playwright_expect

    thread, _ = browser_thread
    return lambda target: Remote(thread, thread.call(playwright_expect, _unwrap(target)))


def sign_in(page, base_url: str, user: User) -> None:
    """Give the browser a signed-in session for ``user`` (the sign-in form has its own test)."""
    client = Client()
    client.force_login(user)
    page.context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": base_url}]
    )

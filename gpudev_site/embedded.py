"""Run the background processes inside this one: a Celery worker, Celery beat, the watcher.

Production runs each as its own process (deploy/); the embedded default (``manage.py demo``)
and the integration tests run them as threads, on the same code paths. A worker runs in a thread
as a ``WorkController`` (Celery's ``Worker`` would install signal handlers, which only the main
thread may do), on a thread pool because spawn tasks spend their time waiting on the API.
"""

import logging
import threading
from functools import partial

from celery.beat import EmbeddedService
from celery.worker import state as worker_state
from django.db import connection

from gpudev_site.celery import app
from pool import spawner
from pool.watcher import LEASE_SECONDS, LeaderElection, Watcher

logger = logging.getLogger(__name__)

WORKER_START_TIMEOUT = 60
STOP_TIMEOUT = 40


class Background:
    """The worker, beat and watcher threads of one process; start what you need, then stop."""

    def __init__(self) -> None:
        self._workers: list = []
        self._beat = None
        self._watchers: list[Watcher] = []
        self._threads: list[threading.Thread] = []

    def start_worker(self, *, concurrency: int = 16) -> None:
        """Start a worker thread and return once it consumes tasks.

        Waiting matters: a ``WorkController`` stopped before it finished starting takes the
        stop for a no-op and then runs on, consuming the queue with nobody to stop it.
        """
        spawner.allow_waits()
        worker_state.should_stop = None
        consuming = threading.Event()
        worker = app.WorkController(
            pool_cls="threads",
            concurrency=concurrency,
            hostname=f"embedded-{id(self)}-{len(self._workers)}@gpudev",
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            # Each worker drains its own connection. kombu's event loop is one per process, so
            # two workers of one process on it would poll the same sockets, and one would block
            # reading a reply the other already took.
            use_eventloop=False,
            ready_callback=lambda consumer: consuming.set(),
        )
        self._workers.append(worker)
        self._spawn(worker.start, "celery-worker")
        if not consuming.wait(WORKER_START_TIMEOUT):
            raise RuntimeError(
                f"the embedded Celery worker did not start within {WORKER_START_TIMEOUT} s; "
                "is the broker reachable?"
            )

    def start_beat(self) -> None:
        self._beat = EmbeddedService(app, thread=True)
        self._beat.start()

    def start_watcher(
        self, identity: str = "embedded", *, lease_seconds: int = LEASE_SECONDS, **options
    ) -> Watcher:
        watcher = Watcher(LeaderElection(identity, lease_seconds=lease_seconds), **options)
        self._watchers.append(watcher)
        self._spawn(watcher.run, f"watcher-{identity}")
        return watcher

    def stop(self) -> None:
        """Stop everything started; one part failing to stop never keeps the others running.

        Workers are asked to stop through Celery's own shutdown flag, which each worker's loop
        checks, so every worker shuts down in its own thread: a ``WorkController`` stopped from
        another thread closes its broker channel there and waits forever for the reply to a
        BRPOP its own loop already read. The flag is process-wide: this stops every embedded
        worker of the process, and is cleared again once they have stopped.
        """
        steps = [watcher.stop for watcher in self._watchers]
        if self._beat is not None:
            steps.append(self._beat.stop)
        if self._workers:
            steps += [spawner.interrupt_waits, partial(setattr, worker_state, "should_stop", 0)]
        for step in steps:
            try:
                step()
            except Exception:
                logger.exception("stopping %s failed", step)
        for thread in self._threads:
            thread.join(timeout=STOP_TIMEOUT)
        running = [thread.name for thread in self._threads if thread.is_alive()]
        if running:
            logger.error("still running %s s after the stop: %s", STOP_TIMEOUT, running)
        elif self._workers:
            worker_state.should_stop = None

    def _spawn(self, target, name: str) -> None:
        def run() -> None:
            try:
                target()
            except Exception:
                logger.exception("%s stopped with an error", name)
            finally:
                connection.close()

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)


def clustersim_settings(sim) -> dict:
    """Return the settings that point the product at a running clustersim."""
    return {
        "KUBECONFIG": str(sim.kubeconfig_path),
        "ECR_ENDPOINT_URL": sim.registry_endpoint_url,
        "IMAGE_REPOSITORY": sim.image_repo,
        "REGISTRY_KIND": "ecr",
    }


# boto3 insists on credentials even for clustersim's registry, which accepts any.
CLUSTERSIM_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "clustersim",
    "AWS_SECRET_ACCESS_KEY": "clustersim",
    "AWS_DEFAULT_REGION": "us-east-1",
}

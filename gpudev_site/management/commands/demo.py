"""Run the whole product in one process on the embedded default (see bin/demo).

It starts clustersim (a simulated GPU cluster with an ECR registry, on a fast clock), points
the product at it, gives a few pools non-zero targets and a short max age, runs the Celery
worker, beat and the watcher as threads, pushes an image rebuild now and then, and serves the
site with uvicorn. Everything stops with Ctrl-C.
"""

import os
import threading

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from gpudev_site.embedded import CLUSTERSIM_AWS_ENV, Background, clustersim_settings
from pool.models import Pool
from pool.tasks import reconcile_pools, refresh_image_release

# (GPU type, warm target) for a first run; max age short enough to watch pods age out.
DEMO_TARGETS = [("h100", 3), ("h200", 2), ("b200", 1), ("cpu-x86", 2)]
DEMO_MAX_AGE_HOURS = 0.25


class Command(BaseCommand):
    help = "Serve gpudev with everything it needs in this one process (embedded default)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--preset", default="seed", help="clustersim preset (seed, small)")
        parser.add_argument("--speed", type=float, default=30.0, help="simulated clock speed")
        parser.add_argument(
            "--rebuild-every", type=float, default=300.0, help="seconds between image rebuilds"
        )

    def handle(self, *args, host, port, preset, speed, rebuild_every, **options) -> None:
        if not settings.EMBEDDED:
            raise CommandError("demo runs the embedded default; unset DATABASE_URL to use it.")
        from clustersim import ClusterSim

        sim = ClusterSim(preset=preset, seed=7, speed=speed)
        sim.start()
        for name, value in clustersim_settings(sim).items():
            setattr(settings, name, value)
        for name, value in CLUSTERSIM_AWS_ENV.items():
            os.environ.setdefault(name, value)
        sim.push_image()
        self._seed_demo_targets()
        background = Background()
        background.start_worker()
        background.start_beat()
        background.start_watcher()
        # Beat would first run these a period from now; a newcomer should see pools fill now.
        refresh_image_release.delay()
        reconcile_pools.delay()
        stop_rebuilds = threading.Event()
        threading.Thread(
            target=self._rebuild_now_and_then,
            args=(sim, rebuild_every, stop_rebuilds),
            daemon=True,
            name="demo-rebuilds",
        ).start()
        self.stdout.write(
            f"gpudev is up: http://{host}:{port}/  (clustersim {preset} at {speed:g}x on "
            f"{sim.api_url}; push a rebuild: .venv/bin/python -m clustersim push "
            f"--url {sim.api_url})  Ctrl-C stops everything."
        )
        try:
            uvicorn.Server(
                uvicorn.Config("gpudev_site.asgi:application", host=host, port=port, lifespan="off")
            ).run()
        finally:
            stop_rebuilds.set()
            background.stop()
            sim.stop()

    def _seed_demo_targets(self) -> None:
        if Pool.objects.filter(target__gt=0).exists():
            return
        for gpu_type, target in DEMO_TARGETS:
            Pool.objects.filter(gpu_type__name=gpu_type, profile="default").update(
                target=target, max_age_hours=DEMO_MAX_AGE_HOURS
            )
        self.stdout.write(
            "demo pools: " + ", ".join(f"{name} {target}" for name, target in DEMO_TARGETS)
        )

    def _rebuild_now_and_then(self, sim, every: float, stop: threading.Event) -> None:
        while not stop.wait(every):
            digest, tag = sim.push_image()
            self.stdout.write(f"demo: pushed a rebuild {tag} ({digest[:19]})")
        connection.close()

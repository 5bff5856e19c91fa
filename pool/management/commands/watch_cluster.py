"""Run the cluster watcher: mirror our pods, nodes and the prepuller into the database."""

import signal

from django.conf import settings
from django.core.management.base import BaseCommand

from gpudev_site.metrics import worker_metrics_server
from pool.watcher import LeaderElection, Watcher


class Command(BaseCommand):
    help = "Watch the cluster and keep the mirror tables in step (one leader via a Lease)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--identity", help="Lease holder identity (default: host-pid).")

    def handle(self, *args, identity: str | None = None, **options) -> None:
        watcher = Watcher(LeaderElection(identity))
        signal.signal(signal.SIGTERM, lambda *_: watcher.stop())
        signal.signal(signal.SIGINT, lambda *_: watcher.stop())
        if settings.METRICS_PORT:
            worker_metrics_server(settings.METRICS_PORT)
        self.stdout.write(f"watcher {watcher.election.identity}: contending for the Lease")
        watcher.run()

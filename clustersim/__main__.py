"""Run a simulated cluster, or push an image rebuild to one that is running.

python -m clustersim --preset seed --speed 60 --kubeconfig /tmp/clustersim.kubeconfig
python -m clustersim push --url http://127.0.0.1:PORT --size-gb 27
"""

import argparse
import json
import signal
import sys
import threading
import urllib.request

from clustersim import presets
from clustersim.admin import PREFIX
from clustersim.sim import ClusterSim


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen command."""
    args = _parser().parse_args(argv)
    if args.command == "push":
        return _push(args)
    return _run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clustersim",
        description="Run a simulated GPU cluster, or push an image rebuild to a running one.",
    )
    parser.add_argument("--preset", default="small", choices=sorted(presets.PRESETS))
    parser.add_argument(
        "--nodes",
        type=presets.parse_node_counts,
        default={},
        metavar="TYPE=N,...",
        help=f"node counts per type, over the preset's ({', '.join(presets.NODE_TYPES)})",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="sim-seconds per real second; 0 leaves the clock to the admin API's step",
    )
    parser.add_argument("--port", type=int, default=0, help="API server port (default: a free one)")
    parser.add_argument("--kubeconfig", metavar="PATH", help="where to write the kubeconfig")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--provision-delay",
        type=float,
        metavar="SECONDS",
        help="let unschedulable pods bring new nodes of their type after this delay",
    )
    parser.add_argument(
        "--provision-max",
        type=int,
        metavar="N",
        help="nodes per type that provisioning may grow to (default: twice the preset's, >= 2)",
    )
    commands = parser.add_subparsers(dest="command")
    push = commands.add_parser("push", help="push an image rebuild to a running sim")
    push.add_argument("--url", required=True, help="the sim's API URL, http://127.0.0.1:PORT")
    push.add_argument("--size-gb", type=float, help="image size (default: the preset's)")
    push.add_argument("--context-hash", help="8 hex characters for the latest-<hash> tag")
    push.add_argument(
        "--changed-fraction",
        type=float,
        default=0.3,
        help="share of the image's bytes in new layers (default 0.3)",
    )
    return parser


def _run(args: argparse.Namespace) -> int:
    sim = ClusterSim(
        args.preset,
        seed=args.seed,
        speed=args.speed or None,
        nodes=args.nodes,
        port=args.port,
        kubeconfig_path=args.kubeconfig,
    )
    if args.provision_delay is not None:
        for node_type, count in sim.preset.nodes.items():
            cap = args.provision_max if args.provision_max is not None else max(2 * count, 2)
            sim.set_provisioning(node_type, args.provision_delay, cap)
    sim.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(
        f"clustersim {sim.preset.name} (seed {args.seed}, "
        f"{'stepped clock' if not args.speed else f'{args.speed:g}x'})\n"
        f"  API:        {sim.api_url}\n"
        f"  kubeconfig: {sim.kubeconfig_path}\n"
        f"  registry:   {sim.registry_endpoint_url}  (boto3 endpoint_url, region us-east-1)\n"
        f"  image:      {sim.image_repo}\n"
        f"  admin:      {sim.admin_url}{PREFIX}/state  (also on the API port)\n"
        "Ctrl-C stops it.",
        flush=True,
    )
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


def _push(args: argparse.Namespace) -> int:
    options = {"changed_fraction": args.changed_fraction}
    if args.size_gb is not None:
        options["size_gb"] = args.size_gb
    if args.context_hash:
        options["context_hash"] = args.context_hash
    request = urllib.request.Request(
        f"{args.url.rstrip('/')}{PREFIX}/push",
        data=json.dumps(options).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        pushed = json.load(response)
    print(f"pushed {pushed['image']} ({pushed['digest']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

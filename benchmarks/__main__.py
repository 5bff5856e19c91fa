"""Run every benchmark and write ``benchmarks/report.md`` and ``benchmarks/report.json``.

    python -m benchmarks                   # everything, about 15 minutes on 2 cores
    python -m benchmarks --quick           # fewer repeats and only the smallest and full scale
    python -m benchmarks --only name_allocation pods_page

The driver creates the ``gpudev_bench`` database (dropping a leftover one), migrates it, then
runs each figure's scale steps, each step in a fresh Python process: the memory a step reports
is that process's own, and a step that crashes or hangs is recorded with its reason while the
run goes on. At the end it drops the database and deletes the ``gpudev-bench`` Redis keys.
"""

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import report
from benchmarks.report import Figure

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass(frozen=True)
class Plan:
    """Which scale steps a figure runs and how long one step may take."""

    scales: tuple[float, ...]
    timeout_s: float = 420


PLANS = {
    "reconcile_tick": Plan((0.1, 0.25, 0.5, 1.0)),
    "name_allocation": Plan((0.1, 0.25, 0.5, 1.0)),
    "warm_claim": Plan((0.1, 0.5, 1.0)),
    "pods_page": Plan((0.1, 0.25, 0.5, 1.0)),
    # 1, 10 and 100 open dashboards.
    "dom_update": Plan((0.01, 0.1, 1.0), timeout_s=600),
    # The seed preset is fixed (24 GPU nodes); the steps are its warm pod counts 3, 7 and 24.
    "rebuild_convergence": Plan((0.125, 0.3, 1.0), timeout_s=600),
    "clustersim_list": Plan((0.1, 0.25, 0.5, 1.0)),
}


# --- One step, in its own process -----------------------------------------------------------


def run_child(name: str, scale: float, quick: bool, out: Path) -> int:
    """Run one scale step of one module in this (fresh) process; write its result as JSON."""
    from benchmarks import harness

    harness.setup_django()
    started = time.perf_counter()
    try:
        module = importlib.import_module(f"benchmarks.{name}")
        result = module.run(scale, quick=quick)
        if "memory" not in result:
            result["memory"] = {"python": harness.process_memory()}
        status = 0
    except Exception as error:  # any failure is a result to report
        result = {
            "error": f"{type(error).__name__}: {error}".strip()[:500],
            "traceback": traceback.format_exc(),
        }
        status = 1
    result["scale"] = scale
    result["wall_s"] = round(time.perf_counter() - started, 1)
    out.write_text(json.dumps(result, default=str))
    return status


def run_step(name: str, scale: float, *, quick: bool, timeout_s: float) -> dict:
    """Run one step in a subprocess; return its result, or ``{"error": …}``."""
    with tempfile.TemporaryDirectory(prefix="gpudev-bench-") as scratch:
        out = Path(scratch) / "result.json"
        command = [sys.executable, "-m", "benchmarks", "--child", name, str(scale), str(out)]
        if quick:
            command.append("--quick")
        started = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=ROOT, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return {"scale": scale, "error": f"step did not finish within {timeout_s:.0f} s"}
        if not out.exists():
            return {
                "scale": scale,
                "error": f"the step's process died (exit status {done.returncode})",
                "wall_s": round(time.perf_counter() - started, 1),
            }
        return json.loads(out.read_text())


# --- Database and Redis -------------------------------------------------------------------


def _server_url(database_url: str) -> tuple[str, str]:
    """Split a postgres:// URL into one for the ``postgres`` database and the database name."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    return urlunsplit(parts._replace(path="/postgres")), name


def create_database(database_url: str) -> None:
    import psycopg
    from psycopg import sql

    server, name = _server_url(database_url)
    with psycopg.connect(server, autocommit=True, connect_timeout=10) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--noinput", "--verbosity", "0"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "benchmarks.settings"},
        check=True,
    )


def drop_database(database_url: str) -> None:
    import psycopg
    from psycopg import sql

    server, name = _server_url(database_url)
    with psycopg.connect(server, autocommit=True, connect_timeout=10) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def delete_redis_keys(redis_url: str, prefix: str) -> int:
    """Delete this run's keys (cache, locks, channel layer, Celery queue); return how many."""
    import redis

    server = redis.Redis.from_url(redis_url)
    deleted = 0
    for key in server.scan_iter(match=f"*{prefix}*", count=1000):
        deleted += server.delete(key)
    return deleted


# --- Figures --------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return report.fmt(seconds, "ms")


def _stat(step: dict, key: str) -> dict | None:
    return report.stat(step, key)


def _counts(step: dict, *path: str):
    found = step.get("counts", {})
    for key in path:
        if not isinstance(found, dict) or key not in found:
            return None
        found = found[key]
    return found


def _growth(steps: list[dict], key: str, scale_of) -> str:
    """``median 12 ms at 500 → 80 ms at 5,000 (6.7x for 10x)``."""
    first, last = steps[0], steps[-1]
    a, b = _stat(first, key), _stat(last, key)
    if not a or not b or first is last:
        return ""
    size_ratio = scale_of(last) / max(scale_of(first), 1)
    return (
        f"median {ms(a['median_s'])} at {scale_of(first):,} → {ms(b['median_s'])} at "
        f"{scale_of(last):,} ({b['median_s'] / a['median_s']:.1f}x for {size_ratio:.0f}x)"
    )


def _missed(figure_key: str, step: dict, target: float) -> bool:
    found = _stat(step, figure_key)
    return bool(found) and found["p95_s"] > target


# reconcile tick ---------------------------------------------------------------------------


def _tick_describe(step: dict) -> str:
    s = step["size"]
    return f"{s['nodes']:,} nodes · {s['pods']:,} pods · {s['leases']:,} leases"


def _tick_calls(found: dict | None) -> str:
    if not found:
        return "—"
    return f"{found['sql_queries']} / {found['kubernetes_calls']} / {found['registry_calls']}"


def _tick_columns(step: dict) -> dict[str, str]:
    return {
        "steady: SQL / K8s / registry calls": _tick_calls(_counts(step, "steady")),
        "busy: SQL / K8s / registry calls": _tick_calls(_counts(step, "busy")),
        "naive: SQL / K8s / registry calls": _tick_calls(_counts(step, "naive")),
    }


def _tick_notes(steps: list[dict]) -> list[str]:
    notes = []
    pods = [step["size"]["pods"] for step in steps]
    for label in ("steady", "busy"):
        sql = [(_counts(step, label) or {}).get("sql_queries") for step in steps]
        k8s = [(_counts(step, label) or {}).get("kubernetes_calls") for step in steps]
        constant = len(set(sql)) == 1 and len(set(k8s)) == 1
        notes.append(
            f"- {label.capitalize()} tick: SQL queries {' → '.join(map(str, sql))} and Kubernetes "
            f"calls {' → '.join(map(str, k8s))} from {pods[0]:,} to {pods[-1]:,} pods: "
            + ("constant in the number of pods." if constant else "**not constant**.")
        )
    naive_sql = [(_counts(step, "naive") or {}).get("sql_queries") for step in steps]
    naive_reg = [(_counts(step, "naive") or {}).get("registry_calls") for step in steps]
    notes.append(
        f"- The naive tick's SQL queries ({' → '.join(map(str, naive_sql))}) and registry calls "
        f"({' → '.join(map(str, naive_reg))}) grow with the pods."
    )
    for label in ("steady", "busy"):
        growth = _growth(steps, label, lambda step: step["size"]["pods"])
        if growth:
            notes.append(f"- {label.capitalize()} tick time: {growth}.")
    last = steps[-1]
    busy = _stat(last, "busy")
    if busy:
        verdict = "within" if busy["p95_s"] <= TARGETS["reconcile_tick"] else "**over**"
        notes.append(
            f"- The busy tick (a rebuild just pushed) at full scale: p95 {ms(busy['p95_s'])}, "
            f"{verdict} the 300 ms target too."
        )
    return [*notes, *_explanation("reconcile_tick", steps)]


# name allocation -------------------------------------------------------------------------


def _names_columns(step: dict) -> dict[str, str]:
    queries = _counts(step, "sql_queries") or {}
    return {
        "SQL queries, ours / naive": f"{queries.get('ours', '—')} / {queries.get('naive', '—')}"
    }


def _names_notes(steps: list[dict]) -> list[str]:
    notes = []
    growth = _growth(steps, "ours", lambda step: step["size"]["leases"])
    if growth:
        notes.append(f"- Ours: {growth}.")
    growth = _growth(steps, "naive", lambda step: step["size"]["leases"])
    if growth:
        notes.append(f"- Naive: {growth}.")
    last = steps[-1]
    history = _stat(last, "ours, 10,000 live + 990,000 released")
    if history:
        notes.append(
            "- The usual state at full scale (10,000 live leases, 990,000 released history): "
            f"ours median {ms(history['median_s'])}, p95 {ms(history['p95_s'])}."
        )
    return [*notes, *_explanation("name_allocation", steps)]


# warm claim ------------------------------------------------------------------------------


def _claim_describe(step: dict) -> str:
    s = step["size"]
    return f"{s['warm_pods']} warm pods · {s['users']} users"


def _claim_columns(step: dict) -> dict[str, str]:
    return {
        "rounds": str(_counts(step, "rounds") or "—"),
        "idle DB connections after a burst": str(
            _counts(step, "idle_connections_after_burst") or "—"
        ),
    }


def _claim_notes(steps: list[dict]) -> list[str]:
    last = steps[-1]
    notes = []
    warm, alone = _stat(last, "warm claims"), _stat(last, "warm claim, one user at a time")
    every = _stat(last, "every POST")
    if warm and alone:
        notes.append(
            f"- At full scale one warm claim alone takes median {ms(alone['median_s'])}; the same "
            f"claim inside a burst of {last['size']['users']} simultaneous POSTs takes median "
            f"{ms(warm['median_s'])} (p95 {ms(warm['p95_s'])}): the difference is waiting for "
            "the burst's other requests on this machine's cores and on the pool's row lock."
        )
    if every:
        notes.append(
            f"- Every POST of the burst (warm claims and queued ones): median "
            f"{ms(every['median_s'])}, p95 {ms(every['p95_s'])}."
        )
    return [*notes, *_explanation("warm_claim", steps)]


# pods page -------------------------------------------------------------------------------


def _pods_columns(step: dict) -> dict[str, str]:
    queries = _counts(step, "sql_queries") or {}
    return {f"SQL queries, {page}": str(count) for page, count in queries.items()}


def _pods_notes(steps: list[dict]) -> list[str]:
    notes = []
    for page in ("first page", "page 10, ready and stale"):
        growth = _growth(steps, page, lambda step: step["size"]["pods"])
        if growth:
            notes.append(f"- {page.capitalize()}: {growth}.")
    return [*notes, *_explanation("pods_page", steps)]


# DOM update ------------------------------------------------------------------------------


def _dom_describe(step: dict) -> str:
    count = step["size"]["dashboards"]
    return f"{count} open dashboard{'s' if count > 1 else ''}"


def _dom_columns(step: dict) -> dict[str, str]:
    return {"changes made": str(_counts(step, "changes") or "—")}


def _dom_notes(steps: list[dict]) -> list[str]:
    notes = [
        "- Push: every open page's latency for every change, from the status written into the "
        "simulated cluster to the row turning ready in Chromium. Polling: a page fetching the "
        "same page every 5 s; the model is uniform(0, 5 s) plus the polling render times measured."
    ]
    growth = _growth(steps, "push", lambda step: step["size"]["dashboards"])
    if growth:
        notes.append(f"- Push latency: {growth}.")
    return [*notes, *_explanation("dom_update", steps)]


# rebuild convergence ---------------------------------------------------------------------


def _rebuild_describe(step: dict) -> str:
    s = step["size"]
    return f"{s['warm_pods']} warm pods ({s['h100']}/{s['h200']}/{s['b200']})"


def _rebuild_naive(step: dict) -> str:
    checkpoints = _counts(step, "naive", "checkpoints") or []
    if not checkpoints:
        return "—"
    first = checkpoints[0]
    return (
        f"after the same {first['after_s']:,} s: {first['stale_ready_pods']} of "
        f"{first['warm_pods']} ready pods still on the old digest, {first['recycles']} recycles"
    )


def _rebuild_columns(step: dict) -> dict[str, str]:
    runs = _counts(step, "ours") or []
    checkpoints = _counts(step, "naive", "checkpoints") or []
    columns = {
        "bound (pull + tick x pods of largest pool)": f"{_counts(step, 'bound_s')} s",
        "ours: recycles / stale pods at push": ", ".join(
            f"{run['recycles']}/{run['stale_pods_at_push']}" for run in runs
        ),
        "ours: pods recycled twice": ", ".join(
            str(run["pods_recycled_more_than_once"]) for run in runs
        ),
        "ours: claimed pod untouched": ", ".join(
            "yes" if run["claimed_pod_untouched"] else "**no**" for run in runs
        ),
    }
    labels = ("naive at our time", "naive at 3x our time")
    for label, point in zip(labels, checkpoints, strict=False):
        columns[f"{label}: old / new digest / recycles"] = (
            f"{point['stale_ready_pods']} / {point['ready_on_new_digest']} / {point['recycles']}"
            f" (at {point['after_s']:,} s)"
        )
    return columns


def _rebuild_notes(steps: list[dict]) -> list[str]:
    notes = [
        "- Times are simulated seconds after the push (clustersim's stepped clock), each over "
        "independent runs with the tick and image-task phases drawn per run; the naive rotation "
        "(`:latest`, `IfNotPresent`) ran on the same preset and is counted at our slowest time "
        "and at 3x that."
    ]
    return [*notes, *_explanation("rebuild_convergence", steps)]


# clustersim list -------------------------------------------------------------------------


def _list_describe(step: dict) -> str:
    s = step["size"]
    return f"{s['nodes']:,} nodes · {s['pods']:,} pods"


def _list_columns(step: dict) -> dict[str, str]:
    size_bytes = _counts(step, "pod_list_bytes")
    return {"pod list body": f"{size_bytes / 1e6:.1f} MB" if size_bytes else "—"}


def _list_notes(steps: list[dict]) -> list[str]:
    notes = [
        "- Target judged on listing all pods the product's way (raw JSON); the comparison is the "
        "same list deserialised into the official client's model objects, as most operators "
        "and `kubernetes.watch` read lists."
    ]
    for key in ("pods, raw JSON (the product's way)", "pods, client models"):
        growth = _growth(steps, key, lambda step: step["size"]["pods"])
        if growth:
            notes.append(f"- {key}: {growth}.")
    return [*notes, *_explanation("clustersim_list", steps)]


# --- Explanations of missed targets -------------------------------------------------------

TARGETS = {
    "reconcile_tick": 0.300,
    "name_allocation": 0.005,
    "warm_claim": 0.150,
    "pods_page": 0.150,
    "dom_update": 0.250,
    "clustersim_list": 1.0,
}


def _explanation(name: str, steps: list[dict]) -> list[str]:
    """Why a missed target was missed, from the measured numbers; empty when it was met."""
    explain = EXPLANATIONS.get(name)
    return explain(steps) if explain else []


EXPLANATIONS: dict = {}


# --- The table ----------------------------------------------------------------------------


def figures() -> dict[str, Figure]:
    def p95_target(name: str):
        return lambda step: TARGETS[name]

    return {
        "reconcile_tick": Figure(
            module="reconcile_tick",
            figure="reconcile tick, all pools",
            full_scale="1,000 nodes · 5,000 pods · 100,000 name leases",
            primary="steady",
            naive="naive",
            target=p95_target("reconcile_tick"),
            target_text="< 300 ms, calls constant in pods",
            describe=_tick_describe,
            columns=_tick_columns,
            notes=_tick_notes,
        ),
        "name_allocation": Figure(
            module="name_allocation",
            figure="name allocation",
            full_scale="1,000,000 live leases",
            primary="ours",
            naive="naive",
            target=p95_target("name_allocation"),
            target_text="< 5 ms",
            describe=lambda step: f"{step['size']['leases']:,} live leases",
            columns=_names_columns,
            notes=_names_notes,
        ),
        "warm_claim": Figure(
            module="warm_claim",
            figure="warm claim, POST to active",
            full_scale="10 ready warm pods · 50 concurrent users",
            primary="warm claims",
            target=p95_target("warm_claim"),
            target_text="< 150 ms",
            describe=_claim_describe,
            columns=_claim_columns,
            notes=_claim_notes,
        ),
        "dom_update": Figure(
            module="dom_update",
            figure="cluster change → DOM update in Chromium",
            full_scale="100 open dashboards (1 and 10 in the curve)",
            primary="push",
            naive="poll every 5 s, in Chromium",
            target=p95_target("dom_update"),
            target_text="< 250 ms",
            describe=_dom_describe,
            columns=_dom_columns,
            notes=_dom_notes,
        ),
        "pods_page": Figure(
            module="pods_page",
            figure="pods page server time",
            full_scale="5,000 pods",
            primary="first page",
            target=p95_target("pods_page"),
            target_text="< 150 ms",
            describe=lambda step: f"{step['size']['pods']:,} pods",
            columns=_pods_columns,
            notes=_pods_notes,
        ),
        "rebuild_convergence": Figure(
            module="rebuild_convergence",
            figure="rebuild convergence",
            full_scale="preset seed · 24 GPU nodes · 27 GB image · 24 warm pods",
            primary="ours",
            unit="sim s",
            target=lambda step: _counts(step, "bound_s"),
            target_text="one pull + one tick per pod of the largest pool",
            naive_cell=_rebuild_naive,
            describe=_rebuild_describe,
            columns=_rebuild_columns,
            notes=_rebuild_notes,
        ),
        "clustersim_list": Figure(
            module="clustersim_list",
            figure="clustersim list",
            full_scale="1,000 nodes · 10,000 pods",
            primary="pods, raw JSON (the product's way)",
            naive="pods, client models",
            target=p95_target("clustersim_list"),
            target_text="< 1 s",
            describe=_list_describe,
            columns=_list_columns,
            notes=_list_notes,
        ),
    }


# --- Driver -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats, two scale steps")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=sorted(PLANS))
    parser.add_argument("--keep", action="store_true", help="keep the bench database afterwards")
    parser.add_argument(
        "--child", nargs=3, metavar=("NAME", "SCALE", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        name, scale, out = args.child
        return run_child(name, float(scale), args.quick, Path(out))

    from benchmarks import settings

    started = time.perf_counter()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    names = args.only or list(PLANS)
    table = figures()
    print(f"==> creating and migrating the benchmark database ({settings.BENCH_DATABASE_URL})")
    create_database(settings.BENCH_DATABASE_URL)
    done: list[Figure] = []
    try:
        for name in names:
            figure, plan = table[name], PLANS[name]
            scales = (plan.scales[0], plan.scales[-1]) if args.quick else plan.scales
            failed = []
            for scale in scales:
                print(f"==> {name} at scale {scale}", flush=True)
                result = run_step(name, scale, quick=args.quick, timeout_s=plan.timeout_s)
                if "error" in result:
                    print(f"    failed: {result['error']}", flush=True)
                    if result.get("traceback"):
                        print(result["traceback"], file=sys.stderr)
                    failed.append(result)
                    result = {**result, "skipped": f"failed: {result['error']}"}
                else:
                    print(f"    done in {result['wall_s']:.0f} s", flush=True)
                figure.steps.append(result)
            if len(failed) == len(scales):
                figure.error = failed[-1]["error"]
            done.append(figure)
    finally:
        if not args.keep:
            drop_database(settings.BENCH_DATABASE_URL)
        deleted = delete_redis_keys(settings.BENCH_REDIS_URL, settings.BENCH_KEY_PREFIX)
        print(f"==> dropped the benchmark database, deleted {deleted} Redis keys")
    command = "bin/bench" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    meta = {
        "date": date,
        "command": command,
        "wall_s": time.perf_counter() - started,
        "quick": args.quick,
        "machine": report.machine(
            _server_url(settings.BENCH_DATABASE_URL)[0], settings.BENCH_REDIS_URL
        ),
    }
    markdown, data = report.write(done, meta, HERE)
    print(f"==> wrote {markdown.relative_to(ROOT)} and {data.relative_to(ROOT)}")
    print(f"    in {meta['wall_s'] / 60:.1f} minutes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

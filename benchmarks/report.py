"""Summarise benchmark results and write ``report.md`` and ``report.json``.

Each benchmark module returns, per scale step, ``samples`` (lists of seconds), ``counts`` and
``memory``; this module turns them into medians and 95th percentiles, the headline table
(each figure at full scale against its target and its naive comparison), a cost curve per
figure, the memory at full scale, and the machine the numbers came from.
"""

import json
import os
import platform
import statistics
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def p95(samples: list[float]) -> float:
    """The 95th percentile by nearest rank (the largest sample below 20 samples)."""
    ordered = sorted(samples)
    return ordered[max(0, -(-95 * len(ordered) // 100) - 1)]


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "median_s": statistics.median(samples),
        "p95_s": p95(samples),
        "min_s": min(samples),
        "max_s": max(samples),
    }


@dataclass
class Figure:
    """One row of the issue's table: how it is shown and judged."""

    module: str
    figure: str
    full_scale: str
    primary: str
    naive: str | None = None
    # The naive comparison's table cell when it is not a timing (e.g. counts after a time).
    naive_cell: Callable[[dict], str] | None = None
    unit: str = "ms"
    target: Callable[[dict], float | None] | None = None
    target_text: str = ""
    describe: Callable[[dict], str] = lambda step: ""
    columns: Callable[[dict], dict[str, str]] = lambda step: {}
    notes: Callable[[list[dict]], list[str]] = lambda steps: []
    steps: list[dict] = field(default_factory=list)
    error: str = ""


def fmt(seconds: float | None, unit: str) -> str:
    """``0.0123`` → ``12.3 ms``; sim seconds as ``366 s``."""
    if seconds is None:
        return "—"
    if unit == "sim s":
        return f"{seconds:,.0f} s"
    ms = seconds * 1000
    if ms >= 10_000:
        return f"{seconds:,.1f} s"
    return f"{ms:,.1f} ms" if ms < 100 else f"{ms:,.0f} ms"


def stat(step: dict, key: str) -> dict | None:
    samples = step.get("samples", {}).get(key)
    return summary(samples) if samples else None


def cell(step: dict, key: str, unit: str) -> str:
    found = stat(step, key)
    if found is None:
        return "—"
    return f"{fmt(found['median_s'], unit)} / {fmt(found['p95_s'], unit)} (n={found['n']})"


def verdict(figure: Figure, step: dict) -> tuple[str, float | None]:
    if figure.target is None:
        return "", None
    target = figure.target(step)
    found = stat(step, figure.primary)
    if target is None or found is None:
        return "", target
    return ("met" if found["p95_s"] <= target else "**missed**"), target


# --- Machine ------------------------------------------------------------------------------


def machine(database_url: str, redis_url: str) -> dict[str, str]:
    """Describe the machine and the servers the numbers came from."""
    import psycopg
    import redis

    cpu = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    with open("/proc/meminfo") as meminfo:
        total_kb = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
    with psycopg.connect(database_url, connect_timeout=5) as connection:
        postgres = connection.execute("SHOW server_version").fetchone()[0]
        max_connections = connection.execute("SHOW max_connections").fetchone()[0]
    redis_version = redis.Redis.from_url(redis_url).info("server")["redis_version"]
    try:
        chromium = subprocess.run(
            ["/usr/bin/chromium", "--version"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except OSError:
        chromium = "not installed"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": f"{total_kb / 1024**2:.1f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgresql": f"{postgres} (max_connections {max_connections})",
        "redis": redis_version,
        "chromium": chromium or "unknown",
    }


# --- Writing ------------------------------------------------------------------------------


def to_json(figures: list[Figure], meta: dict) -> dict:
    out = {**meta, "figures": []}
    for figure in figures:
        steps = []
        for step in figure.steps:
            summarised = {k: v for k, v in step.items() if k != "samples"}
            summarised["stats"] = {
                key: summary(samples) for key, samples in step.get("samples", {}).items() if samples
            }
            mark, target = verdict(figure, step)
            summarised["target_p95_s"] = target
            summarised["verdict"] = mark.strip("*")
            steps.append(summarised)
        out["figures"].append(
            {
                "module": figure.module,
                "figure": figure.figure,
                "full_scale": figure.full_scale,
                "unit": figure.unit,
                "primary": figure.primary,
                "naive": figure.naive,
                "error": figure.error,
                "steps": steps,
            }
        )
    return out


def to_markdown(figures: list[Figure], meta: dict) -> str:
    m = meta["machine"]
    lines = [
        "# gpudev benchmarks",
        "",
        f"Run on {meta['date']} with `{meta['command']}` in {meta['wall_s'] / 60:.1f} minutes, "
        f"on {m['cpu']} ({m['cores']} cores, {m['ram']} RAM), Python {m['python']}, "
        f"PostgreSQL {m['postgresql']}, Redis {m['redis']}, {m['chromium']}. "
        "Medians and 95th percentiles (nearest rank) over repeated runs; each figure's naive "
        "comparison ran in the same run, on the same machine, against the same data.",
        "",
        "## Figures at full scale",
        "",
        "| figure | scale | median | p95 | target (p95) | | naive way, median / p95 "
        "| naive ÷ ours |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for figure in figures:
        if figure.error or not figure.steps:
            lines.append(
                f"| {figure.figure} | {figure.full_scale} | — | — | {figure.target_text} | "
                f"not measured: {figure.error or 'no result'} | — | — |"
            )
            continue
        step = figure.steps[-1]
        if "skipped" in step:
            lines.append(
                f"| {figure.figure} | {figure.full_scale} | — | — | {figure.target_text} | "
                f"not measured: {step['skipped']} | — | — |"
            )
            continue
        ours = stat(step, figure.primary)
        mark, target = verdict(figure, step)
        naive = stat(step, figure.naive) if figure.naive else None
        ratio = f"{naive['median_s'] / ours['median_s']:,.0f}x" if naive and ours else "—"
        target_cell = figure.target_text or "—"
        if target is not None and figure.unit == "sim s":
            target_cell = f"≤ {fmt(target, figure.unit)} ({figure.target_text})"
        lines.append(
            f"| {figure.figure} | {figure.full_scale} | {fmt(ours['median_s'], figure.unit)} | "
            f"{fmt(ours['p95_s'], figure.unit)} | {target_cell} | {mark} | "
            + (
                f"{fmt(naive['median_s'], figure.unit)} / {fmt(naive['p95_s'], figure.unit)}"
                if naive
                else (figure.naive_cell(step) if figure.naive_cell else "—")
            )
            + f" | {ratio} |"
        )
    lines += ["", "Details, cost curves and the reasons behind each number follow.", ""]
    for figure in figures:
        lines += _section(figure)
    lines += _memory(figures)
    lines += ["## Machine", ""]
    lines += [f"- **{key}**: {value}" for key, value in m.items()]
    lines.append("")
    return "\n".join(lines)


def _section(figure: Figure) -> list[str]:
    lines = [f"## {figure.figure}", ""]
    if figure.error:
        return [*lines, f"Not measured: {figure.error}", ""]
    steps = [step for step in figure.steps if "skipped" not in step]
    if not steps:
        reason = figure.steps[0]["skipped"] if figure.steps else "no result"
        return [*lines, f"Not measured: {reason}.", ""]
    keys = list(dict.fromkeys(key for step in steps for key in step.get("samples", {})))
    extra = list(dict.fromkeys(key for step in steps for key in figure.columns(step)))
    header = ["scale", *keys, *extra]
    lines += [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for step in sorted(figure.steps, key=lambda step: step.get("scale", 1)):
        if "skipped" in step:
            row = [f"scale {step.get('scale', '?')}", f"not measured: {step['skipped']}"]
            row += ["—"] * (len(header) - 2)
            lines.append("| " + " | ".join(row) + " |")
            continue
        columns = figure.columns(step)
        row = [figure.describe(step)]
        row += [cell(step, key, figure.unit) for key in keys]
        row += [columns.get(key, "—") for key in extra]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Each cell: median / p95 (number of samples).", ""]
    lines += figure.notes(steps)
    lines.append("")
    return lines


def _memory(figures: list[Figure]) -> list[str]:
    lines = [
        "## Memory at full scale",
        "",
        "Resident set of each process at the end of the full-scale step: the benchmark process "
        "(which also holds clustersim and its store, the in-process Celery worker and watcher "
        "where used), its PostgreSQL backend (private memory, and the resident set including "
        "the shared buffers it touched), and the uvicorn web process where one ran.",
        "",
        "| figure | Python now / peak | PostgreSQL backend private / resident | web process |",
        "|---|---|---|---|",
    ]
    for figure in figures:
        if figure.error or not figure.steps or "skipped" in figure.steps[-1]:
            reason = figure.error or (figure.steps[-1].get("skipped") if figure.steps else "")
            lines.append(f"| {figure.figure} | not measured: {reason or 'no result'} | — | — |")
            continue
        memory = figure.steps[-1].get("memory") or {}
        python = memory.get("python") or {}
        backend = memory.get("postgres_backend") or {}
        web = memory.get("web_server") or {}
        lines.append(
            f"| {figure.figure} | "
            + (f"{python['VmRSS']:.0f} / {python['VmHWM']:.0f} MB" if python else "—")
            + " | "
            + (f"{backend['RssAnon']:.0f} / {backend['VmRSS']:.0f} MB" if backend else "—")
            + " | "
            + (f"{web['VmRSS']:.0f} MB (peak {web['VmHWM']:.0f} MB)" if web else "—")
            + " |"
        )
    return [*lines, ""]


def write(figures: list[Figure], meta: dict, directory: Path) -> tuple[Path, Path]:
    """Write report.md and report.json into ``directory``; return their paths."""
    markdown, data = directory / "report.md", directory / "report.json"
    markdown.write_text(to_markdown(figures, meta))
    data.write_text(json.dumps(to_json(figures, meta), indent=2, default=str) + "\n")
    return markdown, data

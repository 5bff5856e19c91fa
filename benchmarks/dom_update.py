"""Cluster change → DOM update, in Chromium, with 1, 10 and 100 open ops dashboards.

The whole path runs as in production, on PostgreSQL and Redis: a pod in clustersim becomes
ready → the watcher (in this process) sees the watch event, marks the pod ready and broadcasts
after commit → Redis channel layer → the ops consumer of every open pods page (uvicorn, its own
process) collects changes for ``OPS_PUSH_WINDOW`` (0.15 s), renders the row and sends it → htmx
swaps it in. Each page runs a MutationObserver that stamps ``Date.now()`` when the pod's row
turns ready; the latency is that stamp minus the moment the pod's status was written into the
sim's store (same machine, same clock). The page is the h100 pool's pods (100 rows, one page).

The **naive** comparison is a page that polls every 5 s, the common dashboard default: it
fetches the same page and swaps the table. Its latency is the wait for the next poll,
uniform(0, 5 s), plus the poll's own render time. Both are reported: a model (uniform wait plus
render times measured from polling pages in Chromium under the same number of open pages) and
the latencies those polling pages really showed for a few changes.
"""

import copy
import json
import os
import random
import time
from datetime import timedelta

FIGURE = "cluster change → DOM update in Chromium"
FULL_SCALE = "100 open dashboards"
TARGET_P95_S = 0.250
SCALES = (0.01, 0.1, 1.0)
POLL_SECONDS = 5.0
# How long after a change every page has to show it before it counts as not shown.
LIVE_WAIT_SECONDS = 30.0
POLL_WAIT_SECONDS = 2 * POLL_SECONDS + 10
READY_PODS = 70
PENDING_PODS = 30
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]
_OBSERVE = """
(holder) => {
  window.__seen = {};
  const mark = () => {
    for (const row of document.querySelectorAll('tr.pod-row.state-ready')) {
      const name = row.id.slice(4);
      if (!(name in window.__seen)) window.__seen[name] = Date.now();
    }
  };
  mark();
  new MutationObserver(mark).observe(document.getElementById(holder),
    {subtree: true, childList: true, attributes: true});
}
"""
_POLL = """
({url, period, phase}) => {
  document.body.innerHTML = '<div id="holder"></div>';
  window.__renders = [];
  const poll = async () => {
    const began = performance.now();
    const html = await (await fetch(url, {credentials: 'same-origin'})).text();
    const doc = new DOMParser().parseFromString(html, 'text/html');
    document.getElementById('holder').replaceChildren(doc.getElementById('pod-table'));
    window.__renders.push((performance.now() - began) / 1000);
  };
  setTimeout(() => { poll(); setInterval(poll, period * 1000); }, phase * 1000);
}
"""


def size(scale: float) -> dict[str, int]:
    return {"dashboards": max(round(100 * scale), 1)}


def run(scale: float, *, quick: bool = False) -> dict:
    """Measure push and polling latency with ``scale`` x 100 open dashboards."""
    from django.contrib.auth.models import User

    from benchmarks import harness
    from clustersim import ClusterSim
    from clustersim.presets import Preset
    from gpudev_site.embedded import Background

    if not os.path.exists(CHROMIUM):
        return {"size": size(scale), "skipped": f"Chromium is not installed at {CHROMIUM}"}
    dashboards = size(scale)["dashboards"]
    changes = 3 if quick else {1: 20, 10: 10}.get(dashboards, 3)
    harness.reset_database()
    preset = Preset("bench-dom", nodes={"h100": 13}, image_size_gb=1, bandwidth_mb_s=1000)
    with ClusterSim(preset, seed=1) as sim, harness.product_on(sim):
        pool, pending = _build(sim)
        operator = User.objects.create_user("olga", is_staff=True)
        cookies = harness.session_cookies(operator)
        background = Background()
        watcher = background.start_watcher("bench")
        try:
            _wait(watcher.leading.is_set, "the watcher to lead")
            time.sleep(1)  # the first lists are applied
            with harness.serve_site() as (url, server_pid):
                page_url = f"{url}/ops/pods/?pool={pool.pk}"
                # Playwright's sync API keeps an event loop on this thread; the ORM is done.
                os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
                live, polled, renders, missed = _in_chromium(
                    sim, url, page_url, cookies, dashboards, pending, changes, quick
                )
                server_memory = harness.process_memory_of(server_pid)
        finally:
            background.stop()
    rng = random.Random(1)
    model = (
        [rng.uniform(0, POLL_SECONDS) + rng.choice(renders) for _ in range(20_000)]
        if renders
        else []
    )
    return {
        "size": size(scale),
        "samples": {
            "push": live,
            "poll every 5 s, model": model,
            "poll every 5 s, in Chromium": polled,
            "poll render time": renders,
        },
        "counts": {
            "changes": changes,
            "poll_changes": _poll_changes(dashboards, quick),
            "not_shown": missed,
            "wait_s": {"push": LIVE_WAIT_SECONDS, "poll": POLL_WAIT_SECONDS},
        },
        "memory": {**harness.memory_reading(), "web_server": server_memory},
    }


def _build(sim):
    """The h100 pool: READY_PODS ready pods and PENDING_PODS pending ones, in the sim and DB."""
    from django.utils import timezone

    from benchmarks import harness
    from pool import images, mirror, podspec
    from pool.models import PodKind, PodRecord, PodState, Pool

    now = timezone.now()
    release, _ = images.refresh_release(now=now)
    pool = Pool.objects.select_related("gpu_type").get(gpu_type__name="h100", profile="default")
    pool.target, pool.gpus_per_pod = READY_PODS + PENDING_PODS, 1
    pool.save()
    first = f"gpudev-{pool.slug}-000000"
    template = harness.run_one_pod(
        sim,
        podspec.devserver_pod(
            name=first,
            pool=pool,
            kind=PodKind.WARM,
            image_ref=release.immutable_ref,
            gpu_count=1,
            annotations={},
        ),
    )
    records, pending = [], []
    with sim.lock:
        for index in range(READY_PODS + PENDING_PODS):
            name = f"gpudev-{pool.slug}-{index:06d}"
            node = f"h100-{index % 13 + 1}"
            ready = index < READY_PODS
            if index:
                pod = harness.copy_pod(sim, template, name=name, node=node, labels={})
            else:
                pod, node = template, template["spec"]["nodeName"]
            if not ready:
                pending.append(
                    {
                        "ready": copy.deepcopy(pod),
                        "pending": _pending_version(sim, copy.deepcopy(pod)),
                    }
                )
            records.append(
                PodRecord(
                    name=name,
                    pool=pool,
                    kind=PodKind.WARM,
                    state=PodState.READY if ready else PodState.PENDING,
                    node_name=node,
                    image_ref=release.immutable_ref,
                    running_digest=release.digest if ready else "",
                    progress="" if ready else mirror.describe(pending[-1]["pending"]),
                    created_at=now - timedelta(seconds=1000 - index),
                    pod_created_at=now - timedelta(seconds=1000 - index),
                )
            )
    PodRecord.objects.bulk_create(records)
    return pool, pending


def _pending_version(sim, pod: dict) -> dict:
    """Turn a stored ready pod into one still creating its container; store it; return it."""
    from clustersim.resources import PODS

    status = pod["status"]
    status["phase"] = "Pending"
    status["conditions"] = [
        {**c, "status": "False"} if c["type"] in ("Ready", "ContainersReady") else c
        for c in status.get("conditions", [])
    ]
    status["containerStatuses"] = [
        {
            "name": c["name"],
            "image": c["image"],
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "started": False,
            "state": {"waiting": {"reason": "ContainerCreating"}},
        }
        for c in status.get("containerStatuses", [])
    ]
    return sim.store.update(PODS, pod)


def _in_chromium(sim, base_url, page_url, cookies, dashboards, pending, changes, quick):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            context = browser.new_context(viewport={"width": 1360, "height": 900})
            context.add_cookies(
                [{"name": k, "value": v, "url": base_url} for k, v in cookies.items()]
            )
            live, live_missed = _live_latencies(
                context, sim, page_url, dashboards, pending[:changes]
            )
            context.close()
            context = browser.new_context()
            context.add_cookies(
                [{"name": k, "value": v, "url": base_url} for k, v in cookies.items()]
            )
            polled, renders, polled_missed = _polling_latencies(
                context, sim, base_url, page_url, dashboards, pending[changes:], quick
            )
            context.close()
        finally:
            browser.close()
    return live, polled, renders, {"push": live_missed, "poll": polled_missed}


def _live_latencies(context, sim, page_url, dashboards, pods) -> tuple[list[float], int]:
    """Open the live pages (all loading at once), make each change, collect what they saw;
    return the latencies and how many (page, change) pairs had not shown it within the wait."""
    pages = []
    for _ in range(dashboards):
        page = context.new_page()
        page.goto(page_url, wait_until="commit")
        pages.append(page)
    for page in pages:
        page.wait_for_function(
            "document.getElementById('live-status')?.dataset.state === 'live'", timeout=120_000
        )
        page.evaluate(_OBSERVE, "ops-live")
    time.sleep(1)  # let the first full refresh of every page land
    latencies, missed = [], 0
    for pod in pods:
        name = pod["ready"]["metadata"]["name"]
        written = _make_ready(sim, pod)
        seen, lost = _seen_by(pages, {name: written}, wait_s=LIVE_WAIT_SECONDS)
        latencies += seen
        missed += lost
        time.sleep(0.3)
    for page in pages:
        page.close()
    return latencies, missed


def _seen_by(pages, written: dict[str, float], *, wait_s: float) -> tuple[list[float], int]:
    """Latencies of the changes ``written`` (name → wall time) on every page that showed them
    within ``wait_s`` of the last change, and how many (page, change) pairs did not."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    deadline = max(written.values()) + wait_s
    latencies, missed = [], 0
    for page in pages:
        for name, at in written.items():
            remaining_ms = max((deadline - time.time()) * 1000, 1)
            try:
                page.wait_for_function(f"{json.dumps(name)} in window.__seen", timeout=remaining_ms)
            except PlaywrightTimeout:
                missed += 1
                continue
            seen = page.evaluate(f"window.__seen[{json.dumps(name)}]")
            latencies.append(max(seen / 1000 - at, 0))
    return latencies, missed


def _poll_changes(dashboards: int, quick: bool) -> int:
    """Changes made while pages poll: each costs up to a poll period of waiting."""
    return 1 if quick or dashboards >= 100 else 3


def _polling_latencies(context, sim, base_url, page_url, dashboards, pods, quick):
    """Open polling pages at random phases, make a few changes, collect what they saw."""
    rng = random.Random(2)
    pages = []
    for _ in range(dashboards):
        page = context.new_page()
        page.goto(f"{base_url}/healthz")
        pages.append(page)
    for page in pages:
        page.evaluate(
            _POLL, {"url": page_url, "period": POLL_SECONDS, "phase": rng.uniform(0, POLL_SECONDS)}
        )
    time.sleep(POLL_SECONDS + 1)
    for page in pages:
        page.evaluate(_OBSERVE, "holder")
    changes = pods[: _poll_changes(dashboards, quick)]
    written = {}
    for pod in changes:
        time.sleep(rng.uniform(0.5, POLL_SECONDS))
        written[pod["ready"]["metadata"]["name"]] = _make_ready(sim, pod)
    latencies, missed = _seen_by(pages, written, wait_s=POLL_WAIT_SECONDS)
    renders = [r for page in pages for r in page.evaluate("window.__renders")]
    for page in pages:
        page.close()
    return latencies, renders, missed


def _make_ready(sim, pod: dict) -> float:
    """Write the pod's ready status into the sim's store; return the wall time it was written."""
    from clustersim.resources import PODS

    with sim.lock:
        current = sim.store.get(PODS, "gpudev", pod["ready"]["metadata"]["name"])
        ready = {**pod["ready"], "metadata": current["metadata"]}
        written = time.time()
        sim.store.update(PODS, ready)
    return written


def _wait(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)

"""The app under concurrent users: ``/inspect`` latency with and without batched requests.

``CLIENTS`` ``gradio_client`` clients each send ``REQUESTS`` faces one after another (the next
when the last is answered), all at once, to an app serving the shipped detector with faces
found first and Grad-CAM at the last layer, as a visitor's request runs. The same load runs
against the app with ``inspect_batch=1`` (each request alone, as before) and with batching
(requests waiting together go through the detector as one batch), alternating ABBA so that
load from other jobs falls on both. Reports p50 / p95 latency and requests per second, and
writes ``benchmarks/results/ui_concurrency.json`` and the README block (``--readme`` and
``--results`` send them elsewhere, e.g. for a run on shared cores; ``--sides`` runs one app
alone, to compare two versions of the code run after one another).

``gradio_client`` builds a TLS context (loading the CA bundle) for every HTTP call it makes,
even to a plain ``http://`` address: about 7 per request, most of the clients' CPU time, taken
from the app's cores since the clients run in its process. ``--lean-clients`` skips that
(``ssl_verify=False``: nothing is verified on plain http anyway); off by default, so that
figures stay comparable with earlier runs.

The app runs in the benchmark's process unless ``--app-process``: then each app is a process of
its own, as a deployed app is (its visitors' browsers do not share its interpreter), and the
clients no longer hold the app's interpreter lock; they still share its cores.

``--before DIR`` adds the app of another checkout of the project, as a user of that version
got it (its own default detector, each request alone): a ``git worktree`` of the commit issue
23 was filed against gives the issue's "today" on this machine, in the same run. Every side
then runs in a process of its own. The clients still use this checkout's ``sources.py``, so
the other checkout needs ``deepfake_xai.data`` as that module imports it.

    python benchmarks/ui_concurrency.py --clients 20 --requests 3
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gradio_client
import numpy as np
import torch
from _common import (
    README,
    command_line,
    machine,
    serve_locally,
    update_readme_section,
    write_json,
)
from sources import FACES

import deepfake_xai as dx
from deepfake_xai.ui import build_demo

RESULTS = README.parent / "results" / "ui_concurrency.json"
SIDES = ("one by one", "batched")
DETECTOR = "default"


def launch(batch: int):
    """The app with the shipped detector and ``inspect_batch=batch`` (where the code batches),
    on a free port, in this process: ``(its close function, its address, None, the detector's
    name)``."""
    detector = dx.load_detector(DETECTOR)
    batches = "inspect_batch" in inspect.signature(build_demo).parameters
    options = {"inspect_batch": batch} if batches else {}
    demo = build_demo(detectors=[detector], examples=[], **options)
    return demo.close, serve_locally(demo), None, detector.name


def launch_process(batch: int, code: Path | None = None):
    """The same app in a process of its own (``code``: the package of that checkout instead
    of this one): ``(its stop function, its address, its pid, the detector's name)``."""
    threads = str(torch.get_num_threads())
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH")]))
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(batch), "--threads", threads],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    url, _, name = child.stdout.readline().strip().partition(" ")
    if not url.startswith("http"):
        child.kill()
        raise RuntimeError(f"the app process did not start (said {url!r})")

    def stop() -> None:
        child.terminate()
        child.wait(30)

    return stop, url, child.pid, name


def serve_here(batch: int, threads: int) -> None:
    """``--serve``: run the app until terminated; its address and detector's name on the first
    line of stdout."""
    torch.set_num_threads(threads)
    close, url, _, name = launch(batch)
    print(url, name, flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        close()


def cpu_seconds(pid: int | None) -> float:
    """CPU seconds used so far by process ``pid`` (this one when None)."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    import psutil  # the bench extra

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def load(
    url: str,
    name: str,
    faces: list[Path],
    clients: int,
    requests: int,
    *,
    lean: bool = False,
    app_pid: int | None = None,
) -> dict[str, float]:
    """Every client sends its faces one after another; latency of each request, seconds, and
    (for an app in process ``app_pid``) the CPU milliseconds per request of the app and of the
    clients. ``lean`` clients build no TLS context per HTTP call (see the module's docstring).
    Requests name detector ``name``: the app runs the detectors a request names."""
    connected = [
        gradio_client.Client(url, verbose=False, ssl_verify=not lean) for _ in range(clients)
    ]

    def user(number: int) -> list[float]:
        client, seconds = connected[number], []
        for n in range(requests):
            face = faces[(number * requests + n) % len(faces)]
            start = time.perf_counter()
            record, *_ = client.predict(
                gradio_client.handle_file(str(face)), [name], "gradcam",
                "final", "predicted", 0.5, True, api_name="/inspect",
            )  # fmt: skip
            seconds.append(time.perf_counter() - start)
            if name not in record.get("detectors", {}):  # an error or no detector run: no timing
                raise RuntimeError(f"{face.name}: no verdict from {name}: {record}")
        return seconds

    start, ours = time.perf_counter(), cpu_seconds(None)
    app = cpu_seconds(app_pid) if app_pid else 0.0
    with ThreadPoolExecutor(clients) as pool:
        latencies = [s for seconds in pool.map(user, range(clients)) for s in seconds]
    wall = time.perf_counter() - start
    answered = len(latencies)
    measured = {
        "p50": statistics.median(latencies),
        "p95": float(np.percentile(latencies, 95)),
        "requests_per_s": answered / wall,
        "answered": answered,
        "clients_cpu_ms": 1000 * (cpu_seconds(None) - ours) / answered,
    }
    if app_pid:
        measured["app_cpu_ms"] = 1000 * (cpu_seconds(app_pid) - app) / answered
    return measured


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=3)
    parser.add_argument("--batch", type=int, help="the app's default when not given")
    parser.add_argument("--note", default="", help="said of the machine (e.g. shared with...)")
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    parser.add_argument("--lean-clients", action="store_true", help="no TLS context per call")
    parser.add_argument("--app-process", action="store_true", help="each app in its own process")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--before", type=Path, help="another checkout's app as a third side")
    parser.add_argument("--serve", type=int, metavar="BATCH", help=argparse.SUPPRESS)
    parser.add_argument("--readme", type=Path, default=README, help="where the block goes")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.serve is not None:
        return serve_here(args.serve, args.threads)
    torch.set_num_threads(args.threads)
    faces = sorted((FACES / "val" / "real").glob("*.jpg"))[:30]
    faces += sorted((FACES / "val" / "fake").glob("*.jpg"))[:30]
    if args.batch is None:  # here, not at import: a --before child imports this with old code
        args.batch = inspect.signature(build_demo).parameters["inspect_batch"].default
    args.app_process = args.app_process or args.before is not None
    batches = dict(zip(SIDES, (1, args.batch), strict=True))
    start = launch_process if args.app_process else launch
    apps = (
        {before_name(args.before): launch_process(1, args.before.resolve())} if args.before else {}
    )
    apps |= {name: start(batches[name]) for name in SIDES if name in args.sides}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in apps}
    order = [*apps, *reversed(apps)]  # ABBA (ABCCBA), or AA for one side
    try:
        for name in order:
            _, url, pid, detector = apps[name]
            lean = args.lean_clients
            runs[name].append(
                load(url, detector, faces, args.clients, args.requests, lean=lean, app_pid=pid)
            )
    finally:
        for stop, *_ in apps.values():
            stop()
    measured = {
        name: {k: statistics.mean(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()
    }
    results = {
        "command": command_line("ui_concurrency.py", argv),
        "machine": f"{machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"
        + (f"; {args.note}" if args.note else ""),
        "load_average": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d"),
        "clients": args.clients,
        "requests": args.requests,
        "batch": args.batch,
        "lean_clients": args.lean_clients,
        "app_process": args.app_process,
        "sides": measured,
    }
    write_json(args.results, results)
    update_readme_section(args.readme, "ui_concurrency", readme_lines(results), heading=None)
    print("\n".join(readme_lines(results)))


def readme_lines(results: dict) -> list[str]:
    sides = results["sides"]
    notes = ["lean clients (no TLS context per call)"] * bool(results.get("lean_clients"))
    notes += ["each app in a process of its own"] * bool(results.get("app_process"))
    noted = "; ".join(notes)
    lines = [
        "## The app under concurrent users",
        "",
        f"`benchmarks/ui_concurrency.py`: {results['clients']} `gradio_client` clients each "
        f"send {results['requests']} shared faces one after another, all at once, to `/inspect` "
        "(the shipped detector, faces found first, Grad-CAM at the last layer); the same load "
        + (
            f"against each app below (batching up to {results['batch']} waiting requests where "
            "it batches), in turn and then in reverse order, two runs each"
            if len(sides) > 1
            else f"twice against the app ({next(iter(sides))}, up to {results['batch']})"
        )
        + (f"; {noted}." if noted else "."),
        "",
        f"Command: `{results['command']}`",
        "",
        f"Machine: {results['machine']}; load average {results['load_average']:.1f} at the end. "
        f"Measured {results['date']}.",
        "",
        "| app | p50 s | p95 s | requests / s | answered | CPU ms per request: app | clients |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, side in sides.items():
        app, clients = side.get("app_cpu_ms", math.nan), side.get("clients_cpu_ms", math.nan)
        lines.append(
            f"| {name} | {side['p50']:.2f} | {side['p95']:.2f} | {side['requests_per_s']:.2f} "
            f"| {side['answered']:.0f} | {'-' if math.isnan(app) else f'{app:.0f}'} "
            f"| {clients:.0f}{'' if results.get('app_process') else ' (app included)'} |"
        )
    *others, last = sides  # the last side (batched, where run) against each of the others
    for name in others:
        now, then = sides[last], sides[name]
        lines += [
            "",
            f"{last.capitalize()} against {name}: p50 {now['p50'] / then['p50']:.2f}x, p95 "
            f"{now['p95'] / then['p95']:.2f}x and "
            f"{now['requests_per_s'] / then['requests_per_s']:.2f}x the requests per second.",
        ]
    return lines


def before_name(code: Path) -> str:
    """The side's name for the app of checkout ``code``: ``before (<its commit or folder>)``."""
    commit = subprocess.run(
        ["git", "-C", str(code), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return f"before ({commit or code.name})"


if __name__ == "__main__":
    main()

"""The app under concurrent users: ``/inspect`` latency with and without batched requests.

``CLIENTS`` ``gradio_client`` clients each send ``REQUESTS`` faces one after another (the next
when the last is answered), all at once, to an app serving the shipped detector with faces
found first and Grad-CAM at the last layer, as a visitor's request runs. The same load runs
against the app with ``inspect_batch=1`` (each request alone, as before) and with batching
(requests waiting together go through the detector as one batch), alternating ABBA so that
load from other jobs falls on both. Reports p50 / p95 latency and requests per second, and
writes ``benchmarks/results/ui_concurrency.json`` and the README block.

    python benchmarks/ui_concurrency.py --clients 20 --requests 3
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gradio_client
import numpy as np
import torch
from _common import README, command_line, machine, update_readme_section, write_json
from sources import FACES

import deepfake_xai as dx
from deepfake_xai.ui import build_demo, serve
from deepfake_xai.ui.inspect_tab import INSPECT_BATCH

RESULTS = README.parent / "results" / "ui_concurrency.json"


def launch(batch: int):
    """The app with the shipped detector and ``inspect_batch=batch``, on a free port."""
    demo = build_demo(detectors=[dx.load_detector("default")], examples=[], inspect_batch=batch)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    return demo, f"http://127.0.0.1:{port}/"


def load(url: str, faces: list[Path], clients: int, requests: int) -> dict[str, float]:
    """Every client sends its faces one after another; latency of each request, seconds."""
    connected = [gradio_client.Client(url, verbose=False) for _ in range(clients)]

    def user(number: int) -> list[float]:
        client, seconds = connected[number], []
        for n in range(requests):
            face = faces[(number * requests + n) % len(faces)]
            start = time.perf_counter()
            client.predict(
                gradio_client.handle_file(str(face)), ["efficientnet_lite0"], "gradcam",
                "final", "predicted", 0.5, True, api_name="/inspect",
            )  # fmt: skip
            seconds.append(time.perf_counter() - start)
        return seconds

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [s for seconds in pool.map(user, range(clients)) for s in seconds]
    wall = time.perf_counter() - start
    return {
        "p50": statistics.median(latencies),
        "p95": float(np.percentile(latencies, 95)),
        "requests_per_s": len(latencies) / wall,
        "answered": len(latencies),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=3)
    parser.add_argument("--batch", type=int, default=INSPECT_BATCH)
    parser.add_argument("--note", default="", help="said of the machine (e.g. shared with...)")
    args = parser.parse_args(argv)
    faces = sorted((FACES / "val" / "real").glob("*.jpg"))[:30]
    faces += sorted((FACES / "val" / "fake").glob("*.jpg"))[:30]
    apps = {name: launch(batch) for name, batch in (("one by one", 1), ("batched", args.batch))}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in apps}
    try:
        for name in ("one by one", "batched", "batched", "one by one"):  # ABBA
            runs[name].append(load(apps[name][1], faces, args.clients, args.requests))
    finally:
        for demo, _ in apps.values():
            demo.close()
    sides = {
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
        "sides": sides,
    }
    write_json(RESULTS, results)
    update_readme_section(README, "ui_concurrency", readme_lines(results), heading=None)
    print("\n".join(readme_lines(results)))


def readme_lines(results: dict) -> list[str]:
    one, batched = results["sides"]["one by one"], results["sides"]["batched"]
    lines = [
        "## The app under concurrent users",
        "",
        f"`benchmarks/ui_concurrency.py`: {results['clients']} `gradio_client` clients each "
        f"send {results['requests']} shared faces one after another, all at once, to `/inspect` "
        "(the shipped detector, faces found first, Grad-CAM at the last layer); the same load "
        f"against the app answering requests one by one and batching up to {results['batch']} "
        "waiting requests, alternated ABBA, two runs each.",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Machine: {results['machine']}; load average {results['load_average']:.1f} at the end. "
        f"Measured {results['date']}.",
        "",
        "| app | p50 s | p95 s | requests / s | answered |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, side in results["sides"].items():
        lines.append(
            f"| {name} | {side['p50']:.2f} | {side['p95']:.2f} | {side['requests_per_s']:.2f} "
            f"| {side['answered']:.0f} |"
        )
    lines += [
        "",
        f"Batching: p50 {batched['p50'] / one['p50']:.2f}x, p95 {batched['p95'] / one['p95']:.2f}x "
        f"and {batched['requests_per_s'] / one['requests_per_s']:.2f}x the requests per second of "
        "answering one by one.",
    ]
    return lines


if __name__ == "__main__":
    main()

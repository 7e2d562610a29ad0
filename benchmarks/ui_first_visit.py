"""The app's first visitor: ``/inspect`` latency of the first requests after the app starts,
with and without the warm-up that ``serve`` runs (``serve(demo, warm_up=False)``: as before).

Each side runs in a fresh process (the shipped detector alone, faces found first, Grad-CAM at the
last layer), the sides alternating round by round: the seconds ``serve`` took (the warm-up is in
them), then ``REQUESTS`` shared faces sent one after another by one ``gradio_client`` client.
Writes ``benchmarks/results/ui_first_visit.json`` and the block between the ``ui_first_visit``
markers in ``benchmarks/README.md``.

    python benchmarks/ui_first_visit.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from _common import (
    add_output_args,
    command_line,
    load_average,
    machine,
    serve_locally,
    update_readme_section,
    write_json,
)
from sources import FACES

SIDES = {"cold": False, "warm_up": True}


def worker(warm_up: bool, requests: int) -> dict:
    """One app process: how long ``serve`` took and each of the first requests."""
    import gradio_client

    import deepfake_xai as dx
    from deepfake_xai.ui import build_demo

    detector = dx.load_detector("default")
    demo = build_demo(detectors=[detector], examples=[])
    start = time.perf_counter()
    url = serve_locally(demo, warm_up=warm_up)
    served = time.perf_counter() - start
    client = gradio_client.Client(url, verbose=False)
    seconds = []
    for face in sorted((FACES / "val" / "fake").glob("*.jpg"))[:requests]:
        start = time.perf_counter()
        record, *_ = client.predict(
            gradio_client.handle_file(str(face)), [detector.name], "gradcam", "final",
            "predicted", 0.5, True, api_name="/inspect",
        )  # fmt: skip
        seconds.append(time.perf_counter() - start)
        if detector.name not in record.get("detectors", {}):
            raise RuntimeError(f"{face.name}: no verdict: {record}")
    demo.close()
    return {"serve": served, "requests": seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3)
    add_output_args(parser, "ui_first_visit")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(SIDES[args.worker], args.requests)))
        return
    before = load_average()
    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    for _ in range(args.rounds):
        for side in SIDES:
            command = [sys.executable, __file__, "--worker", side, "--requests", str(args.requests)]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            runs[side].append(json.loads(out.strip().splitlines()[-1]))
    results = {
        "command": command_line("ui_first_visit.py", argv),
        "machine": machine(),
        "load_average": {"before": before, "after": load_average()},
        "date": time.strftime("%Y-%m-%d"),
        "runs": runs,
    }
    write_json(args.out, results)
    lines = readme_lines(results, args.requests)
    update_readme_section(args.readme, "ui_first_visit", lines, heading="The app's first visitor")
    print("\n".join(lines))


def readme_lines(results: dict, requests: int) -> list[str]:
    header = " | ".join(f"request {n + 1} s" for n in range(requests))
    lines = [
        f"Command: `{results['command']}`",
        "",
        f"Machine: {results['machine']}; the shipped detector, faces found first, Grad-CAM at "
        f"the last layer, one client; medians of {len(results['runs']['cold'])} fresh app "
        f"processes per side, alternating; load average {results['load_average']['before']} "
        f"before, {results['load_average']['after']} after. Measured {results['date']}.",
        "",
        f"| app | `serve` s | {header} |",
        "|---|---:|" + "---:|" * requests,
    ]
    for side, runs in results["runs"].items():
        serve = statistics.median(r["serve"] for r in runs)
        firsts = [statistics.median(r["requests"][n] for r in runs) for n in range(requests)]
        cells = " | ".join(f"{s:.2f}" for s in firsts)
        lines.append(f"| {side.replace('_', ' ')} | {serve:.2f} | {cells} |")
    return lines


if __name__ == "__main__":
    main()

"""What the app adds to the engine: round-trip latency of ``/inspect`` against ``explain`` alone.

Both detectors (EfficientNet-B0 and MobileNetV2 at 224 px, random weights: latency does not
depend on them) explain one image with Grad-CAM. Four sides, alternating after warm-up, in this
one process (same torch threads, same allocator state):

- **engine**: :func:`deepfake_xai.engine.explain` once per detector on the image file;
- **handler**: the app's ``/inspect`` handler called directly (decode once, explain both,
  overlays, readings): the app's own Python work, without Gradio;
- **round_trip**: the same file through ``gradio_client`` to the running app (upload, queue,
  handler, JPEG encoding, events, download of the two overlays);
- **gradio_floor**: the same request to a Gradio app with the same components whose handler
  returns the answer computed once: what Gradio and its client cost with no work at all.

``added_by_the_app`` is round_trip minus engine, request by request. Writes
``benchmarks/results/ui_latency.json`` and the block between the ``ui_latency`` markers in
``benchmarks/README.md``.

    .venv/bin/python benchmarks/ui_latency.py --requests 30
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import gradio as gr
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

import deepfake_xai as dx
from deepfake_xai.engine import explain
from deepfake_xai.synthetic import generate_dataset
from deepfake_xai.ui import build_demo

NAMES = ("efficientnet_b0", "mobilenetv2_100")
ARGS = (list(NAMES), "gradcam", "final", "fake", 0.5, False)
RESULTS = README.parent / "results" / "ui_latency.json"
SIDES = {
    "engine": "`explain()` for both detectors",
    "handler": "the `/inspect` handler called directly",
    "round_trip": "`/inspect` through `gradio_client`",
    "gradio_floor": "same request, app that does no work",
    "added_by_the_app": "round trip minus engine",
}


def summary(values: list[float]) -> dict[str, float]:
    """Median and 95th percentile, in the unit of ``values``."""
    return {"median": statistics.median(values), "p95": float(np.percentile(values, 95))}


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def launch(demo: gr.Blocks):
    """Serve ``demo`` on a free local port; a client for it."""
    from gradio_client import Client

    return Client(serve_locally(demo), verbose=False)


def floor_app(detectors: list, answer: list, folder: Path) -> gr.Blocks:
    """The app itself with an ``/inspect`` handler that returns ``answer`` (one request's
    outputs) for every request of a batch: Gradio's work on the same components, none of ours.
    Files of the answer are copied to ``folder`` first (the app prunes its own downloads)."""
    answer = [_copied(value, folder) for value in answer]
    demo = build_demo(detectors=detectors)
    inspect = next(fn for fn in demo.fns.values() if fn.api_name == "inspect")
    inspect.fn = lambda *batch: [[value] * len(batch[0]) for value in answer]
    return demo


def _copied(value: object, folder: Path) -> object:
    """A copy in ``folder`` of a file output; other outputs (HTML, numbers) as they are."""
    try:
        if isinstance(value, (str, Path)) and Path(value).is_file():
            return str(shutil.copy(value, folder / Path(value).name))
    except OSError:  # text too long to be a file name
        pass
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30, help="timed requests per side")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per side first")
    parser.add_argument("--image-size", type=int, default=224, help="detector input size")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--json", type=Path, default=RESULTS, help="raw results (JSON)")
    parser.add_argument("--readme", type=Path, default=README, help="README to update")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from gradio_client import handle_file

    work = tempfile.TemporaryDirectory(prefix="ui-latency-")
    generate_dataset(work.name, 1, size=256, seed=1)
    image = sorted((Path(work.name) / "fake").glob("*.png"))[0]
    detectors = [dx.load_detector(n, image_size=args.image_size, device="cpu") for n in NAMES]
    demo = build_demo(detectors=detectors)
    batched = next(fn.fn for fn in demo.fns.values() if fn.api_name == "inspect")

    def handler(*request: object) -> list:  # the batch handler, for one request
        return [values[0] for values in batched(*([value] for value in request))]

    payload = {"path": str(image), "orig_name": image.name}
    floor = floor_app(detectors, handler(payload, *ARGS), Path(work.name))
    app_client, floor_client = launch(demo), launch(floor)

    def engine() -> None:
        for detector in detectors:
            explain(detector, [image], method="gradcam", layers=("final",))

    def request(client) -> Callable[[], object]:
        return lambda: client.predict(handle_file(str(image)), *ARGS, api_name="/inspect")

    sides = {
        "engine": engine,
        "handler": lambda: handler(payload, *ARGS),
        "round_trip": request(app_client),
        "gradio_floor": request(floor_client),
    }
    for _ in range(args.warmup):
        for run in sides.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.requests):
        for name, run in sides.items():
            times[name].append(timed(run))
    demo.close()
    floor.close()
    work.cleanup()

    rows = {name: summary(values) for name, values in times.items()}
    added = [a - e for a, e in zip(times["round_trip"], times["engine"], strict=True)]
    rows["added_by_the_app"] = summary(added)
    results = {
        "command": command_line("ui_latency.py", None),
        "machine": f"{machine()}, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "requests": args.requests,
        "image_size": args.image_size,
        "threads": args.threads,
        "load_average": os.getloadavg()[0],
        "ms": rows,
    }
    print(table(results))
    write_json(args.json, results)
    update_readme(results, args.readme)


def table(results: dict) -> str:
    rows = results["ms"]
    lines = ["| side | what | median ms | p95 ms |", "|---|---|---:|---:|"]
    for name, what in SIDES.items():
        lines.append(f"| {name} | {what} | {rows[name]['median']:.1f} | {rows[name]['p95']:.1f} |")
    return "\n".join(lines)


def update_readme(results: dict, path: Path) -> None:
    """Replace the block between the markers, or append it; the rest of the README is kept."""
    rows = results["ms"]
    own = rows["handler"]["median"] - rows["engine"]["median"]
    transport = rows["round_trip"]["median"] - rows["handler"]["median"]
    update_readme_section(
        path,
        "ui_latency",
        [
            "## App latency",
            "",
            "`benchmarks/ui_latency.py` sends one 256 px face to the app's `/inspect` endpoint",
            "(EfficientNet-B0 and MobileNetV2 at 224 px, Grad-CAM at the final layer) and times",
            "it against the engine alone and against the same app whose handler returns a",
            "precomputed answer. All sides alternate in one process after warm-up.",
            "",
            f"Command: `{results['command']}`",
            "",
            f"Machine: {results['machine']}; {results['threads']} threads; load average "
            f"{results['load_average']:.1f} from other jobs. Measured {results['date']}.",
            "",
            table(results),
            "",
            "The app's own work (decoding once, finding the face, a saliency cross-check per "
            f"detector, overlays, readings and the download's zip) adds {own:.0f} ms to "
            f"the engine's {rows['engine']['median']:.0f} ms. Carrying the request adds "
            f"{transport:.0f} ms; Gradio and `gradio_client` take "
            f"{rows['gradio_floor']['median']:.0f} ms for the same app answering from a "
            "precomputed result (upload, queue, events, the image downloads; the client polls "
            "its message queue every 50 ms, a browser receives the events directly).",
        ],
    )


if __name__ == "__main__":
    main()

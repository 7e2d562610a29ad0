"""The engine's eager passes with and without BatchNorm folded into the convolutions.

The passes that need gradients through the network run eagerly: the app's Inspect (final-layer
Grad-CAM with the pixel saliency it is checked against, one request or a batch of waiting
ones), a middle-layer Grad-CAM and Captum's attributions (integrated gradients here). Each
runs on decoded shared faces with the shipped detector, ``DEEPFAKE_XAI_FOLD`` off and on
alternating call by call in one process (first calls apart), and the ratio of the median times
is reported per pass, with the largest difference of P(fake) and of each heatmap between the
two.

    python benchmarks/fold_speed.py --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from _common import (
    add_output_args,
    command_line,
    load_average,
    machine,
    update_readme_section,
    write_json,
)
from sources import FACES

import deepfake_xai as dx
from deepfake_xai.folding import FOLD_ENV
from deepfake_xai.images import load_image

PASSES = {  # name: (batch size, explain's options)
    "Inspect, one request (final layer + saliency)": (1, {"layers": ("final",), "saliency": True}),
    "Inspect, 8 requests batched": (8, {"layers": ("final",), "saliency": True}),
    "middle-layer Grad-CAM, batch 32": (32, {"layers": ("mid",)}),
    "integrated gradients, batch 2": (2, {"method": "integrated_gradients"}),
}


def timed(detector, faces, options: dict, fold: bool):
    os.environ[FOLD_ENV] = "1" if fold else "0"
    start = time.perf_counter()
    result = dx.explain(detector, faces, **{"method": "gradcam", **options})
    return time.perf_counter() - start, result


def measure(detector, faces, options: dict, calls: int) -> dict:
    seconds = {False: [], True: []}
    results = {fold: timed(detector, faces, options, fold)[1] for fold in (False, True)}
    for _ in range(calls):
        for fold in (False, True):
            seconds[fold].append(timed(detector, faces, options, fold)[0])
    before, after = statistics.median(seconds[False]), statistics.median(seconds[True])
    plain, folded = results[False], results[True]
    return {
        "unfolded_ms": 1000 * before,
        "folded_ms": 1000 * after,
        "speedup": before / after,
        "p_fake_max_diff": float(np.abs(plain.probs - folded.probs).max()),
        "heatmap_max_diff": {
            layer: float(np.abs(maps.numpy() - folded.heatmaps[layer].numpy()).max())
            for layer, maps in plain.heatmaps.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=9, help="timed calls per side and pass")
    add_output_args(parser, "fold_speed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    detector = dx.load_detector("default")
    paths = sorted((FACES / "val").rglob("*.jpg"))
    faces = [load_image(path) for path in paths[: max(b for b, _ in PASSES.values())]]
    rows = {}
    for name, (batch, options) in PASSES.items():
        rows[name] = measure(detector, faces[:batch], options, args.calls)
        print(name, {k: v for k, v in rows[name].items() if k != "heatmap_max_diff"}, flush=True)
    write_json(args.out, {"machine": machine(), "threads": args.threads, "passes": rows})
    lines = [
        f"Command: `{command_line('fold_speed.py', None)}`",
        "",
        f"Machine: {machine()}, {args.threads} torch thread(s), {detector.name}; medians of "
        f"{args.calls} calls per side, alternating; load average {load_average()} at the end. "
        f"Measured {time.strftime('%Y-%m-%d')}.",
        "",
        "| eager pass | unfolded ms | folded ms | speed-up | P(fake) max diff | heatmap max diff |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        maps = ", ".join(f"{k} {v:.1e}" for k, v in row["heatmap_max_diff"].items())
        lines.append(
            f"| {name} | {row['unfolded_ms']:.0f} | {row['folded_ms']:.0f} | "
            f"{row['speedup']:.2f}x | {row['p_fake_max_diff']:.1e} | {maps} |"
        )
    update_readme_section(
        args.readme, "fold_speed", lines, heading="Engine speed: BatchNorm folding"
    )


if __name__ == "__main__":
    main()

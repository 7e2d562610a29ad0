"""Images/s and peak memory: plain inference, our one-pass engine, pytorch-grad-cam, Captum.

Every configuration (detector x batch size x side) runs in a fresh subprocess with the same
environment, so peak memory is not polluted by earlier runs: the resident-set high-water mark is
reset after the model is loaded (Linux ``/proc/self/clear_refs``) and reported minus the RSS at
that moment. Throughput is ``batch / median seconds per batch`` after one warm-up batch.

    python benchmarks/explain_throughput.py --quick

writes ``benchmarks/results/explain_throughput.json`` and rewrites the table in
``benchmarks/README.md`` between the ``explain_throughput`` markers.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _common import (
    HERE,
    MALLOC_ENV,
    README,
    add_output_args,
    command_line,
    machine,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
    update_readme_section,
    write_json,
)
from torch import nn

SIDES: dict[str, str] = {
    "plain": "plain inference_mode forward (logit only), contiguous",
    "plain_channels_last": "plain inference_mode forward (logit only), channels_last",
    "engine_final": "Engine: P(fake) + embedding + final-layer Grad-CAM (uint8 in, numpy out)",
    "engine_final_contiguous": "the same Engine with channels_last=False",
    "engine_final_onnx": "the same Engine on its ONNX Runtime path (session made before timing)",
    "engine_mid": "Engine: P(fake) + embedding + mid-layer Grad-CAM",
    "pytorch_grad_cam": "pytorch_grad_cam.GradCAM, final layer, batched (its own upsampling)",
    "captum": "Captum LayerGradCam, final layer, relu_attributions=True",
}
PLAIN = ("plain", "plain_channels_last")


# -- the measured configurations (run inside the worker subprocess) ---------------------------
def build_step(side: str, detector, batch, device) -> Callable[[], object]:
    """A zero-argument callable doing one batch of work for ``side``."""
    x = detector.normalize(batch)
    if side in PLAIN:
        if side == "plain_channels_last":
            detector.model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)

        def plain():
            with torch.inference_mode():
                return detector(x)

        return plain
    if side.startswith("engine"):
        from deepfake_xai.engine import Engine

        layer = "mid" if side == "engine_mid" else "final"
        channels_last = False if side == "engine_final_contiguous" else None
        onnx = side == "engine_final_onnx"
        engine = Engine(
            [detector], layers=(layer,), device=device, channels_last=channels_last, onnx=onnx
        )
        if onnx:  # the export happens here, outside the timing and the memory measurement
            from deepfake_xai.onnx_engine import onnx_features

            onnx_features(
                detector, detector.reliability.module_layers if detector.reliability else []
            )
        return lambda: engine.run(batch)
    wrapper = LogitModule(detector)
    layer = detector.module("final")
    if side == "pytorch_grad_cam":
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        detector.model.requires_grad_(True)  # how it is used: it backpropagates into the weights
        cam = GradCAM(model=wrapper, target_layers=[layer])
        targets = [ClassifierOutputTarget(0)] * len(batch)
        return lambda: cam(input_tensor=x, targets=targets)
    if side == "captum":
        from captum.attr import LayerGradCam

        captum = LayerGradCam(wrapper, layer)
        return lambda: captum.attribute(x, target=0, relu_attributions=True)
    raise ValueError(f"unknown side {side!r}; use one of {sorted(SIDES)}")


class LogitModule(nn.Module):
    """``normalised x -> logit (B, 1)`` as an ``nn.Module`` (what Captum and pgc expect)."""

    def __init__(self, detector):
        super().__init__()
        self.model = detector.model
        self.detector = detector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.detector(x)[:, None]


def worker(config: dict) -> dict:
    """Measure one configuration in this (fresh) process."""
    import deepfake_xai as dx

    torch.set_num_threads(config["threads"])
    device = torch.device(config["device"])
    torch.manual_seed(0)
    detector = dx.load_detector(config["detector"], image_size=config["image_size"], device=device)
    generator = torch.Generator().manual_seed(0)
    size = config["image_size"]
    batch = torch.randint(
        0, 256, (config["batch_size"], 3, size, size), dtype=torch.uint8, generator=generator
    )
    step = build_step(config["side"], detector, batch, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    gc.collect()
    baseline = rss_bytes()
    exact_peak = reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step()
    sync()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < config["min_iters"] or (
        time.perf_counter() - started < config["seconds"] and len(times) < config["max_iters"]
    ):
        tick = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - tick)
    peak = (
        torch.cuda.max_memory_allocated(device)
        if device.type == "cuda"
        else peak_rss_bytes(exact_peak) - baseline
    )
    median = statistics.median(times)
    return {
        **config,
        "images_per_s": config["batch_size"] / median,
        "median_batch_s": median,
        "iterations": len(times),
        "peak_mib": max(peak, 0) / 2**20,
        "peak_kind": "cuda max_memory_allocated" if device.type == "cuda" else "RSS high-water",
    }


# -- the driver -------------------------------------------------------------------------------
def run_config(config: dict, env: dict[str, str]) -> dict:
    """One configuration in a fresh subprocess; failures are recorded, not raised."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(config)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {
            **config,
            "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed",
        }
    return json.loads(proc.stdout.strip().splitlines()[-1])


def faster(old: dict | None, new: dict) -> dict:
    """The better of two runs of one configuration: highest images/s, lowest peak memory."""
    if old is None or "error" in old:
        return new
    if "error" in new:
        return old
    row = max(old, new, key=lambda r: r["images_per_s"])
    return {**row, "peak_mib": min(old["peak_mib"], new["peak_mib"])}


def bench_env(threads: int, malloc: bool) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    repo = str(HERE.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
    if malloc:
        env.update(MALLOC_ENV)
    return env


def add_ratios(results: list[dict]) -> None:
    """``vs_best_plain`` per row and ``memory_vs_pgc`` for the engine rows."""
    groups: dict[tuple, dict[str, dict]] = {}
    for row in results:
        groups.setdefault((row["detector"], row["batch_size"]), {})[row["side"]] = row
    for sides in groups.values():
        plain = [sides[s]["images_per_s"] for s in PLAIN if "images_per_s" in sides.get(s, {})]
        pgc = sides.get("pytorch_grad_cam", {}).get("peak_mib")
        for row in sides.values():
            if "images_per_s" in row and plain:
                row["vs_best_plain"] = row["images_per_s"] / max(plain)
            if "peak_mib" in row and pgc:
                row["memory_vs_pgc"] = row["peak_mib"] / pgc


def table(results: list[dict]) -> str:
    lines = [
        "| detector | batch | side | images/s | x best plain | peak MiB | x pgc memory |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for row in results:
        if "error" in row:
            lines.append(
                f"| {row['detector']} | {row['batch_size']} | {row['side']} | "
                f"failed: {row['error']} | | | |"
            )
            continue
        lines.append(
            f"| {row['detector']} | {row['batch_size']} | {row['side']} | "
            f"{row['images_per_s']:.1f} | {row.get('vs_best_plain', 0):.2f} | "
            f"{row['peak_mib']:.0f} | {row.get('memory_vs_pgc', 0):.2f} |"
        )
    return "\n".join(lines)


def update_readme(report: dict, path: Path = README) -> None:
    """Replace the block between the markers (the rest of the README is left alone)."""
    env = " ".join(f"{k}={v}" for k, v in report["env"].items())
    update_readme_section(
        path,
        "explain_throughput",
        [
            f"Command: `{report['command']}`",
            "",
            f"Machine: {report['machine']}; torch {report['torch']}; device {report['device']}; "
            f"{report['threads']} threads; {report['image_size']} px; best of {report['rounds']} "
            "interleaved round(s); environment for every side: "
            f"`{env}`. Measured {report['date']}.",
            "",
            table(report["results"]),
        ],
        heading="Explain throughput",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few iterations (a rough number)")
    parser.add_argument("--batch-sizes", default="1,32", help="comma-separated (default 1,32)")
    parser.add_argument("--detectors", default="efficientnet_b0,mobilenetv2_100")
    parser.add_argument("--sides", default=",".join(SIDES), help="comma-separated subset")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 8))
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--rounds", type=int, default=None, help="interleaved repeats, best kept (quick 1, else 3)"
    )
    parser.add_argument("--no-malloc-env", action="store_true", help="leave glibc malloc as is")
    add_output_args(parser, "explain_throughput")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    env = bench_env(args.threads, not args.no_malloc_env)
    args.rounds = args.rounds or (1 if args.quick else 3)
    timing = (
        {"min_iters": 2, "max_iters": 10, "seconds": 6.0}
        if args.quick
        else {"min_iters": 5, "max_iters": 200, "seconds": 30.0}
    )
    configs = [
        {
            "detector": detector,
            "batch_size": int(batch_size),
            "side": side,
            "image_size": args.image_size,
            "threads": args.threads,
            "device": args.device,
            **timing,
        }
        for detector in args.detectors.split(",")
        for batch_size in args.batch_sizes.split(",")
        for side in args.sides.split(",")
    ]
    best: dict[int, dict] = {}
    for round_ in range(args.rounds):
        for index, config in enumerate(configs):
            row = run_config(config, env)
            if "error" in row:
                shown = row["error"]
            else:
                shown = f"{row['images_per_s']:.1f} img/s, {row['peak_mib']:.0f} MiB"
            print(
                f"round {round_ + 1}: {config['detector']} b{config['batch_size']} "
                f"{config['side']}: {shown}",
                flush=True,
            )
            best[index] = faster(best.get(index), row)
    results = [best[i] for i in range(len(configs))]
    add_ratios(results)
    report = {
        "command": command_line("explain_throughput.py", argv),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "torch": torch.__version__,
        "device": args.device,
        "threads": args.threads,
        "rounds": args.rounds,
        "image_size": args.image_size,
        "env": {k: env[k] for k in ("OMP_NUM_THREADS", *MALLOC_ENV) if k in env},
        "results": results,
    }
    write_json(args.out, report)
    update_readme(report, args.readme)
    print(f"wrote {args.out} and the table in {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``analyze`` end to end with faces found first, before and after issue 23, interleaved.

Each side runs in a fresh process: ``dx.analyze`` of the same shared faces (the shipped
detector, final-layer Grad-CAM, no projection, no report, start-up included), the same call
again (a notebook's next call: the imports and warm sessions are there), then, in the same
process, ``Engine.run`` alone on the same faces decoded beforehand (the issue's ceiling).

- ``before``: glibc's default allocator (``DEEPFAKE_XAI_MALLOC=0``), the eager engine
  (``DEEPFAKE_XAI_ONNX=0``), the network built on load (``DEEPFAKE_XAI_DEFER=0``), the full
  face search for every image (``find_faces(..., aligned_first=False)``) and decoding in
  DataLoader processes;
- ``after``: the package's defaults (allocator setting, ONNX Runtime, the network of a
  checkpoint loaded before built only when needed, quick search for aligned crops, decoding in
  threads).

    python benchmarks/analyze_speed.py --rounds 3

``--device cuda`` runs both sides and the engine on the GPU (``benchmarks/gpu_check.sh``); the
CPU-only settings then change nothing on either side.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    HERE,
    add_output_args,
    command_line,
    load_average,
    machine,
    update_readme_section,
    write_json,
)
from sources import FACES

DATA = FACES / "val"


def worker(config: dict) -> dict:
    import torch

    import deepfake_xai as dx
    from deepfake_xai import faces
    from deepfake_xai.analysis import analyzer, decode, loader

    if config["side"] == "before":
        decode.find_faces = functools.partial(faces.find_faces, aligned_first=False)
        analyzer.make_loader = lambda dataset, plan, workers, device: loader.decode_in_processes(
            dataset, plan, workers
        )
    torch.set_num_threads(config["threads"])
    root = Path(config["data"])
    count = config["images"]
    paths = sorted((root / "real").glob("*.jpg"))[: count // 2]
    paths += sorted((root / "fake").glob("*.jpg"))[: count - len(paths)]
    seconds = []
    for _ in range(2):  # the first call pays the start-up; the second is a notebook's next call
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            result = dx.analyze(
                [str(p) for p in paths],
                detectors=["default"],
                projection=None,
                report=False,
                progress=False,
                batch_size=32,
                threads=config["threads"],
                device=config["device"],
                out=out,
            )
            seconds.append(time.perf_counter() - start)
            found = int((result.predictions["status"] == "ok").sum())
    from deepfake_xai.images import load_image
    from deepfake_xai.preprocessing import to_uint8_tensor

    batch = torch.stack([to_uint8_tensor(load_image(p)) for p in paths])
    engine = dx.Engine(["default"], device=config["device"])
    engine.run(batch[:32])
    start = time.perf_counter()
    for i in range(0, len(batch), 32):
        engine.run(batch[i : i + 32])
    engine_s = time.perf_counter() - start
    return {
        **config,
        "analyze_images_per_s": count / seconds[0],
        "second_call_images_per_s": count / seconds[1],
        "engine_images_per_s": count / engine_s,
        "faces_found": found,
        "device_name": torch.cuda.get_device_name(0) if engine.device.type == "cuda" else "cpu",
    }


def run(config: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(config["threads"]))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE.parent), env.get("PYTHONPATH")) if p)
    for name in ("DEEPFAKE_XAI_MALLOC", "DEEPFAKE_XAI_ONNX", "DEEPFAKE_XAI_DEFER"):
        env.pop(name, None)
    if config["side"] == "before":
        env.update(DEEPFAKE_XAI_MALLOC="0", DEEPFAKE_XAI_ONNX="0", DEEPFAKE_XAI_DEFER="0")
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(config)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {**config, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    add_output_args(parser, "analyze_speed")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    # A user's later processes find the ONNX export and the checkpoint's load record that the
    # first one left in the cache; this unrecorded run leaves them, as on a machine in use.
    run(
        {
            "side": "after",
            "round": -1,
            "data": str(args.data),
            "images": args.images,
            "threads": args.threads,
            "device": args.device,
        }
    )
    load_before = load_average()
    rows = []
    for round_ in range(args.rounds):
        for side in ("before", "after"):
            config = {"side": side, "round": round_, "data": str(args.data)}
            row = run(
                {**config, "images": args.images, "threads": args.threads, "device": args.device}
            )
            print(row, flush=True)
            rows.append(row)
    ok = [r for r in rows if "error" not in r]

    def median(side: str, key: str) -> float:
        return statistics.median(r[key] for r in ok if r["side"] == side)

    by_round = {}
    for r in ok:
        by_round.setdefault(r["round"], {})[r["side"]] = r
    speedups = [
        got["after"]["analyze_images_per_s"] / got["before"]["analyze_images_per_s"]
        for got in by_round.values()
        if len(got) == 2
    ]
    report = {
        "command": command_line("analyze_speed.py", argv),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "load_before": load_before,
        "load_after": load_average(),
        "rows": rows,
        "speedup_per_round": [round(s, 2) for s in speedups],
    }
    write_json(args.out, report)
    lines = [
        "| side | analyze images/s | engine images/s | analyze / engine "
        "| second call images/s | second call / engine |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for side in ("before", "after"):
        a, e = median(side, "analyze_images_per_s"), median(side, "engine_images_per_s")
        second = median(side, "second_call_images_per_s")
        lines.append(
            f"| {side} | {a:.1f} | {e:.1f} | {a / e:.2f} | {second:.1f} | {second / e:.2f} |"
        )
    device = next((r["device_name"] for r in ok), args.device)
    gpu = "" if device == "cpu" else f", {device}"
    update_readme_section(
        args.readme,
        "analyze_speed",
        [
            f"Command: `{report['command']}`",
            "",
            f"Machine: {report['machine']}{gpu}, {args.threads} torch thread(s); "
            f"{args.images} shared faces, faces found first, the shipped detector, final-layer "
            f"Grad-CAM, start-up included; medians of {args.rounds} interleaved rounds; load "
            f"average {report['load_before']} before and {report['load_after']} after. "
            f"Measured {report['date']}.",
            "",
            *lines,
            "",
            "analyze after / before, per round: "
            + ", ".join(f"{s:.2f}x" for s in report["speedup_per_round"]),
        ],
        heading="Analyze end to end: before and after issue 23",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

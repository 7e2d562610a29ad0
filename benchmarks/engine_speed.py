"""The engine's CPU speed levers, before and after, interleaved: glibc's allocator and compiling.

Each (side, allocator) pair runs in a fresh subprocess on the same decoded shared faces (the
shipped detector at its 256 px, batch 32 by default), and the pairs alternate round by round, so
load from other jobs hits every pair alike; compare the ratios, not the absolute numbers.

- allocator ``off``: ``DEEPFAKE_XAI_MALLOC=0``, glibc as a user's process had it before;
- allocator ``mallopt``: the package's default, :func:`deepfake_xai.runtime.configure_allocator`;
- allocator ``env``: ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`` set before start (what
  the other benchmarks do), to check that ``mallopt`` at run time matches it.

Sides: ``plain`` (``inference_mode`` forward, channels_last, logit only), ``engine_eager``
(P(fake) + embedding + final-layer Grad-CAM) and ``engine_compiled`` (the same through the
compiled path; its first call, the compilation, is reported separately).

    python benchmarks/engine_speed.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import (
    HERE,
    MALLOC_ENV,
    add_output_args,
    command_line,
    load_average,
    machine,
    update_readme_section,
    write_json,
)
from sources import FACES

DATA = FACES / "val"
ALLOCATORS = ("off", "mallopt", "env")
SIDES = ("plain", "engine_eager", "engine_compiled")


def load_faces(root: Path, count: int):
    """``count`` decoded shared faces as one uint8 batch (real and fake alternating)."""
    import torch

    from deepfake_xai.images import load_image
    from deepfake_xai.preprocessing import to_uint8_tensor

    paths = sorted((root / "real").glob("*.jpg"))[: count // 2 + 1]
    paths += sorted((root / "fake").glob("*.jpg"))[: count // 2 + 1]
    return torch.stack([to_uint8_tensor(load_image(p)) for p in sorted(paths)[:count]])


def worker(config: dict) -> dict:
    """Time one side in this (fresh) process."""
    import torch

    import deepfake_xai as dx
    from deepfake_xai.runtime import configure_allocator

    torch.set_num_threads(config["threads"])
    allocator = configure_allocator()
    batch = load_faces(Path(config["data"]), config["batch_size"])
    detector = dx.load_detector(config["detector"], device="cpu")
    side = config["side"]
    if side == "plain":
        model = detector.model.to(memory_format=torch.channels_last)
        x = detector.normalize(batch).contiguous(memory_format=torch.channels_last)

        def step():
            with torch.inference_mode():
                return model(x)
    else:
        engine = dx.Engine([detector], device="cpu", compiled=side == "engine_compiled")
        step = lambda: engine.run(batch)  # noqa: E731
    tick = time.perf_counter()
    step()
    first = time.perf_counter() - tick
    times = []
    started = time.perf_counter()
    while len(times) < config["min_iters"] or (
        time.perf_counter() - started < config["seconds"] and len(times) < config["max_iters"]
    ):
        tick = time.perf_counter()
        step()
        times.append(time.perf_counter() - tick)
    median = statistics.median(times)
    return {
        **config,
        "allocator_state": allocator,
        "first_call_s": first,
        "median_batch_s": median,
        "images_per_s": config["batch_size"] / median,
        "iterations": len(times),
    }


def run_config(config: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(config["threads"]))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE.parent), env.get("PYTHONPATH")) if p)
    for name in MALLOC_ENV:
        env.pop(name, None)
    env.pop("DEEPFAKE_XAI_MALLOC", None)
    if config["allocator"] == "off":
        env["DEEPFAKE_XAI_MALLOC"] = "0"
    elif config["allocator"] == "env":
        env.update(MALLOC_ENV)
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(config)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {**config, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(rows: list[dict]) -> list[dict]:
    """Per (side, allocator): median images/s over rounds and the median first-call seconds."""
    keys = list(dict.fromkeys((r["side"], r["allocator"]) for r in rows))
    out = []
    for side, allocator in keys:
        ok = [
            r for r in rows if (r["side"], r["allocator"]) == (side, allocator) and "error" not in r
        ]
        if not ok:
            out.append({"side": side, "allocator": allocator, "error": "every round failed"})
            continue
        out.append(
            {
                "side": side,
                "allocator": allocator,
                "images_per_s": statistics.median(r["images_per_s"] for r in ok),
                "per_round": [round(r["images_per_s"], 1) for r in ok],
                "first_call_s": statistics.median(r["first_call_s"] for r in ok),
            }
        )
    return out


def ratio_lines(summary: list[dict], rows: list[dict]) -> list[str]:
    """Round-by-round ratios of interest (each pair ran back to back in one round)."""

    def paired(a: tuple[str, str], b: tuple[str, str]) -> list[float]:
        by_round: dict[int, dict] = {}
        for r in rows:
            if "error" not in r:
                by_round.setdefault(r["round"], {})[(r["side"], r["allocator"])] = r
        return [
            got[a]["images_per_s"] / got[b]["images_per_s"]
            for got in by_round.values()
            if a in got and b in got
        ]

    lines = []
    pairs = [
        (("plain", "mallopt"), ("plain", "off"), "plain: mallopt / off"),
        (("plain", "env"), ("plain", "mallopt"), "plain: env / mallopt"),
        (("engine_eager", "mallopt"), ("engine_eager", "off"), "engine eager: mallopt / off"),
        (("engine_eager", "env"), ("engine_eager", "mallopt"), "engine eager: env / mallopt"),
        (("engine_compiled", "mallopt"), ("engine_eager", "mallopt"), "compiled / eager engine"),
        (("engine_compiled", "mallopt"), ("plain", "mallopt"), "compiled engine / plain eager"),
        (("engine_compiled", "mallopt"), ("plain", "off"), "compiled engine / plain, before"),
        (("engine_eager", "mallopt"), ("plain", "mallopt"), "eager engine / plain eager"),
    ]
    for a, b, label in pairs:
        ratios = paired(a, b)
        if ratios:
            shown = ", ".join(f"{r:.2f}" for r in ratios)
            lines.append(f"- {label}: median {statistics.median(ratios):.2f}x (rounds: {shown})")
    return lines


def update_readme(report: dict, path: Path) -> None:
    table = [
        "| side | allocator | images/s (median of rounds) | per round | first call s |",
        "|---|---|---:|---|---:|",
    ]
    for row in report["summary"]:
        if "error" in row:
            table.append(f"| {row['side']} | {row['allocator']} | failed: {row['error']} | | |")
            continue
        table.append(
            f"| {row['side']} | {row['allocator']} | {row['images_per_s']:.1f} | "
            f"{', '.join(map(str, row['per_round']))} | {row['first_call_s']:.1f} |"
        )
    update_readme_section(
        path,
        "engine_speed",
        [
            f"Command: `{report['command']}`",
            "",
            f"Machine: {report['machine']}; torch {report['torch']}; {report['threads']} "
            f"threads; detector `{report['detector']}`, {report['batch_size']} decoded shared "
            f"faces (256 px) per batch; {report['rounds']} interleaved rounds; load average "
            f"{report['load_before']} before, {report['load_after']} after (the cores were "
            f"shared with other jobs). Measured {report['date']}.",
            "",
            *table,
            "",
            "Ratios, pair by pair within a round:",
            "",
            *report["ratios"],
        ],
        heading="Engine speed: allocator and compiled path",
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default="default")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--allocators", default=",".join(ALLOCATORS))
    parser.add_argument("--seconds", type=float, default=8.0)
    add_output_args(parser, "engine_speed")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    import torch

    load_before = load_average()
    pairs = [
        (side, allocator)
        for side in args.sides.split(",")
        for allocator in args.allocators.split(",")
        if not (side == "engine_compiled" and allocator != "mallopt")
    ]
    rows = []
    for round_ in range(args.rounds):
        for side, allocator in pairs:
            config = {
                "side": side,
                "allocator": allocator,
                "round": round_,
                "detector": args.detector,
                "data": str(args.data),
                "batch_size": args.batch_size,
                "threads": args.threads,
                "min_iters": 3,
                "max_iters": 50,
                "seconds": args.seconds,
            }
            row = run_config(config)
            shown = row.get("error") or f"{row['images_per_s']:.1f} img/s"
            print(f"round {round_ + 1}: {side} / {allocator}: {shown}", flush=True)
            rows.append(row)
    summary = summarise(rows)
    report = {
        "command": command_line("engine_speed.py", argv),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "torch": torch.__version__,
        "threads": args.threads,
        "detector": args.detector,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "load_before": load_before,
        "load_after": load_average(),
        "summary": summary,
        "ratios": ratio_lines(summary, rows),
        "rows": rows,
    }
    write_json(args.out, report)
    update_readme(report, args.readme)
    print("\n".join(report["ratios"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

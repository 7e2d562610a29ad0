"""The engine's CPU speed levers, before and after, interleaved: glibc's allocator and compiling.

Each (side, allocator) pair runs in a fresh subprocess on the same decoded shared faces (the
shipped detector at its 256 px, batch 32 by default), and the pairs alternate round by round, so
load from other jobs hits every pair alike; compare the ratios, not the absolute numbers.

- allocator ``off``: ``DEEPFAKE_XAI_MALLOC=0``, glibc as a user's process had it before;
- allocator ``mallopt``: the package's default, :func:`deepfake_xai.runtime.configure_allocator`;
- allocator ``env``: ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`` set before start (what
  the other benchmarks do), to check that ``mallopt`` at run time matches it.

Sides: ``plain`` (``inference_mode`` forward, channels_last, logit only), ``engine_eager``
(P(fake) + embedding + final-layer Grad-CAM), ``engine_compiled`` (the same through the
``torch.compile`` path) and ``engine_onnx`` (through ONNX Runtime); their first calls (the
compilation, the export or session creation) are reported separately.

    python benchmarks/engine_speed.py --rounds 3

``--explain`` measures what the issue's filer checks, in one process: ``dx.explain(default,
32 decoded faces, method="gradcam", layers=("final",))`` against ``model(x)`` under
``no_grad`` in channels_last, calls alternating, first calls apart. Each round runs three
fresh processes: the explain as before (``DEEPFAKE_XAI_ONNX=0``), with ONNX Runtime and an
empty cache (its first call exports), and again with that cache (its first call only creates
the session).

    python benchmarks/engine_speed.py --explain --rounds 3 --threads 1
"""

from __future__ import annotations

import argparse
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
SIDES = ("plain", "engine_eager", "engine_compiled", "engine_onnx")
EXPLAIN_SIDES = ("explain_eager", "explain_onnx_cold", "explain_onnx_warm")


def load_faces(root: Path, count: int):
    """``count`` decoded shared faces as one uint8 batch (real and fake alternating)."""
    import torch

    from deepfake_xai.preprocessing import to_uint8_tensor

    return torch.stack([to_uint8_tensor(image) for image in load_pictures(root, count)])


def load_pictures(root: Path, count: int) -> list:
    """``count`` decoded shared faces as PIL images (real and fake alternating)."""
    from deepfake_xai.images import load_image

    paths = sorted((root / "real").glob("*.jpg"))[: count // 2 + 1]
    paths += sorted((root / "fake").glob("*.jpg"))[: count // 2 + 1]
    return [load_image(p) for p in sorted(paths)[:count]]


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
        engine = dx.Engine(
            [detector],
            device="cpu",
            compiled=side == "engine_compiled",
            onnx=side == "engine_onnx",
        )
        step = lambda: engine.run(batch)  # noqa: E731
    tick = time.perf_counter()
    step()
    first = time.perf_counter() - tick
    setup = {}
    if side == "engine_onnx":
        setup = onnx_setup(detector)
        if not setup:
            return {**config, "error": "the ONNX Runtime path fell back to eager"}
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
        **setup,
        "median_batch_s": median,
        "images_per_s": config["batch_size"] / median,
        "iterations": len(times),
    }


def onnx_setup(detector) -> dict:
    """What the process's ONNX Runtime path of ``detector`` cost to make ({}: there is none)."""
    from deepfake_xai import onnx_engine

    observed = detector.reliability.module_layers if detector.reliability else []
    try:
        features, _ = onnx_engine.onnx_features(detector, observed)
    except onnx_engine.OnnxUnavailable:
        return {}
    return {
        "exported": features.exported,
        "export_s": features.export_seconds,
        "session_s": features.session_seconds,
    }


def explain_worker(config: dict) -> dict:
    """The filer's check in this (fresh) process: ``dx.explain`` of 32 decoded faces against
    plain eager channels_last ``model(x)`` under ``no_grad``, calls alternating."""
    import torch

    import deepfake_xai as dx

    torch.set_num_threads(config["threads"])
    pictures = load_pictures(Path(config["data"]), config["batch_size"])
    detector = dx.load_detector(config["detector"], device="cpu")
    model = detector.model.to(memory_format=torch.channels_last)
    x = detector.normalize(load_faces(Path(config["data"]), config["batch_size"]))
    x = x.contiguous(memory_format=torch.channels_last)

    def plain() -> None:
        with torch.no_grad():
            model(x)

    def explain() -> None:
        dx.explain(detector, pictures, method="gradcam", layers=("final",))

    first = {}
    for name, step in (("plain", plain), ("explain", explain)):
        tick = time.perf_counter()
        step()
        first[name] = time.perf_counter() - tick
    times: dict[str, list[float]] = {"plain": [], "explain": []}
    for _ in range(config["pairs"]):
        for name, step in (("plain", plain), ("explain", explain)):
            tick = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - tick)
    ratios = [p / e for p, e in zip(times["plain"], times["explain"], strict=True)]
    return {
        **config,
        "onnx": onnx_setup(detector) if config["side"] != "explain_eager" else {},
        "first_plain_s": first["plain"],
        "first_explain_s": first["explain"],
        "plain_images_per_s": config["batch_size"] / statistics.median(times["plain"]),
        "explain_images_per_s": config["batch_size"] / statistics.median(times["explain"]),
        "ratio": statistics.median(ratios),
        "pair_ratios": [round(r, 3) for r in ratios],
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
    if config.get("onnx_cache"):
        env["DEEPFAKE_XAI_CACHE"] = config["onnx_cache"]
    env.pop("DEEPFAKE_XAI_ONNX", None)
    if config["side"] == "explain_eager":
        env["DEEPFAKE_XAI_ONNX"] = "0"
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
        (("engine_onnx", "mallopt"), ("engine_eager", "mallopt"), "onnx / eager engine"),
        (("engine_onnx", "mallopt"), ("engine_compiled", "mallopt"), "onnx / compiled engine"),
        (("engine_onnx", "mallopt"), ("plain", "mallopt"), "onnx engine / plain eager"),
    ]
    for a, b, label in pairs:
        ratios = paired(a, b)
        if ratios:
            shown = ", ".join(f"{r:.2f}" for r in ratios)
            lines.append(f"- {label}: median {statistics.median(ratios):.2f}x (rounds: {shown})")
    return lines


def update_readme(report: dict, path: Path, section: str) -> None:
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
        section,
        [
            f"Command: `{report['command']}`",
            "",
            _machine_line(report, f"(256 px) per batch; {report['rounds']} interleaved rounds"),
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
    parser.add_argument("--explain", action="store_true", help="the filer's check (see above)")
    parser.add_argument("--pairs", type=int, default=12, help="--explain: timed call pairs")
    parser.add_argument("--section", help="README block to write (default: by the mode)")
    add_output_args(parser, "engine_speed")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        config = json.loads(args.worker)
        measure = explain_worker if config["side"] in EXPLAIN_SIDES else worker
        print(json.dumps(measure(config)))
        return 0
    if args.explain:
        return explain_main(args, argv)

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
        **_record(args, argv, load_before),
        "summary": summary,
        "ratios": ratio_lines(summary, rows),
        "rows": rows,
    }
    write_json(args.out, report)
    update_readme(report, args.readme, args.section or "engine_speed")
    print("\n".join(report["ratios"]))
    return 0


def _machine_line(report: dict, run: str) -> str:
    """The README's "Machine:" sentence; ``run`` says how the faces were fed and timed."""
    return (
        f"Machine: {report['machine']}; torch {report['torch']}; {report['threads']} "
        f"threads; detector `{report['detector']}`, {report['batch_size']} decoded shared "
        f"faces {run}; load average {report['load_before']} before, {report['load_after']} "
        f"after (the cores were shared with other jobs). Measured {report['date']}."
    )


def _record(args: argparse.Namespace, argv: list[str] | None, load_before: str) -> dict:
    """What every report of this script records about its run."""
    import torch

    return {
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
    }


def explain_main(args: argparse.Namespace, argv: list[str] | None) -> int:
    """The filer's check, round by round (see the module's docstring)."""

    load_before = load_average()
    rows = []
    for round_ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="dfx-onnx-cache-") as cache:
            for side in EXPLAIN_SIDES:
                config = {
                    "side": side,
                    "allocator": "mallopt",
                    "round": round_,
                    "detector": args.detector,
                    "data": str(args.data),
                    "batch_size": args.batch_size,
                    "threads": args.threads,
                    "pairs": args.pairs,
                    "onnx_cache": cache if side != "explain_eager" else "",
                }
                row = run_config(config)
                shown = row.get("error") or (
                    f"{row['ratio']:.2f}x plain, first call {row['first_explain_s']:.2f} s"
                )
                print(f"round {round_ + 1}: {side}: {shown}", flush=True)
                rows.append(row)
    report = {**_record(args, argv, load_before), "pairs": args.pairs, "rows": rows}
    write_json(args.out.with_name("engine_speed_explain.json"), report)
    update_explain_readme(report, args.readme, args.section or "engine_explain")
    return 0


def update_explain_readme(report: dict, path: Path, section: str) -> None:
    table = [
        "| side | explain / plain (median of pairs) | per round | explain images/s | "
        "plain images/s | first explain s | of which export s | session s | first plain s |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for side in EXPLAIN_SIDES:
        ok = [r for r in report["rows"] if r["side"] == side and "error" not in r]
        if not ok:
            table.append(f"| {side} | failed | | | | | | | |")
            continue

        def median(key: str, rows: list[dict] = ok) -> float:
            return statistics.median(r[key] for r in rows)

        def onnx(key: str, rows: list[dict] = ok) -> str:
            values = [r["onnx"][key] for r in rows if r["onnx"]]
            return f"{statistics.median(values):.2f}" if values else "-"

        per_round = ", ".join(f"{r['ratio']:.2f}" for r in ok)
        table.append(
            f"| {side} | {median('ratio'):.2f}x | {per_round} | "
            f"{median('explain_images_per_s'):.1f} | {median('plain_images_per_s'):.1f} | "
            f"{median('first_explain_s'):.2f} | {onnx('export_s')} | {onnx('session_s')} | "
            f"{median('first_plain_s'):.2f} |"
        )
    update_readme_section(
        path,
        section,
        [
            f"Command: `{report['command']}`",
            "",
            _machine_line(
                report,
                f"(256 px, PIL images) per call; {report['rounds']} rounds of three fresh "
                f"processes, {report['pairs']} alternating call pairs each",
            ),
            "",
            *table,
        ],
    )


if __name__ == "__main__":
    sys.exit(main())

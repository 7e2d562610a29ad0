"""Peak memory of decoding one image through ``load_image``, per file kind, against Pillow's own
``Image.open(path).convert("RGB")``, and against the estimate the gate budgets with
(``deepfake_xai.images.decode_cost``).

Each file is small on disk (smooth content compresses well) and large in pixels, the shape of the
files that cost a gigabyte in the outside test. Every decode runs in a fresh subprocess: peak RSS
(Linux ``VmHWM`` after ``/proc/self/clear_refs``) minus the RSS before the decode, with the file's
bytes and every module already loaded.

    python benchmarks/decode_memory.py                 # 8000 x 8000 (64 MP), a few minutes
    python benchmarks/decode_memory.py --side 4000     # 16 MP, quicker
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
from _common import (
    add_output_args,
    command_line,
    machine,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
    update_readme_section,
    write_json,
)
from PIL import Image

MIB = 2**20


def _ramp(side: int) -> np.ndarray:
    """A smooth (side, side) ramp in [0, 1): compresses to almost nothing."""
    line = np.linspace(0, 1, side, endpoint=False, dtype=np.float32)
    return (line[None, :] + line[:, None]) / 2


def _rgb(side: int) -> np.ndarray:
    ramp = (_ramp(side) * 255).astype(np.uint8)
    return np.stack([ramp, ramp[::-1], ramp[:, ::-1]], axis=-1)


def _save(img: Image.Image, path: Path, fmt: str, **options) -> None:
    img.save(path, fmt, **options)


KINDS: dict[str, tuple[str, Callable[[int], Image.Image], dict]] = {
    "int32 TIFF": ("tif", lambda s: Image.fromarray((_ramp(s) * 2**20).astype(np.int32)), {}),
    "float32 TIFF": ("tif", lambda s: Image.fromarray(_ramp(s)), {}),
    "16-bit grey PNG": ("png", lambda s: Image.fromarray((_ramp(s) * 65535).astype(np.uint16)), {}),
    "RGBA PNG": ("png", lambda s: Image.fromarray(_rgb(s)).convert("RGBA"), {}),
    "LA PNG": ("png", lambda s: Image.fromarray(_rgb(s)).convert("LA"), {}),
    "palette PNG with transparency": (
        "png",
        lambda s: Image.fromarray(_rgb(s)).convert("P"),
        {"transparency": 0},
    ),
    "RGB PNG": ("png", lambda s: Image.fromarray(_rgb(s)), {}),
    "RGB TIFF": ("tif", lambda s: Image.fromarray(_rgb(s)), {}),
    "RGB JPEG": ("jpg", lambda s: Image.fromarray(_rgb(s)), {"quality": 90}),
    "CMYK JPEG": ("jpg", lambda s: Image.fromarray(_rgb(s)).convert("CMYK"), {"quality": 90}),
    "RGBA WebP": ("webp", lambda s: Image.fromarray(_rgb(s)).convert("RGBA"), {"lossless": True}),
}
_TIFF_OPTIONS = {"compression": "tiff_adobe_deflate"}


def make_file(kind: str, side: int, folder: Path) -> Path:
    suffix, build, options = KINDS[kind]
    path = folder / f"{kind.replace(' ', '_')}_{side}.{suffix}"
    if not path.exists():
        fmt = {"tif": "TIFF", "png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[suffix]
        extra = _TIFF_OPTIONS if fmt == "TIFF" else {}
        _save(build(side), path, fmt, **options, **extra)
    return path


def measure(path: Path, side: str) -> dict:
    """In this process: peak RSS growth of one decode by ``side`` (``gate`` or ``pillow``)."""
    from deepfake_xai.images import decode_cost, load_image

    estimate = decode_cost(path)
    data = path.read_bytes()  # the page cache and the file's bytes are not the decode's
    del data
    before = rss_bytes()
    reset = reset_peak_rss()
    start = time.perf_counter()
    outcome = "ok"
    try:
        if side == "gate":
            out = load_image(path, max_decode_bytes=2**40)
        else:
            with Image.open(path) as img:
                out = img.convert("RGB")
        del out
    except Exception as exc:  # a refusal is an outcome to record, not a crash
        outcome = f"{type(exc).__name__}: {exc}"[:160]
    seconds = time.perf_counter() - start
    peak = peak_rss_bytes(reset) - before
    return {"peak_bytes": peak, "estimate_bytes": estimate, "seconds": seconds, "outcome": outcome}


def run_worker(spec: str) -> None:
    path, side = spec.rsplit("::", 1)
    print(json.dumps(measure(Path(path), side)))


def measure_in_subprocess(path: Path, side: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", f"{path}::{side}"],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=8000, help="image side in pixels (8000)")
    parser.add_argument("--kinds", nargs="*", default=list(KINDS), help="file kinds to measure")
    parser.add_argument("--note", default="", help="words on the machine's load, for the record")
    add_output_args(parser, "decode_memory")
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args.worker)
        return
    rows, load = [], round(os.getloadavg()[0], 1)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds:
            path = make_file(kind, args.side, Path(tmp))
            gate = measure_in_subprocess(path, "gate")
            pillow = measure_in_subprocess(path, "pillow")
            rows.append(
                {"kind": kind, "file_bytes": path.stat().st_size, "gate": gate, "pillow": pillow}
            )
            print(
                kind, round(gate["peak_bytes"] / MIB), round(pillow["peak_bytes"] / MIB), flush=True
            )
    report = {
        "command": command_line("decode_memory.py", argv),
        "machine": machine() + (f", {args.note}" if args.note else ""),
        "load_average": load,
        "date": date.today().isoformat(),
        "side": args.side,
        "rows": rows,
    }
    write_json(args.out, report)
    update_readme_section(args.readme, "decode_memory", _table(report), heading="Decode memory")


def _table(report: dict) -> list[str]:
    side = report["side"]
    lines = [
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']} (load average {report['load_average']} at the start); "
        f"{side} x {side} px ({side * side / 1e6:.0f} MP) per "
        f"file; measured {report['date']}. Peak = RSS high-water mark of a fresh process minus "
        "its RSS just before the decode. *pillow* is `Image.open(path).convert('RGB')`; *gate* "
        "is `load_image(path)` (with the budget lifted, to measure it); *estimate* is "
        "`decode_cost`, which `load_image` compares with `max_decode_bytes` (default 512 MiB) "
        "before decoding.",
        "",
        "| file kind | file KB | gate peak MiB | estimate MiB | peak / estimate | pillow peak MiB "
        "| gate s | refused at 512 MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in report["rows"]:
        gate, pillow = row["gate"], row["pillow"]
        ratio = gate["peak_bytes"] / gate["estimate_bytes"]
        refused = "yes" if gate["estimate_bytes"] > 512 * MIB else "no"
        pillow_peak = f"{pillow['peak_bytes'] / MIB:.0f}" if pillow["outcome"] == "ok" else "fails"
        lines.append(
            f"| {row['kind']} | {row['file_bytes'] / 1024:.0f} | {gate['peak_bytes'] / MIB:.0f} "
            f"| {gate['estimate_bytes'] / MIB:.0f} | {ratio:.2f} | {pillow_peak} "
            f"| {gate['seconds']:.2f} | {refused} |"
        )
    return lines


if __name__ == "__main__":
    main()

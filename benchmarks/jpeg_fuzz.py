"""Fuzzed JPEGs through the image gate: how many damaged files are caught, and what gets through.

Mutates face JPEGs (the shared FFHQ/StyleGAN sample; synthetic photo-like JPEGs when it is
absent; re-encoded as progressive JPEGs with ``--progressive``) in eleven ways: cut at a random
point (alone, + the end-of-image marker, + 64 KiB of zeros), cut before a scan + the end-of-image
marker (a progressive file that libjpeg finishes without a warning), bytes flipped, overwritten,
inserted, deleted or zeroed inside the scan, the frame header patched to claim up to 8000 x 8000
pixels, and junk appended after the end of the image (harmless: those must still load, pixel for
pixel). Each mutant is decoded by Pillow alone (``Image.open(...).convert("RGB")``, what the gate
did before) and by ``load_image``; accepted files are compared with the intact image (mean
absolute difference in grey levels).

    python benchmarks/jpeg_fuzz.py                  # 2200 mutants, a few minutes
    python benchmarks/jpeg_fuzz.py --progressive --readme-section jpeg_fuzz_progressive
"""

from __future__ import annotations

import argparse
import io
import os
import random
import time
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np
from _common import add_output_args, command_line, machine, update_readme_section, write_json
from PIL import Image

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces-140k-sample" / "val"
MUTATIONS = (
    "cut",
    "cut + EOI",
    "cut + 64 KiB zeros",
    "cut at a scan + EOI",
    "flip bytes",
    "overwrite run",
    "insert bytes",
    "delete bytes",
    "zero run",
    "patch frame size",
    "junk after EOI",
)
BUCKETS = ("rejected", "identical (< 1)", "differs 1-10", "differs >= 10", "other size")


def sources(n: int, progressive: bool) -> tuple[list[bytes], str]:
    """``n`` intact JPEGs (re-encoded as progressive JPEGs when asked) and where they came from."""
    originals, origin = _originals(n)
    if not progressive:
        return originals, origin
    out = []
    for data in originals:
        buf = io.BytesIO()
        Image.open(io.BytesIO(data)).save(buf, "JPEG", quality=90, progressive=True)
        out.append(buf.getvalue())
    return out, f"{origin}, re-encoded as progressive JPEGs (quality 90, libjpeg's 10 scans)"


def _originals(n: int) -> tuple[list[bytes], str]:
    found = sorted(FACES.glob("*/*.jpg"))
    if found:
        step = max(1, len(found) // n)
        return [p.read_bytes() for p in found[::step][:n]], f"{FACES} ({n} faces)"
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        yy, xx = np.mgrid[0:256, 0:256]
        base = np.stack([xx, yy, (xx + yy) // 2], -1) + rng.normal(0, 8, (256, 256, 3))
        buf = io.BytesIO()
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out, f"{n} synthetic photo-like JPEGs"


def scan_start(data: bytes) -> int:
    """Offset of the first entropy-coded byte (after the start-of-scan header)."""
    at = data.index(b"\xff\xda")
    return at + 2 + int.from_bytes(data[at + 2 : at + 4], "big")


def scan_markers(data: bytes) -> list[int]:
    """Offsets of every start-of-scan marker (0xFFDA never occurs inside entropy-coded data)."""
    out, at = [], data.find(b"\xff\xda")
    while at != -1:
        out.append(at)
        at = data.find(b"\xff\xda", at + 2)
    return out


def frame_offset(data: bytes) -> int:
    at = 2
    while data[at + 1] not in (0xC0, 0xC1, 0xC2):
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return at


def mutate(data: bytes, kind: str, rng: random.Random) -> bytes:
    start, end = scan_start(data), len(data) - 2
    at = rng.randrange(start, end)
    if kind == "cut":
        return data[:at]
    if kind == "cut + EOI":
        return data[:at] + b"\xff\xd9"
    if kind == "cut + 64 KiB zeros":
        return data[:at] + bytes(65536)
    if kind == "cut at a scan + EOI":
        return data[: rng.choice(scan_markers(data)[1:] or scan_markers(data))] + b"\xff\xd9"
    if kind == "flip bytes":
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(start, end)] ^= rng.randint(1, 255)
        return bytes(out)
    if kind == "overwrite run":
        n = rng.randint(16, 256)
        return data[:at] + rng.randbytes(n) + data[at + n :]
    if kind == "insert bytes":
        return data[:at] + rng.randbytes(rng.randint(1, 64)) + data[at:]
    if kind == "delete bytes":
        return data[:at] + data[at + rng.randint(1, 64) :]
    if kind == "zero run":
        n = rng.randint(512, 4096)
        return data[:at] + bytes(n) + data[at + n :]
    if kind == "patch frame size":
        out, sof = bytearray(data), frame_offset(data)
        side = rng.randint(300, 8000)
        out[sof + 5 : sof + 9] = side.to_bytes(2, "big") * 2
        return bytes(out)
    if kind == "junk after EOI":
        return data + rng.randbytes(rng.randint(1, 4096))
    raise ValueError(kind)


def pillow_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def gate_decode(data: bytes) -> np.ndarray:
    from deepfake_xai.images import load_image

    return np.asarray(load_image(data))


def outcome(decode, data: bytes, reference: np.ndarray) -> tuple[str, str]:
    """(bucket, reason category) of one decode."""
    try:
        pixels = decode(data)
    except Exception as exc:  # every failure is an outcome here
        return "rejected", _category(str(exc))
    if pixels.shape != reference.shape:
        return "other size", ""
    diff = float(np.abs(pixels.astype(np.int16) - reference).mean())
    return ("identical (< 1)" if diff < 1 else "differs 1-10" if diff < 10 else "differs >= 10"), ""


def _category(message: str) -> str:
    for words, label in (
        ("damaged JPEG: its header claims", "header claims more pixels than bytes"),
        ("damaged JPEG: truncated or corrupt", "decoder warning"),
        ("damaged JPEG: the image is incomplete", "scans stop before the image is complete"),
        ("scans: decoding it would take too long", "scan limit"),
        ("not a recognised image format", "no image data (Pillow cannot open the header)"),
        ("corrupt or unsupported JPEG", "decoder error"),
        ("decompression bomb", "size limit"),
        ("above the budget", "memory budget"),
    ):
        if words in message:
            return label
    return "other error"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=int, default=2200)
    parser.add_argument("--progressive", action="store_true", help="re-encode as progressive")
    parser.add_argument("--readme-section", default="jpeg_fuzz", help="README block to replace")
    parser.add_argument("--note", default="", help="words on the machine's load, for the record")
    parser.add_argument("--faces", type=int, default=20, help="intact JPEGs to mutate (20)")
    parser.add_argument("--seed", type=int, default=0)
    add_output_args(parser, "jpeg_fuzz")
    args = parser.parse_args(argv)
    originals, origin = sources(args.faces, args.progressive)
    references = [pillow_decode(d).astype(np.int16) for d in originals]
    rng = random.Random(args.seed)
    load = round(os.getloadavg()[0], 1)
    counts = {side: Counter() for side in ("pillow", "gate")}
    by_kind = {kind: Counter() for kind in MUTATIONS}
    reasons = Counter()
    start = time.perf_counter()
    for i in range(args.mutants):
        kind = MUTATIONS[i % len(MUTATIONS)]
        index = rng.randrange(len(originals))
        data = mutate(originals[index], kind, rng)
        for side, decode in (("pillow", pillow_decode), ("gate", gate_decode)):
            bucket, reason = outcome(decode, data, references[index])
            counts[side][bucket] += 1
            if side == "gate":
                by_kind[kind][bucket] += 1
                if reason:
                    reasons[reason] += 1
    report = {
        "command": command_line("jpeg_fuzz.py", argv),
        "machine": machine() + (f", {args.note}" if args.note else ""),
        "load_average": load,
        "date": date.today().isoformat(),
        "origin": origin,
        "mutants": args.mutants,
        "seconds": round(time.perf_counter() - start, 1),
        "counts": {side: dict(c) for side, c in counts.items()},
        "gate_by_mutation": {kind: dict(c) for kind, c in by_kind.items()},
        "gate_rejections": dict(reasons),
    }
    write_json(args.out, report)
    update_readme_section(args.readme, args.readme_section, _table(report), heading="Fuzzed JPEGs")
    print("\n".join(_table(report)))


def _table(report: dict) -> list[str]:
    def row(label: str, counts: dict) -> str:
        return f"| {label} | " + " | ".join(str(counts.get(b, 0)) for b in BUCKETS) + " |"

    header = "| | " + " | ".join(BUCKETS) + " |"
    rule = "|---|" + "---:|" * len(BUCKETS)
    rejections = ", ".join(f"{k} {v}" for k, v in sorted(report["gate_rejections"].items()))
    return [
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']} (load average {report['load_average']} at the start); "
        f"{report['mutants']} mutants of {report['origin']}, "
        f"{len(MUTATIONS)} mutation kinds in turn; measured {report['date']} "
        f"({report['seconds']} s). Accepted files are compared with the intact image: mean "
        "absolute difference in grey levels. *pillow* is Pillow alone, as the gate decoded "
        "JPEGs before; *gate* is `load_image`.",
        "",
        header,
        rule,
        row("pillow", report["counts"]["pillow"]),
        row("gate", report["counts"]["gate"]),
        "",
        f"Why the gate rejected: {rejections}.",
        "",
        "The gate, per mutation kind:",
        "",
        header.replace("| |", "| mutation |", 1),
        rule,
        *(row(kind, counts) for kind, counts in report["gate_by_mutation"].items()),
    ]


if __name__ == "__main__":
    main()

"""The face step before and after the quick search for aligned crops, interleaved in one process.

``find_faces(image, aligned_first=False)`` (the full search, as before issue 23) and
``find_faces(image)`` (an aligned crop found by a first search for large faces) alternate round
by round over the shared 256 px faces and over 1024 x 768 scenes with a small face in them; the
median milliseconds per image of each, and their ratio per round. Recall and false positives
are ``benchmarks/face_detectors.py``'s (candidates ``chosen`` and ``chosen_full_search``).

    python benchmarks/face_speed.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from _common import (
    add_output_args,
    command_line,
    load_average,
    machine,
    update_readme_section,
    write_json,
)
from PIL import Image
from sources import FACES

DATA = FACES / "val"


def images(root: Path, count: int) -> dict[str, list[Image.Image]]:
    paths = sorted((root / "real").glob("*.jpg"))[: count // 2]
    paths += sorted((root / "fake").glob("*.jpg"))[: count // 2]
    faces = [Image.open(p).convert("RGB") for p in paths]
    scenes = []
    for i, face in enumerate(faces[: max(2, count // 8)]):
        scene = Image.new("RGB", (1024, 768), (90 + i, 110, 130))
        scene.paste(face.resize((160, 160)), (200 + 40 * i, 300))
        scenes.append(scene)
    return {"256 px aligned faces": faces, "1024 x 768 scenes, one 160 px face": scenes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    add_output_args(parser, "face_speed")
    args = parser.parse_args(argv)
    import cv2

    from deepfake_xai.faces import find_faces

    cv2.setNumThreads(1)
    sets = images(args.data, args.images)
    find_faces(sets["256 px aligned faces"][0])
    load_before = load_average()
    rows = []
    for name, pictures in sets.items():
        per_round = {"full search": [], "aligned first": []}
        for _ in range(args.rounds):
            for side, aligned in (("full search", False), ("aligned first", True)):
                times = []
                for picture in pictures:
                    tick = time.perf_counter()
                    find_faces(picture, aligned_first=aligned)
                    times.append(time.perf_counter() - tick)
                per_round[side].append(1000 * statistics.median(times))
        pairs = zip(per_round["full search"], per_round["aligned first"], strict=True)
        ratios = [full / quick for full, quick in pairs]
        rows.append(
            {
                "set": name,
                "images": len(pictures),
                "full_ms": statistics.median(per_round["full search"]),
                "aligned_first_ms": statistics.median(per_round["aligned first"]),
                "speedup_per_round": [round(r, 2) for r in ratios],
            }
        )
        print(rows[-1], flush=True)
    report = {
        "command": command_line("face_speed.py", argv),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "load_before": load_before,
        "load_after": load_average(),
        "rows": rows,
    }
    write_json(args.out, report)
    table = [
        "| images | n | full search ms | aligned first ms | speed-up per round |",
        "|---|---:|---:|---:|---|",
    ]
    for row in rows:
        shown = ", ".join(f"{r:.2f}x" for r in row["speedup_per_round"])
        table.append(
            f"| {row['set']} | {row['images']} | {row['full_ms']:.1f} | "
            f"{row['aligned_first_ms']:.1f} | {shown} |"
        )
    update_readme_section(
        args.readme,
        "face_speed",
        [
            f"Command: `{report['command']}`",
            "",
            f"Machine: {report['machine']}, 1 OpenCV thread; median ms per image, the two sides "
            f"alternating in {args.rounds} rounds; load average {report['load_before']} before "
            f"and {report['load_after']} after (the cores were shared with other jobs). "
            f"Measured {report['date']}.",
            "",
            *table,
        ],
        heading="Face step speed",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

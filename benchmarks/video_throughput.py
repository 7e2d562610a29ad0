"""Video frames per second: ``analyze`` end to end against decoding alone.

Clips are made once from the shared faces (else generated noise): each a 640x360 ``mp4v`` MP4
at 25 fps with a 256 px face drifting across a grey background. Sides, timed in this process,
interleaved, best of the rounds (the machine is shared):

- **decode every frame**: ``cv2.VideoCapture.read`` over every frame: what sampling saves;
- **decode sampled**: :func:`deepfake_xai.video.read_video` with the default sampling (one
  frame per second, at most 32), grabbing or seeking to the samples;
- **decode + faces**: the analysis decoder on each clip: the sampled frames, MTCNN on each,
  tracks, framing and harmonising (what a DataLoader worker does per video);
- **analyze**: ``Analyzer.run`` over the folder (the shipped detector, P(fake) + final-layer
  Grad-CAM + embedding, rows and heatmaps written; projection and report off), after a
  warm-up run; frames/s counts the sampled frames;
- **analyze photos**: the same ``Analyzer.run`` on as many shared face photos (JPEG files) as
  there were sampled frames: what a frame costs against a photo;
- **long clip**: one clip of ``--long-seconds`` (default 300 s), decoded whole and sampled
  (32 frames, far apart, so the reader seeks): what seeking saves.

    python benchmarks/video_throughput.py --clips 6 --seconds 10

writes ``benchmarks/results/video_throughput.json`` and the table in ``benchmarks/README.md``
between the ``video_throughput`` markers.
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time
from pathlib import Path

from _common import (
    HERE,
    add_output_args,
    command_line,
    machine,
    update_readme_section,
)
from _common import write_json as write_results

SHARED = HERE.parents[1] / "shared" / "data" / "faces-140k-sample"
WIDTH, HEIGHT, FPS = 640, 360, 25


def make_clips(folder: Path, clips: int, seconds: int, name: str = "clip") -> list[Path]:
    """``clips`` MP4s of ``seconds`` s, each with one face (shared faces, else noise) moving."""
    import cv2
    import numpy as np
    from PIL import Image

    faces = sorted((SHARED / "val" / "real").glob("*.jpg"))[:clips]
    rng = np.random.default_rng(0)
    paths = []
    for k in range(clips):
        if faces:
            face = np.asarray(Image.open(faces[k]).convert("RGB"))
        else:
            face = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
        path = folder / f"{name}{k}.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
        for t in range(seconds * FPS):
            frame = np.full((HEIGHT, WIDTH, 3), 110, dtype=np.uint8)
            left = 40 + (t * 2) % (WIDTH - 256 - 80)
            frame[52 : 52 + 256, left : left + 256] = face
            writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
        writer.release()
        paths.append(path)
    return paths


def decode_every_frame(paths: list[Path]) -> int:
    import cv2

    frames = 0
    for path in paths:
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        while capture.read()[0]:
            frames += 1
        capture.release()
    return frames


def decode_sampled(paths: list[Path]) -> int:
    from deepfake_xai.video import read_video

    return sum(len(read_video(path).frames) for path in paths)


def decode_with_faces(paths: list[Path], decoder) -> int:
    return sum(
        len({item.frame for item in decoder.video(k, path, str(path), None)})
        for k, path in enumerate(paths)
    )


def analyze_side(paths: list[Path], analyzer, out: Path) -> int:
    result = analyzer.run(paths, out)
    return int(result.videos["frames_sampled"].sum())


def analyze_photos(photos: list[Path], analyzer, out: Path) -> int:
    analyzer.run(photos, out)
    return len(photos)


def timed(side, *args) -> tuple[int, float]:
    began = time.perf_counter()
    frames = side(*args)
    return frames, time.perf_counter() - began


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--long-seconds", type=int, default=300)
    parser.add_argument("--workers", type=int, default=None, help="analyze's decoding workers")
    add_output_args(parser, "video_throughput")
    args = parser.parse_args(argv)

    import torch

    from deepfake_xai.analysis import Analyzer

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_clips(folder, args.clips, args.seconds)
        analyzer = Analyzer(
            projection=None, report=False, progress=False, resume=False, num_workers=args.workers
        )
        decoder = analyzer.decoder
        analyze_side(paths[:1], analyzer, folder / "warm-up")
        sides = {
            "decode every frame": (decode_every_frame, paths),
            "decode sampled": (decode_sampled, paths),
            "decode + faces": (decode_with_faces, paths, decoder),
            "analyze": (analyze_side, paths, analyzer, folder / "out"),
        }
        long = make_clips(folder, 1, args.long_seconds, name="long")
        sides["long clip: decode every frame"] = (decode_every_frame, long)
        sides["long clip: decode sampled"] = (decode_sampled, long)
        photos = sorted((SHARED / "val" / "fake").glob("*.jpg"))[: args.clips * args.seconds]
        if photos:
            sides["analyze photos"] = (analyze_photos, photos, analyzer, folder / "photos")
        best: dict[str, tuple[int, float]] = {}
        for _ in range(args.rounds):
            for name, (side, *side_args) in sides.items():
                frames, seconds = timed(side, *side_args)
                if name not in best or seconds < best[name][1]:
                    best[name] = (frames, seconds)
        workers = analyzer.num_workers
    end_to_end = best["analyze"][1]
    rows = []
    for name, (frames, seconds) in best.items():
        share = "" if name.startswith("long") else f"{seconds / end_to_end:.0%}"
        rows.append({"side": name, "frames": frames, "seconds": seconds, "of_analyze": share})
    report = {
        "command": command_line("video_throughput.py", argv),
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
        "torch_threads": torch.get_num_threads(),
        "workers": workers,
        "clips": args.clips,
        "seconds_per_clip": args.seconds,
        "long_clip_seconds": args.long_seconds,
        "rows": rows,
    }
    write_results(args.out, report)
    lines = [
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']} (shared with other jobs); torch threads "
        f"{report['torch_threads']}, {workers} decoding workers; {args.clips} clips of "
        f"{args.seconds} s, {WIDTH}x{HEIGHT} at {FPS} fps (mp4v), default sampling (1 frame/s); "
        f"a long clip of {args.long_seconds} s; best of {args.rounds} interleaved rounds. "
        f"Measured {report['date']}.",
        "",
        "| side | frames | seconds | frames/s | time as a share of analyze |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        rate = row["frames"] / row["seconds"]
        lines.append(
            f"| {row['side']} | {row['frames']} | {row['seconds']:.2f} | {rate:.1f} | "
            f"{row['of_analyze'] or '-'} |"
        )
    update_readme_section(args.readme, "video_throughput", lines, heading="Video throughput")
    print("\n".join(lines))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()

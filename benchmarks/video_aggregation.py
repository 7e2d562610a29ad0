"""Which frame rollup should decide a video's verdict: the mean logit or a high quantile?

Clips are made from held-out shared faces (``val/``): each face becomes an 8-frame ``mp4v``
clip at 8 fps in which every frame is the photo shifted, scaled and brightened a little at
random (a head that moves, a camera that breathes), so the frames of one clip differ as video
frames do. Three kinds: **real** clips (FFHQ photos), **fake** clips (StyleGAN faces) and
**swap** clips (a real photo for the first 4 frames, then a fake face in its place: a
manipulation in half the clip). ``analyze`` (the shipped detector, every frame sampled) scores
each frame; each clip is then rolled up both ways over all its scored frames:

- **mean logit**: the sigmoid of the mean logit (what ``video_verdict`` calls ``p_mean``);
- **90th percentile**: of the frames' P(fake) (``p_high``);
- **single frame**: the first sampled frame alone, for reference.

and called fake at P(fake) >= 0.5. Reported per rollup: ROC AUC of real against fake clips,
accuracy on them, the share of real clips called fake, of fake clips caught and of swap clips
caught.

    python benchmarks/video_aggregation.py --faces 40

writes ``benchmarks/results/video_aggregation.json`` and the table in ``benchmarks/README.md``
between the ``video_aggregation`` markers.
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
from pathlib import Path

import numpy as np
from _common import HERE, add_output_args, command_line, machine, update_readme_section
from _common import write_json as write_results

SHARED = HERE.parents[1] / "shared" / "data" / "faces-140k-sample"
FRAMES, FPS = 8, 8
ROLLUPS = ("mean logit", "90th percentile", "single frame")


def jittered(face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``face`` shifted by up to 6 px, scaled by up to 4 % and brightened by up to 6 levels."""
    import cv2

    size = face.shape[0]
    scale = rng.uniform(0.96, 1.04)
    shift = rng.uniform(-6, 6, size=2)
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), 0.0, scale)
    matrix[:, 2] += shift
    moved = cv2.warpAffine(face, matrix, (size, size), borderMode=cv2.BORDER_REFLECT)
    return np.clip(moved.astype(np.int16) + int(rng.integers(-6, 7)), 0, 255).astype(np.uint8)


def write_clip(path: Path, frames: list[np.ndarray]) -> Path:
    import cv2

    size = frames[0].shape[0]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (size, size))
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()
    return path


def make_clips(folder: Path, faces: int) -> dict[str, str]:
    """Path -> kind (real, fake, swap) of the clips."""
    from PIL import Image

    rng = np.random.default_rng(0)
    photos = {
        label: [
            np.asarray(Image.open(p).convert("RGB"))
            for p in sorted((SHARED / "val" / label).glob("*.jpg"))[:faces]
        ]
        for label in ("real", "fake")
    }
    kinds = {}
    for k in range(faces):
        real, fake = photos["real"][k], photos["fake"][k]
        clips = {
            "real": [jittered(real, rng) for _ in range(FRAMES)],
            "fake": [jittered(fake, rng) for _ in range(FRAMES)],
            "swap": [jittered(real if t < FRAMES // 2 else fake, rng) for t in range(FRAMES)],
        }
        for kind, frames in clips.items():
            kinds[str(write_clip(folder / f"{kind}{k:03d}.mp4", frames))] = kind
    return kinds


def rollups(p_fake: np.ndarray) -> dict[str, float]:
    from deepfake_xai.video_verdict import HIGH_QUANTILE, mean_logit

    return {
        "mean logit": mean_logit(p_fake),
        "90th percentile": float(np.quantile(p_fake, HIGH_QUANTILE)),
        "single frame": float(p_fake[0]),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=40, help="faces per class")
    add_output_args(parser, "video_aggregation")
    args = parser.parse_args(argv)
    if not SHARED.is_dir():
        raise SystemExit(f"the shared face sample is needed: {SHARED}")

    from deepfake_xai.analysis import analyze
    from deepfake_xai.metrics import classification_metrics
    from deepfake_xai.video import Sampling

    with tempfile.TemporaryDirectory() as tmp:
        kinds = make_clips(Path(tmp), args.faces)
        result = analyze(
            list(kinds),
            explainers=(),
            projection=None,
            out=Path(tmp) / "run",
            report=False,
            progress=False,
            video=Sampling(count=FRAMES, max_frames=FRAMES),
        )
        rows = result.predictions
    scored = rows[rows["status"] == "ok"].sort_values(["index", "frame"])
    clips = []
    for path, group in scored.groupby("path"):
        clips.append({"kind": kinds[str(path)], **rollups(group["p_fake"].to_numpy())})
    table = []
    for rollup in ROLLUPS:
        values = {k: np.array([c[rollup] for c in clips if c["kind"] == k]) for k in kinds.values()}
        clean = np.concatenate([values["real"], values["fake"]])
        truth = np.r_[np.zeros(len(values["real"])), np.ones(len(values["fake"]))].astype(int)
        metrics = classification_metrics(truth, clean)
        table.append(
            {
                "rollup": rollup,
                "roc_auc": float(metrics["roc_auc"]),
                "accuracy": float(metrics["accuracy"]),
                "reals_called_fake": float((values["real"] >= 0.5).mean()),
                "fakes_caught": float((values["fake"] >= 0.5).mean()),
                "swaps_caught": float((values["swap"] >= 0.5).mean()),
            }
        )
    counts = {k: sum(c["kind"] == k for c in clips) for k in ("real", "fake", "swap")}
    report = {
        "command": command_line("video_aggregation.py", argv),
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
        "clips": counts,
        "frames_per_clip": FRAMES,
        "rows": table,
    }
    write_results(args.out, report)
    lines = [
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']}; the shipped detector; clips scored: {counts['real']} "
        f"real, {counts['fake']} fake, {counts['swap']} swap, {FRAMES} frames each. "
        f"Measured {report['date']}.",
        "",
        "| rollup | ROC AUC | accuracy | reals called fake | fakes caught | swaps caught |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in table:
        lines.append(
            f"| {row['rollup']} | {row['roc_auc']:.3f} | {row['accuracy']:.3f} | "
            f"{row['reals_called_fake']:.0%} | {row['fakes_caught']:.0%} | "
            f"{row['swaps_caught']:.0%} |"
        )
    update_readme_section(args.readme, "video_aggregation", lines, heading="Video rollup")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Train a detector (EfficientNet-Lite0 unless ``--detector``) on the shared faces with one recipe
of the robustness levers.

The levers (issue "Verdicts that hold on the photos people bring"): everyday degradations at
train time (``--degrade P``), Stable Diffusion 2.1 faces as extra fakes (``--sd21``; without it
they are a family the detector never saw), self-blended pseudo-fakes (``--self-blend SHARE``)
and autoencoder reconstructions (``--autoencoder SHARE``). Every recipe trains from the same
ImageNet weights on the same split (``benchmarks/sources.py``), frames faces as ``analyze`` does,
and samples real and fake equally often; ``benchmarks/evaluate_recipe.py`` then measures it.

    python benchmarks/train_recipe.py --name degrade30 --degrade 0.3 --epochs 3
    python benchmarks/train_recipe.py --name sbi --degrade 0.3 --self-blend 0.3 --epochs 3

``--teacher efficientnet_lite0_faces`` distils that shipped detector into the one trained
(issue 21: MobileNetV2 has no ImageNet weights here; the teacher's soft P(fake) and embedding
replace them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from _common import command_line, machine
from sources import shared_samples

from deepfake_xai import train
from deepfake_xai.face_index import FaceIndex
from deepfake_xai.runtime import configure_threads
from deepfake_xai.training import TrainConfig

DETECTOR = "efficientnet_lite0"  # the default; --detector trains another timm network
FACES_CACHE = Path("runs/faces.csv")  # face boxes of every shared image, shared by all runs
RECONSTRUCTIONS = Path("runs/autoencoder")  # autoencoder reconstructions, shared by all runs
TAEF2 = Path(__file__).resolve().parents[2] / "shared" / "models" / "taef2"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the recipe's name (its run folder)")
    parser.add_argument("--root", type=Path, default=Path("runs/recipes"))
    parser.add_argument("--detector", default=DETECTOR, help="the registered detector to train")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--degrade", type=float, default=0.0, metavar="P")
    parser.add_argument(
        "--chain", type=float, default=0.0, metavar="P", help="messaging-app chain probability"
    )
    parser.add_argument("--sd21", action="store_true", help="train with the SD 2.1 train keys")
    parser.add_argument("--self-blend", type=float, default=0.0, metavar="SHARE")
    parser.add_argument("--autoencoder", type=float, default=0.0, metavar="SHARE")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from this checkpoint's weights (not ImageNet)",
    )
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--teacher", help="distil this checkpoint or shipped detector")
    parser.add_argument("--distill", type=float, default=0.5, help="weight of its soft P(fake)")
    parser.add_argument(
        "--distill-features", type=float, default=0.0, help="weight of its embedding hint"
    )
    parser.add_argument("--max-batches", type=int, default=None, help="smoke runs only")
    args = parser.parse_args(argv)
    threads = configure_threads(args.threads)
    out = args.root / args.name
    samples = [s for s in shared_samples() if args.sd21 or s.group != "sd21" or s.split == "test"]
    FaceIndex.build([s.path for s in samples], FACES_CACHE, workers=max(1, args.workers))
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "faces.csv").exists():
        shutil.copy2(FACES_CACHE, out / "faces.csv")
    if args.autoencoder and not (out / "autoencoder").exists():
        RECONSTRUCTIONS.mkdir(parents=True, exist_ok=True)
        (out / "autoencoder").symlink_to(RECONSTRUCTIONS.resolve())
    config = TrainConfig(
        epochs=args.epochs,
        image_size=args.image_size,
        degrade=args.degrade,
        degrade_chain=args.chain,
        faces=True,
        self_blend=args.self_blend,
        autoencoder=args.autoencoder,
        autoencoder_weights=str(TAEF2),
        balance=True,
        seed=args.seed,
        num_workers=args.workers,
        channels_last=True,
        max_train_batches=args.max_batches,
        lr=args.lr,
        teacher=args.teacher,
        distill=args.distill,
        distill_features=args.distill_features,
    )
    start = time.perf_counter()
    resume = out if (out / args.detector / "last.safetensors").is_file() else args.init
    result = train(samples, [args.detector], out, config, resume=resume)[args.detector]
    record = {
        "name": args.name,
        "command": command_line("train_recipe.py", argv),
        "init": str(args.init) if args.init else None,
        "earlier": _earlier_runs(out, resume),
        "machine": f"{machine()}, {threads} torch threads",
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.perf_counter() - start, 1),
        "checkpoint": str(result.checkpoint),
        "best": result.best,
    }
    (out / "train.json").write_text(json.dumps(record, indent=2, default=str))
    print(json.dumps(record, indent=2, default=str))


def _earlier_runs(out: Path, resume: Path | None) -> list[dict]:
    """The records of the runs this one continues (a resumed run with more epochs), oldest
    first, so that the whole history can be reproduced."""
    if resume != out or not (out / "train.json").is_file():
        return []
    earlier = json.loads((out / "train.json").read_text())
    return [*earlier.pop("earlier", []), earlier]


if __name__ == "__main__":
    main()

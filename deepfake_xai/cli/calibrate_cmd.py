"""``deepfake-xai calibrate``: fit the statistics that let a checkpoint say "uncertain"."""

from __future__ import annotations

import argparse

HELP = (
    "fit a checkpoint's reliability statistics (what its training faces look like) so that "
    "its verdicts can be 'uncertain' on unfamiliar images"
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a .safetensors checkpoint")
    parser.add_argument(
        "data",
        metavar="DATA",
        help="the faces it was trained on: folder, CSV manifest (e.g. the run's split.csv) or "
        "glob; train images fit the statistics, val images set the threshold",
    )
    parser.add_argument(
        "--method", choices=("mahalanobis", "knn"), default="mahalanobis", help="(mahalanobis)"
    )
    parser.add_argument(
        "--images", type=int, default=1000, metavar="N", help="training images per class (1000)"
    )
    parser.add_argument(
        "--no-faces", action="store_true", help="score whole images instead of framed faces"
    )
    parser.add_argument(
        "--degraded",
        action="store_true",
        help="the detector was trained with --degrade: faces down to a quarter of its input "
        "size and JPEG down to quality 30 count as familiar",
    )
    parser.add_argument("--out", default=None, metavar="PATH", help="write a copy here instead")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (0)")


def run(args: argparse.Namespace) -> int:
    from ..calibration import calibrate
    from ..degradations import Degradations

    fitted = calibrate(
        args.checkpoint,
        args.data,
        method=args.method,
        faces=not args.no_faces,
        images_per_class=args.images,
        degradations=Degradations() if args.degraded else None,
        out=args.out,
        device=args.device,
        num_workers=args.workers,
    )
    print(
        f"flags {fitted.flag_rate:.0%} of the validation faces; written to "
        f"{args.out or args.checkpoint}"
    )
    return 0

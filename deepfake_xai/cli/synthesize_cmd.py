"""``deepfake-xai synthesize``: write the built-in offline face set (with artifact masks)."""

from __future__ import annotations

import argparse

HELP = "generate the offline synthetic face set (real/fake images and fake-artifact masks)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="folder to write OUT/{real,fake}, masks/")
    parser.add_argument("--n-per-class", type=int, default=200, help="images per class (200)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (128)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument(
        "--split", action="store_true", help="write OUT/{train,val,test}/{real,fake} (80/10/10)"
    )
    parser.add_argument("--format", choices=("png", "jpeg"), default="png", help="file format")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (1)")


def run(args: argparse.Namespace) -> int:
    import sys

    from ..synthetic import generate_dataset

    summary = generate_dataset(
        args.out,
        args.n_per_class,
        size=args.size,
        seed=args.seed,
        fmt=args.format,
        split=args.split,
        workers=args.workers,
        progress=sys.stderr.isatty(),
    )
    print(
        f"wrote {summary.n_real} real and {summary.n_fake} fake images to {summary.root} "
        f"(manifest: {summary.manifest})"
    )
    return 0

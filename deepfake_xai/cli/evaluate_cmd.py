"""``deepfake-xai evaluate``: compare trained detectors on a labelled split, side by side."""

from __future__ import annotations

import argparse

HELP = "evaluate checkpoints on a labelled split: metrics, speed, table and figures"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data", metavar="DATA", help="dataset folder, CSV manifest (e.g. a run's split.csv) or glob"
    )
    parser.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        metavar="PATH",
        help="checkpoint (.safetensors or hf-hub:org/repo); repeat to compare several",
    )
    parser.add_argument(
        "--split", default="test", help="split to evaluate on (test); 'all' for every image"
    )
    parser.add_argument("--out", default=None, metavar="DIR", help="write tables and figures here")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (32)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (0)")
    parser.add_argument("--no-latency", action="store_true", help="skip the speed measurement")


def run(args: argparse.Namespace) -> int:
    import sys

    from ..evaluation import evaluate

    comparison = evaluate(
        args.checkpoint,
        args.data,
        split=None if args.split == "all" else args.split,
        batch_size=args.batch_size,
        device=args.device,
        latency=not args.no_latency,
        out=args.out,
        num_workers=args.workers,
    )
    n = comparison.table["n"].iloc[0]
    source = f" (held out by {comparison.split_source})" if comparison.split_source else ""
    print(f"{n} images of split {args.split!r}{source} on {comparison.device}\n")
    print(comparison.to_markdown())
    for path, reason in comparison.errors:
        print(f"skipped unreadable image {path}: {reason}", file=sys.stderr)
    if args.out:
        print(f"tables, predictions and figures written to {args.out}")
    return 0

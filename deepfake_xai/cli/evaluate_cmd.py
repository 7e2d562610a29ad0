"""``deepfake-xai evaluate``: compare detectors on labelled images, side by side, check how far
they and their explanations can be trusted (``--robustness``, ``--explanations``) and measure
where they look (``--regions``)."""

from __future__ import annotations

import argparse

HELP = "evaluate detectors on labelled images: metrics, speed, robustness, explanation checks"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data", metavar="DATA", help="dataset folder, CSV manifest (e.g. a run's split.csv) or glob"
    )
    parser.add_argument(
        "--checkpoint",
        "--detector",
        dest="checkpoint",
        action="append",
        required=True,
        metavar="PATH",
        help="checkpoint (.safetensors or hf-hub:org/repo) or registry name; repeat to compare",
    )
    parser.add_argument(
        "--split",
        default="auto",
        help="test, val, train, 'all' (every labelled image) or auto (default: test, else the "
        "test images held out by the training runs, else val, else all images of a folder "
        "without splits)",
    )
    parser.add_argument("--out", default=None, metavar="DIR", help="write tables and figures here")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (32)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (0)")
    parser.add_argument("--no-latency", action="store_true", help="skip the speed measurement")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    trust = parser.add_argument_group("robustness and explanation checks (docs/evaluate.md)")
    trust.add_argument(
        "--robustness",
        action="store_true",
        help="accuracy, ROC AUC and ECE under JPEG, blur, resize, noise and social-media chains",
    )
    trust.add_argument(
        "--perturb",
        action="append",
        metavar="KIND=LEVELS",
        help="levels to test, e.g. jpeg=90,50,30 blur=1,2 resize=0.5 noise=5 social=0.5:70 "
        "shift=8 flip (repeatable; default: all kinds at their default levels)",
    )
    trust.add_argument(
        "--explanations",
        action="store_true",
        help="check the heatmaps: stability under the same levels, faithfulness, sanity",
    )
    trust.add_argument(
        "--explainer",
        dest="explainers",
        action="append",
        metavar="METHOD",
        help="attribution method to check, e.g. gradcam, gradcam++, integrated_gradients "
        "(repeatable; default gradcam; implies --explanations)",
    )
    trust.add_argument(
        "--layer",
        dest="layers",
        action="append",
        metavar="LAYER",
        help="CAM layer for the explanation checks (repeatable; default final)",
    )
    trust.add_argument(
        "--explain-images",
        type=int,
        default=64,
        metavar="N",
        help="images the explanation checks use, half per class (default %(default)s)",
    )
    trust.add_argument(
        "--regions",
        action="store_true",
        help="where each detector looks: its final-layer Grad-CAM mass per facial region and "
        "class, how concentrated it is, and how well its features separate the classes",
    )
    trust.add_argument(
        "--projection",
        dest="projections",
        action="append",
        metavar="METHOD",
        help="2-D map the separation is also measured in, for --regions (repeatable; "
        "default tsne and umap)",
    )
    trust.add_argument("--seed", type=int, default=0, help="seed for noise and sampling (0)")
    trust.add_argument(
        "--write-card",
        action="store_true",
        help="store each detector's robustness summary in its checkpoint (the app shows it)",
    )


def run(args: argparse.Namespace) -> int:
    import sys

    from ..evaluation import evaluate
    from ..runtime import configure_threads

    threads = configure_threads(getattr(args, "threads", None))
    explainers = args.explainers or (["gradcam"] if args.explanations else [])
    comparison = evaluate(
        args.checkpoint,
        args.data,
        split=None if args.split == "all" else args.split,
        batch_size=args.batch_size,
        device=args.device,
        latency=not args.no_latency,
        out=args.out,
        num_workers=args.workers,
        robustness=args.robustness or args.write_card,
        perturb=args.perturb,
        explainers=explainers,
        layers=args.layers or ["final"],
        explain_images=args.explain_images,
        seed=args.seed,
        write_card=args.write_card,
        regions=args.regions,
        projections=args.projections,
        progress=not args.no_progress,
    )
    n = comparison.table["n"].iloc[0]
    which = f"split {comparison.split!r}" if comparison.split else "all splits"
    print(f"{n} images of {which} on {comparison.device} with {threads} torch threads")
    if comparison.split_note:
        print(f"({comparison.split_note})")
    print()
    print(comparison.to_markdown())
    for path, reason in comparison.errors:
        print(f"skipped unreadable image {path}: {reason}", file=sys.stderr)
    if args.write_card:
        print(f"robustness summary written into {', '.join(args.checkpoint)}")
    if args.out:
        print(f"tables, predictions and figures written to {args.out}")
    return 0

"""``deepfake-xai analyze``: predict, explain and project a batch of images into a folder.

Exit status: 0 when every image was processed, 1 when some could not be read (their reasons
are in ``errors.csv``), 2 for usage errors.
"""

from __future__ import annotations

import argparse

HELP = "predict, explain and project a batch of images into a resumable output folder"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs", nargs="+", help="folders (real/ and fake/ give labels), images, globs or CSVs"
    )
    parser.add_argument(
        "--detector",
        dest="detectors",
        action="append",
        metavar="NAME|CHECKPOINT",
        help="registry name, .safetensors file or hf-hub: id (repeatable; default: "
        "efficientnet_b0 and mobilenetv2_100)",
    )
    parser.add_argument(
        "--explainer",
        dest="explainers",
        action="append",
        metavar="METHOD",
        help="attribution method, e.g. gradcam, gradcam++, integrated_gradients (repeatable; "
        "default gradcam; 'none' for predictions only)",
    )
    parser.add_argument(
        "--layer",
        dest="layers",
        action="append",
        metavar="LAYER",
        help="CAM layer: final, mid or a module path (repeatable; default final)",
    )
    parser.add_argument(
        "--projection", default="tsne", help="tsne, umap, pca or none (default tsne)"
    )
    parser.add_argument(
        "--out", default="runs/analysis", help="output folder (default %(default)s)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="default %(default)s")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument(
        "--workers", type=int, default=None, help="decoding processes (default min(4, CPUs))"
    )
    parser.add_argument(
        "--labels", default=None, metavar="folders|CSV", help="where labels come from"
    )
    parser.add_argument(
        "--no-resume", action="store_true", help="overwrite OUT instead of resuming it"
    )
    parser.add_argument("--no-report", action="store_true", help="skip report.html")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..analysis import DEFAULT_DETECTORS, analyze

    explainers = [e for e in args.explainers or ["gradcam"] if e.lower() != "none"]
    result = analyze(
        args.inputs if len(args.inputs) > 1 else args.inputs[0],
        detectors=args.detectors or DEFAULT_DETECTORS,
        explainers=explainers,
        layers=args.layers or ["final"],
        projection=args.projection,
        out=args.out,
        batch_size=args.batch_size,
        device=args.device,
        num_workers=args.workers,
        labels=args.labels,
        resume=not args.no_resume,
        progress=not args.no_progress,
        report=not args.no_report,
    )
    print(result.describe())
    return 1 if result.summary["errors"] else 0

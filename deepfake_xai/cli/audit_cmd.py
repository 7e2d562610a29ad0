"""``deepfake-xai audit``: look for dataset shortcuts, optionally write a harmonised copy."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "audit a real/fake dataset for shortcuts (format, size, compression, framing, names)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA", help="dataset folder, manifest CSV or glob")
    parser.add_argument("--out", type=Path, help="report folder (default: DATA_audit)")
    parser.add_argument(
        "--max-per-class", type=int, metavar="N", help="audit N random images per class"
    )
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="processes (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="subset and cross-validation seed")
    harmonize = parser.add_argument_group("harmonised copy")
    harmonize.add_argument(
        "--harmonize",
        type=Path,
        metavar="OUT_DIR",
        help="also write a harmonised copy of DATA here",
    )
    harmonize.add_argument("--image-size", type=int, default=256, help="output side (default 256)")
    harmonize.add_argument(
        "--jpeg-quality", type=int, default=95, help="JPEG quality of the copy (default 95)"
    )
    harmonize.add_argument("--png", action="store_true", help="write lossless PNG instead of JPEG")
    harmonize.add_argument(
        "--face-crop", action="store_true", help="crop to the face with a fixed margin ([faces])"
    )
    harmonize.add_argument(
        "--anonymize-names", action="store_true", help="name copies by a hash, not the original"
    )


def default_out(data: str) -> Path:
    """DATA_audit next to DATA (for a manifest, next to it without its extension)."""
    path = Path(data.rstrip("/\\") or ".")
    return path.with_name(f"{path.stem if path.is_file() else path.name}_audit")


def run(args: argparse.Namespace) -> int:
    from ..audit import audit_dataset, harmonize_dataset
    from ..preprocessing import Harmonization

    harmonization = None
    if args.harmonize is not None:
        harmonization = Harmonization(
            image_size=args.image_size,
            jpeg_quality=None if args.png else args.jpeg_quality,
            face_crop=args.face_crop,
        )
    out = args.out or default_out(args.data)
    report = audit_dataset(
        args.data, out=out, max_per_class=args.max_per_class, workers=args.workers, seed=args.seed
    )
    print(report.verdict)
    for name, score in report.leaking_features:
        print(f"  {name:<20} {score:.0%} alone")
    if report.errors:
        print(f"{len(report.errors)} unreadable files (see {out / 'errors.csv'})")
    print(f"report: {out / 'audit.md'}")
    if harmonization is not None:
        written = harmonize_dataset(
            args.data,
            args.harmonize,
            harmonization,
            anonymize_names=args.anonymize_names,
            workers=args.workers,
        )
        print(f"harmonised copy: {len(written)} images in {args.harmonize}")
        print(f"audit it with: deepfake-xai audit {args.harmonize}")
    return 0

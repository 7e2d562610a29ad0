"""``deepfake-xai train``: fine-tune one or more detectors on the same split of a dataset."""

from __future__ import annotations

import argparse

HELP = "train detectors on a real/fake dataset (same split for all; checkpoints in --out)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data",
        metavar="DATA",
        help="dataset folder ({real,fake} or {train,val,test}/{real,fake}), CSV manifest or glob",
    )
    parser.add_argument(
        "--detector",
        action="append",
        default=[],
        metavar="NAME",
        help="detector to train (repeat for several); optional with --resume CHECKPOINT",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="run folder (checkpoints)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs (5)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (32)")
    parser.add_argument(
        "--lr", type=float, default=None, help="learning rate (1e-4 pretrained, 1e-3 from scratch)"
    )
    parser.add_argument("--weight-decay", type=float, default=0.0, help="weight decay (0)")
    parser.add_argument("--optimizer", choices=("adam", "adamw"), default="adam")
    parser.add_argument("--scheduler", choices=("cosine", "none"), default="cosine")
    parser.add_argument("--patience", type=int, default=3, help="early-stopping patience (3)")
    parser.add_argument(
        "--monitor", choices=("loss", "f1"), default="loss", help="validation metric for the best"
    )
    parser.add_argument("--image-size", type=int, default=224, help="input side in pixels (224)")
    parser.add_argument(
        "--no-pretrained", action="store_true", help="random init instead of ImageNet weights"
    )
    parser.add_argument(
        "--pretrained-file",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="local ImageNet weights for detector NAME (repeatable)",
    )
    parser.add_argument("--face-crop", action="store_true", help="crop every image to its face")
    parser.add_argument(
        "--jpeg-quality", type=int, default=None, metavar="Q", help="re-encode all images at Q"
    )
    parser.add_argument("--no-augment", action="store_true", help="no train-time augmentation")
    parser.add_argument(
        "--degrade",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of each everyday degradation (blur sigma 0-3, rescale 0.25-1, "
        "JPEG 30-100), real and fake alike (0: off; 0.1-0.5 is useful)",
    )
    parser.add_argument(
        "--degrade-chain",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of a messaging app's chain instead: shrink, JPEG at the small size, "
        "enlarge (the same ranges)",
    )
    parser.add_argument(
        "--faces",
        action="store_true",
        help="find each image's face once and frame it as analyze does (no face: left out)",
    )
    parser.add_argument(
        "--self-blend",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="add self-blended pseudo-fakes, SHARE x the real training images (needs --faces)",
    )
    parser.add_argument(
        "--autoencoder",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="add reconstructions of SHARE x the real training images through a diffusion "
        "model's tiny autoencoder as fakes (weights: --autoencoder-weights or "
        "$DEEPFAKE_XAI_TAEF2); at 0.3 it caught no unseen SD 2.1 face and cost clean "
        "accuracy (docs/results.md)",
    )
    parser.add_argument(
        "--autoencoder-weights", default=None, metavar="DIR", help="folder of the TAEF2 weights"
    )
    parser.add_argument(
        "--balance", action="store_true", help="sample real and fake equally often each epoch"
    )
    parser.add_argument(
        "--limit", type=int, default=None, metavar="N", help="use at most N images per class"
    )
    parser.add_argument(
        "--max-batches", type=int, default=None, metavar="N", help="cut each epoch at N batches"
    )
    parser.add_argument(
        "--resume",
        default=None,
        metavar="PATH",
        help="continue from a checkpoint, or from an earlier --out folder",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..training import TrainConfig, train

    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        optimizer=args.optimizer,
        scheduler=args.scheduler,
        patience=args.patience,
        monitor=args.monitor,
        image_size=args.image_size,
        pretrained=not args.no_pretrained,
        pretrained_files=_pairs(args.pretrained_file),
        augment=not args.no_augment,
        degrade=args.degrade,
        degrade_chain=args.degrade_chain,
        faces=args.faces,
        self_blend=args.self_blend,
        autoencoder=args.autoencoder,
        autoencoder_weights=args.autoencoder_weights,
        balance=args.balance,
        face_crop=args.face_crop,
        jpeg_quality=args.jpeg_quality,
        limit_per_class=args.limit,
        seed=args.seed,
        device=args.device,
        num_workers=args.workers,
        max_train_batches=args.max_batches,
    )
    results = train(
        args.data,
        args.detector,
        args.out,
        config,
        resume=args.resume,
        progress=not args.no_progress,
    )
    print(
        "\n| detector | best epoch | val accuracy | val f1 | val roc_auc | minutes | checkpoint |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, result in results.items():
        best = result.best
        auc = best.get("roc_auc")
        print(
            f"| {name} | {result.best_epoch} | {best.get('accuracy', 0):.3f} | "
            f"{best.get('f1', 0):.3f} | {'-' if auc is None else f'{auc:.3f}'} | "
            f"{result.seconds / 60:.1f} | {result.checkpoint} |"
        )
    return 0


def _pairs(items: list[str]) -> dict[str, str]:
    """``["NAME=PATH", ...]`` as a dict, with a clear error for a malformed item."""
    pairs = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--pretrained-file expects NAME=PATH, got {item!r}")
        pairs[name.strip()] = path.strip()
    return pairs

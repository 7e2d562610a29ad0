"""The seed notebook's experiment on real faces: train, compare side by side, explain, project.

Trains each detector with the notebook's recipe (Adam 1e-4 when pretrained, batch 32, 5 epochs,
flips / rotation / jitter / resized crop, cosine schedule, early stopping) on one shared split of
the FFHQ / StyleGAN sample, then on the held-out test split: accuracy, precision, recall, F1,
ROC AUC, ECE and ms/image side by side (also with a horizontal-flip test-time average), Grad-CAM
at the mid and final layers (a grid of test faces, and the mean map per class), and t-SNE / UMAP
of the penultimate features coloured by label. Every step is resumable: a rerun skips detectors
whose training finished and continues unfinished ones.

    python benchmarks/reproduce_seed.py            # the seed's comparison (~1.5 h on 2 CPUs)
    python benchmarks/reproduce_seed.py --detector efficientnet_lite0:256 --epochs 8 \\
        --out runs/seed-lite0-256                  # one of the attempts to beat it

``--detector NAME:SIZE`` sets a detector's input size (default 224 for pretrained detectors and
128 for those trained from scratch, which have no ImageNet weights offline).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _common import command_line, machine

from deepfake_xai import Detector, evaluate, explain, train
from deepfake_xai.data import read_manifest
from deepfake_xai.detectors import PretrainedWeightsUnavailable
from deepfake_xai.registry import DETECTORS, EXPLAINERS
from deepfake_xai.runtime import configure_threads
from deepfake_xai.training import TrainConfig

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces-140k-sample"
DEFAULT_DETECTORS = ("efficientnet_lite0", "efficientnet_b0", "mobilenetv2_100")
GRID_PER_CLASS = 4


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="real/fake dataset")
    parser.add_argument("--out", type=Path, default=Path("runs/seed"), help="run folder")
    parser.add_argument(
        "--detector", action="append", default=[], metavar="NAME[:SIZE]", help="repeatable"
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (all usable)")
    parser.add_argument("--skip-train", action="store_true", help="evaluate existing checkpoints")
    args = parser.parse_args(argv)
    threads = configure_threads(args.threads)
    plans = [_plan(item) for item in args.detector or DEFAULT_DETECTORS]
    checkpoints, train_seconds = {}, {}
    for name, size, pretrained in plans:
        config = TrainConfig(
            epochs=args.epochs, image_size=size, pretrained=pretrained, seed=args.seed
        )
        start = time.perf_counter()
        if not args.skip_train:
            _train_or_resume(args.data, name, args.out, config)
        checkpoints[name] = args.out / name / "best.safetensors"
        train_seconds[name] = _training_seconds(args.out / name) or time.perf_counter() - start
    results = compare(checkpoints, args.data, args.out)
    results.update(
        command=command_line("reproduce_seed.py", argv),
        machine=f"{machine()}, {threads} torch threads",
        date=time.strftime("%Y-%m-%d"),
        training_seconds=train_seconds,
        training={n: _training_summary(p) for n, p in checkpoints.items()},
    )
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(results["markdown"])
    print(f"results in {args.out / 'results.json'}, figures in {args.out / 'figures'}")


def _plan(item: str) -> tuple[str, int, bool]:
    """``NAME[:SIZE]`` -> (detector name, input size, whether ImageNet weights can be had)."""
    name, _, size = item.partition(":")
    name = DETECTORS.entry(name).name
    try:
        DETECTORS.create(name, pretrained=True, device="cpu")
        pretrained = True
    except PretrainedWeightsUnavailable as exc:
        print(f"{name}: no ImageNet weights here, trained from scratch ({exc})")
        pretrained = False
    return name, int(size) if size else (224 if pretrained else 128), pretrained


def _train_or_resume(data: Path, name: str, out: Path, config: TrainConfig) -> None:
    folder = out / name
    last = folder / "last.safetensors"
    if not last.is_file():
        train(data, [name], out, config, progress=False)
        return
    history = json.loads((folder / "metrics.json").read_text())["history"]
    done = len(history) >= config.epochs or _stopped_early(history, config)
    if done:
        print(f"{name}: training finished earlier ({len(history)} epochs), kept")
        return
    train(data, [name], out, config, resume=out, progress=False)


def _stopped_early(history: list[dict], config: TrainConfig) -> bool:
    losses = [row["val_loss"] for row in history]
    best = int(np.argmin(losses))
    return len(losses) - 1 - best >= config.patience


def _training_seconds(folder: Path) -> float | None:
    path = folder / "metrics.json"
    if not path.is_file():
        return None
    return float(sum(row["seconds"] for row in json.loads(path.read_text())["history"]))


def _training_summary(checkpoint: Path) -> dict:
    meta = Detector.load(checkpoint, device="cpu").metadata
    training = meta.get("training", {})
    keys = ("image_size", "epochs", "epochs_run", "best_epoch", "lr", "pretrained_init")
    return {
        **{k: training.get(k) for k in keys},
        "pretrained_source": meta.get("pretrained_source"),
        "n_per_split": training.get("n_per_split"),
        "fingerprint": training.get("fingerprint"),
    }


class FlipAveraged(Detector):
    """A detector whose logit (and embedding) is the mean over the image and its mirror image
    (test-time flip). The feature maps of both are stacked along the channels, so every path
    that runs ``head(features(x))`` (the engine, evaluate) averages, not only ``forward``."""

    def __init__(self, detector: Detector):
        _ = detector.model  # build a deferred network first, so that both share it
        self.__dict__.update(detector.__dict__)
        self.base = detector
        self.name = f"{detector.name} + flip"

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.base.features(x), self.base.features(x.flip(-1))], dim=1)

    def head(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        (logit, embedding), (mirrored, mirrored_embedding) = map(self.base.head, fmap.chunk(2, 1))
        return 0.5 * (logit + mirrored), 0.5 * (embedding + mirrored_embedding)


def compare(checkpoints: dict[str, Path], data: Path, out: Path) -> dict:
    """Metrics side by side on the test split, with and without the flip average; figures."""
    detectors = [Detector.load(path, device="cpu") for path in checkpoints.values()]
    both = [d for det in detectors for d in (det, FlipAveraged(det))]
    split_file = out / "split.csv"
    comparison = evaluate(both, split_file, split="test", out=out / "evaluation")
    test = [s for s in read_manifest(split_file) if s.split == "test"]
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for detector in detectors:
        gradcam_figures(detector, test, figures)
    projection_figure(detectors, test, figures / "projections.png")
    return {
        "markdown": comparison.to_markdown(),
        "table": comparison.to_dict()["table"],
        "n_test": {label: sum(s.label == label for s in test) for label in ("real", "fake")},
        "split_counts": _split_counts(split_file),
        "errors": comparison.errors,
    }


def _split_counts(split_file: Path) -> dict:
    counts: dict[str, dict[str, int]] = {}
    for sample in read_manifest(split_file):
        split = counts.setdefault(sample.split, {})
        split[sample.label] = split.get(sample.label, 0) + 1
    return counts


def gradcam_figures(detector: Detector, test: list, folder: Path) -> None:
    """A grid of test faces with Grad-CAM at the mid and final layers, and the mean maps.

    The grid shows faces of the dataset and stays in the run folder; the mean maps per class
    show no face and can be published.
    """
    import matplotlib.pyplot as plt

    real = [s.path for s in test if s.label == "real"]
    fake = [s.path for s in test if s.label == "fake"]
    pick = real[:GRID_PER_CLASS] + fake[:GRID_PER_CLASS]
    shown = explain(detector, pick, method="gradcam", layers=("mid", "final"))
    fig, axes = plt.subplots(3, len(pick), figsize=(1.6 * len(pick), 5.2))
    for col in range(len(pick)):
        label = "real" if col < GRID_PER_CLASS else "fake"
        axes[0, col].imshow(shown.images[col])
        axes[0, col].set_title(f"{label}\nP(fake) {shown.probs[col]:.2f}", fontsize=8)
        for row, layer in enumerate(("mid", "final"), start=1):
            axes[row, col].imshow(shown.overlay(col, layer=layer))
    for row, text in enumerate(("input", "Grad-CAM, mid", "Grad-CAM, final")):
        axes[row, 0].set_ylabel(text, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{detector.name}: Grad-CAM towards 'fake' on held-out test faces", fontsize=9)
    fig.savefig(folder / f"gradcam_grid_{detector.name}.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    mean_map_figure(detector, real, fake, folder / f"gradcam_mean_{detector.name}.png")


def mean_map_figure(detector: Detector, real: list, fake: list, path: Path) -> None:
    """The mean Grad-CAM map (towards 'fake') over every test face of each class and layer."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(5.2, 5.4))
    for row, layer in enumerate(("mid", "final")):
        for col, (label, paths) in enumerate((("real", real), ("fake", fake))):
            maps = explain(detector, paths, method="gradcam", layers=(layer,)).heatmaps[layer]
            mean = maps.maps.float().mean(0).numpy()
            image = axes[row, col].imshow(mean, cmap="jet", vmin=0, vmax=max(mean.max(), 1e-6))
            axes[row, col].set_title(f"{label} faces (n={len(paths)}), {layer} layer", fontsize=8)
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
            fig.colorbar(image, ax=axes[row, col], fraction=0.046)
    fig.suptitle(f"{detector.name}: mean Grad-CAM (towards 'fake') on the test split", fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def projection_figure(detectors: list[Detector], test: list, path: Path) -> None:
    """t-SNE and UMAP of each detector's penultimate features on the test split, by label."""
    import matplotlib.pyplot as plt

    methods = [m for m in ("tsne", "umap") if m in EXPLAINERS]
    fig, axes = plt.subplots(
        len(methods),
        len(detectors),
        figsize=(4 * len(detectors), 3.8 * len(methods)),
        squeeze=False,
    )
    labels = np.array([s.label for s in test])
    for col, detector in enumerate(detectors):
        embeddings = detector.embed([s.path for s in test])
        for row, method in enumerate(methods):
            coords = EXPLAINERS.create(method).fit_transform(embeddings).coords
            ax = axes[row, col]
            for label, colour in (("real", "tab:blue"), ("fake", "tab:red")):
                chosen = labels == label
                ax.scatter(*coords[chosen].T, s=5, c=colour, label=label, alpha=0.7)
            ax.set_title(f"{detector.name}: {method.upper()} of penultimate features", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.legend(fontsize=8, markerscale=3)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()

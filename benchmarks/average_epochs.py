"""Average the weights of a run's last epochs (Izmailov et al. 2018, "Averaging Weights Leads to
Wider Optima and Better Generalization"), re-estimate BatchNorm on training faces, and compare
the average with each epoch on the validation faces, so the choice is made on validation.

Keep each epoch's weights while the run trains (``benchmarks/keep_epochs.sh`` copies
``last.safetensors`` to ``epochN.safetensors``), then:

    python benchmarks/average_epochs.py runs/recipes/b0-final/efficientnet_b0 \\
        --epochs 3 4 5 --out runs/recipes/b0-final/efficientnet_b0/average.safetensors

The written checkpoint keeps the last epoch's metadata (its training record) and says which
epochs it averages (``metadata["averaged_epochs"]``); its reliability statistics are fitted
afresh, as ``train`` fits them (same method, images, degradations and seed, on the run's
``split.csv``), so ``ship_default.py`` can package it like a run's ``best.safetensors``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _common import command_line, machine
from evaluate_recipe import Family, _batches, _score, samples_and_faces

from deepfake_xai import Detector
from deepfake_xai.calibration import calibrate
from deepfake_xai.data import read_manifest
from deepfake_xai.degradations import degradations_for
from deepfake_xai.detectors.checkpoint import read_metadata
from deepfake_xai.face_index import FaceIndex
from deepfake_xai.metrics import classification_metrics
from deepfake_xai.runtime import configure_threads
from deepfake_xai.training import reestimate_batchnorm

BATCHNORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def average_weights(detectors: list[Detector]) -> Detector:
    """The last detector, its weights replaced by the mean of all of theirs (BatchNorm running
    statistics are left to :func:`reestimate_batchnorm`)."""
    states = [d.model.state_dict() for d in detectors]
    averaged = {}
    for name, tensor in states[-1].items():
        if name.endswith(BATCHNORM_BUFFERS) or not tensor.is_floating_point():
            averaged[name] = tensor
        else:
            averaged[name] = torch.stack([s[name].float() for s in states]).mean(0)
    result = detectors[-1]
    result.model.load_state_dict(averaged)
    return result


def _fit_reliability(checkpoint: Path, split: Path, faces: FaceIndex) -> None:
    """Reliability statistics for ``checkpoint``, fitted as its training run fitted them."""
    training = read_metadata(checkpoint)["training"]
    degradations = degradations_for(training["degrade"], training.get("degrade_chain", 0.0))
    calibrate(
        checkpoint,
        read_manifest(split),
        method=training["reliability"],
        faces=faces,
        images_per_class=training["reliability_images"],
        degradations=degradations,
        batch_size=training["batch_size"],
        seed=training["seed"],
        device="cpu",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the run's detector folder (epochN files)")
    parser.add_argument("--epochs", type=int, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--calibration", type=int, default=512, help="training faces for BatchNorm (as training)"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    threads = configure_threads(args.threads)
    start = time.perf_counter()
    samples, faces = samples_and_faces()
    val = Family("val", [s for s in samples if s.split == "val"])
    train = [s for s in samples if s.split == "train"]
    order = np.random.default_rng(0).permutation(len(train))[: args.calibration]
    calibration = Family("calibration", [train[i] for i in order])  # mixed classes per batch

    def load(epoch: int) -> Detector:
        detector = Detector.load(args.folder / f"epoch{epoch}.safetensors", device="cpu")
        return detector.to("cpu")

    def measure(detector: Detector) -> dict:
        detector.model.float().eval()
        scored = _score(detector, val, faces)
        metrics = classification_metrics(scored["labels"], scored["p_fake"])
        return {k: round(float(metrics[k]), 4) for k in ("accuracy", "roc_auc", "ece")}

    rows = {f"epoch {e}": measure(load(e)) for e in args.epochs}
    averaged = average_weights([load(e) for e in args.epochs])
    reestimate_batchnorm(
        averaged, (averaged.normalize(b) for b in _batches(averaged, calibration, faces))
    )
    rows["average"] = measure(averaged)
    averaged.save(args.out, averaged_epochs=list(args.epochs))
    _fit_reliability(args.out, args.folder.parent / "split.csv", faces)
    record = {
        "command": command_line("average_epochs.py", argv),
        "machine": f"{machine()}, {threads} torch threads",
        "date": time.strftime("%Y-%m-%d"),
        "validation": {"n": len(val.samples), **rows},
        "seconds": round(time.perf_counter() - start, 1),
        "checkpoint": str(args.out),
    }
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))
    best = max(rows, key=lambda k: (rows[k]["accuracy"], rows[k]["roc_auc"]))
    print(f"best on validation: {best}")


if __name__ == "__main__":
    main()

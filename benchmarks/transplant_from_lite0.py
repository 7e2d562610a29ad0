"""Make a MobileNetV2 or an EfficientNet-B0 out of the shipped EfficientNet-Lite0 (issue 21) and
save it as the start of a training run; report how often the untrained copy is right on
validation faces.

    python benchmarks/transplant_from_lite0.py --out runs/mnv2-start.safetensors
    python benchmarks/train_recipe.py --name mnv2-final --detector mobilenetv2_100 \\
        --init runs/mnv2-start.safetensors --teacher efficientnet_lite0_faces ...
    python benchmarks/transplant_from_lite0.py --target efficientnet_b0 \\
        --out runs/b0-from-default.safetensors
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
from _common import command_line
from sources import shared_samples

from deepfake_xai.api import load_detector
from deepfake_xai.detectors.pruned_transplant import mobilenetv2_from_lite0
from deepfake_xai.detectors.transplanted_weights import b0_from_lite0
from deepfake_xai.runtime import configure_threads
from deepfake_xai.training import reestimate_batchnorm

MAKERS = {"mobilenetv2_100": mobilenetv2_from_lite0, "efficientnet_b0": b0_from_lite0}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--donor", default="efficientnet_lite0_faces")
    parser.add_argument("--target", choices=sorted(MAKERS), default="mobilenetv2_100")
    parser.add_argument("--out", type=Path, default=Path("runs/mnv2-start.safetensors"))
    parser.add_argument("--check", type=int, default=100, help="validation faces per class")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    donor = load_detector(args.donor, device="cpu")
    student = MAKERS[args.target](donor)
    made_by = command_line("transplant_from_lite0.py", argv)
    student.metadata["model_card"] = {"reproduce": f"{made_by} ({student.metadata['init']})"}
    student.save(args.out)
    samples = shared_samples()
    picked = [
        s
        for label in ("real", "fake")
        for s in [s for s in samples if s.split == "val" and s.label == label][: args.check]
    ]
    truth = np.array([s.label == "fake" for s in picked])
    train = [s.path for s in samples if s.split == "train"][::97][: args.check]
    recalibrated = copy.deepcopy(student)
    reestimate_batchnorm(recalibrated, [recalibrated.normalize(recalibrated.prepare(train))])
    recalibrated.model.eval()
    for name, detector in (
        ("donor", donor),
        ("copy", student),
        (f"copy, BatchNorm re-estimated on {len(train)} training images", recalibrated),
    ):
        p_fake = detector.predict_proba([s.path for s in picked])
        accuracy = float(((p_fake >= 0.5) == truth).mean())
        print(f"{name}: accuracy {accuracy:.3f} on {len(picked)} validation images (whole images)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Does averaging shipped detectors' P(fake) keep the best of each? The families of
``evaluate_recipe.py`` (test faces, each degradation, SD 2.1 of unseen prompts, real web photos),
faces framed the same way, each detector alone and the average of their P(fake).

    python benchmarks/ensemble_probe.py efficientnet_lite0_faces efficientnet_b0_faces
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import numpy as np
import torch
from _common import machine
from evaluate_recipe import _families, _score, samples_and_faces

from deepfake_xai.api import load_detector
from deepfake_xai.runtime import configure_threads

FAMILIES = ("test", "blur 1 px", "half size", "JPEG 70", "half size + JPEG 70")
ALARMS = ("sd21 held-out keys", "web real")  # one class each: how many are called fake


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("detectors", nargs="+", help="shipped names or checkpoints")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    threads = configure_threads(args.threads)
    start = time.perf_counter()
    samples, faces = samples_and_faces()
    every = _families(samples, SimpleNamespace(autoencoder_dir=None))
    families = [f for f in every if f.name in FAMILIES + ALARMS]
    scores = {}
    for name in args.detectors:
        detector = load_detector(name, device="cpu")
        detector.model.float().to(memory_format=torch.channels_last)
        scores[name] = {f.name: _score(detector, f, faces) for f in families}
    columns = [*args.detectors, "average"]
    print("| family | " + " | ".join(columns) + " |")
    print("| --- |" + " ---: |" * len(columns))
    for family in families:
        labels = scores[args.detectors[0]][family.name]["labels"]
        p = [scores[n][family.name]["p_fake"] for n in args.detectors]
        cells = [_cell(family.name, q, labels) for q in [*p, np.mean(p, axis=0)]]
        print(f"| {family.name} | " + " | ".join(cells) + " |")
    print(f"\n{time.perf_counter() - start:.0f} s, {machine()}, {threads} torch threads")


def _cell(family: str, p_fake: np.ndarray, labels: np.ndarray) -> str:
    if family in ALARMS:
        return f"{int((p_fake >= 0.5).sum())}/{len(p_fake)} called fake"
    return f"{float(((p_fake >= 0.5) == labels).mean()):.3f}"


if __name__ == "__main__":
    main()

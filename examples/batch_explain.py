"""Analyse a folder of faces with both detectors, print the summary, save one Grad-CAM overlay.

    python examples/batch_explain.py FOLDER [--detector CHECKPOINT ...] [--out runs/example]

FOLDER may hold ``real/`` and ``fake/`` sub-folders (then accuracy and F1 are reported) or just
images. Without ``--detector`` the built-in architectures run with untrained weights, which
shows the workflow but not real verdicts: pass checkpoints from ``deepfake-xai train``. With no
FOLDER at all, a small synthetic face set is generated first. Re-running resumes the output
folder; open ``<out>/report.html`` in a browser for the galleries and projections.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import deepfake_xai as dx
from deepfake_xai.analysis import DEFAULT_DETECTORS, AnalysisResult, analyze
from deepfake_xai.synthetic import generate_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, help="images to analyse")
    parser.add_argument("--detector", action="append", help="checkpoint or registry name")
    parser.add_argument("--out", type=Path, default=Path("runs/example"))
    args = parser.parse_args()

    folder = args.folder or generate_dataset(tempfile.mkdtemp(), n_per_class=16, size=128).root
    detectors = args.detector or [
        dx.load_detector(name, image_size=128) for name in DEFAULT_DETECTORS
    ]
    result = analyze(
        folder,
        detectors=detectors,
        layers=("final", "mid"),
        projection="pca",
        out=args.out,
        batch_size=16,
    )
    print(result.describe())
    save_overlay(result)


def save_overlay(result: AnalysisResult) -> None:
    """The most fake-looking image, with the first detector's final-layer Grad-CAM on top."""
    detector = result.detectors[0]
    rows = result.predictions
    rows = rows[(rows["detector"] == detector) & (rows["error"] == "")]
    top = rows.sort_values("p_fake", ascending=False).iloc[0]
    path = result.out / f"overlay_{detector}.png"
    result.overlay(int(top["index"]), detector, layer="final").resize((256, 256)).save(path)
    print(f"P(fake) {top['p_fake']:.3f} for {top['path']} -> {path}")
    print(f"report: {result.report_path}")


if __name__ == "__main__":
    main()

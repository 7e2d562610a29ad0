"""Analyse a folder of faces with the shipped detector, print the summary, save one overlay.

    python examples/batch_explain.py FOLDER [--detector CHECKPOINT ...] [--out runs/example]

FOLDER may hold ``real/`` and ``fake/`` sub-folders (then accuracy and F1 are reported) or just
images. Without ``--detector`` the default detector shipped in the package (EfficientNet-B0
trained on FFHQ photos against StyleGAN and SD 2.1 faces) runs. Without FOLDER the shared face
sample's ``val/`` is used when it is next to this checkout. Faces are found first; an image
without one gets no verdict. Re-running resumes the output folder; open ``<out>/report.html``
for the galleries and projections.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deepfake_xai.analysis import DEFAULT_DETECTORS, AnalysisResult, analyze

SHARED_VAL = Path(__file__).resolve().parents[2] / "shared/data/faces-140k-sample/val"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=SHARED_VAL, help="images")
    parser.add_argument("--detector", action="append", help="checkpoint or registry name")
    parser.add_argument("--out", type=Path, default=Path("runs/example"))
    args = parser.parse_args()

    result = analyze(
        args.folder,
        detectors=args.detector or DEFAULT_DETECTORS,
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

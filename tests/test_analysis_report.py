"""The analysis report: every explainer and layer in the galleries, the explanation-trust link,
and file names that are not valid UTF-8."""

from __future__ import annotations

import os

import numpy as np
import pytest
from models import SIZE, AlignedQuadrantDetector, QuadrantDetector
from PIL import Image, ImageFilter

from deepfake_xai.analysis import analyze
from deepfake_xai.evaluation import evaluate


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    root = tmp_path_factory.mktemp("quadrant-faces")
    rng = np.random.default_rng(0)
    for label in ("real", "fake"):
        (root / label).mkdir()
    for i in range(3):
        image = Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
        image.save(root / "fake" / f"{i}.png")
        image.filter(ImageFilter.GaussianBlur(3)).save(root / "real" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def detectors():
    aligned = AlignedQuadrantDetector()
    aligned.name = "aligned"
    return [QuadrantDetector(), aligned]


def test_report_shows_every_explainer_and_layer_and_links_the_trust_checks(
    faces, detectors, tmp_path
):
    out = tmp_path / "run"
    result = analyze(
        faces,
        detectors=detectors,
        explainers=["gradcam", "saliency"],
        layers=["final"],
        projection=None,
        out=out,
        batch_size=8,
        num_workers=0,
        progress=False,
        faces=False,  # noise quadrants, not faces
    )
    page = result.report_path.read_text(encoding="utf-8")
    assert page.count("gradcam · final") == page.count("saliency · input") > 0
    for detector in ("quadrant", "aligned"):
        assert f'<div class="who">{detector}<br>' in page
    assert "Can the explanations be trusted?" not in page

    evaluate(
        detectors,
        faces,
        latency=False,
        robustness=True,
        perturb=["jpeg=50"],
        explainers=["gradcam"],
        explain_images=2,
        out=out / "trust",
    )
    page = result.report_path.read_text(encoding="utf-8")
    assert "Can the explanations be trusted?" in page
    assert '<a href="trust/comparison.md">' in page
    assert '<td class="num">aligned</td><td class="num">gradcam</td>' in page


def test_file_names_that_are_not_utf8_are_shown_escaped(faces, detectors, tmp_path):
    folder = tmp_path / "odd-names"
    (folder / "fake").mkdir(parents=True)
    odd = os.fsdecode(os.fsencode(folder / "fake") + b"/bad_\xff.png")
    Image.open(faces / "fake" / "0.png").save(odd, format="PNG")
    result = analyze(
        folder,
        detectors=detectors,
        explainers=[],
        projection=None,
        out=tmp_path / "run",
        batch_size=8,
        num_workers=0,
        progress=False,
        faces=False,  # noise quadrants, not faces
    )
    page = result.report_path.read_text(encoding="utf-8")
    assert "bad_\\xff.png" in page

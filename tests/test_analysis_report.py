"""The analysis report: every explainer and layer in the galleries, the explanation-trust link,
file names as people know them (even not valid UTF-8), and the breakdown by source."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from models import SIZE, AlignedQuadrantDetector, QuadrantDetector
from PIL import Image, ImageFilter

from deepfake_xai.analysis import analyze
from deepfake_xai.analysis.store import part_files
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
    assert (result.predictions["source"] == "").all() and "By source" not in page
    assert '<div class="name">fake/0.png<br>' in page and '<div class="name">real/0.png<br>' in page
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


# -- sources and file names -------------------------------------------------------------------
def picture(kind: str, seed: int) -> Image.Image:
    """Noise (the quadrant detectors say fake) or blurred noise (they say real)."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    return image if kind == "noise" else image.filter(ImageFilter.GaussianBlur(3))


# relative path -> (picture, label, source); sd21's blurred fake is missed
SOURCED = {
    "press/real/my photo é.png": ("blurred", "real", "press"),
    "press/real/b.png": ("blurred", "real", "press"),
    "press/fake/a & b.png": ("noise", "fake", "press"),
    "sd21/fake/x.png": ("noise", "fake", "sd21"),
    "sd21/fake/y.png": ("blurred", "fake", "sd21"),
}
PRESS = {"images": 3, "said_fake": 1, "said_real": 2, "no_verdict": 0, "labelled": 3}
PRESS |= {"accuracy": 1.0, "fakes": 1, "fakes_caught": 1.0, "reals": 2, "reals_called_fake": 0.0}
SD21 = {"images": 2, "said_fake": 1, "said_real": 1, "no_verdict": 0, "labelled": 2}
SD21 |= {"accuracy": 0.5, "fakes": 2, "fakes_caught": 0.5, "reals": 0}
SOURCE_ROWS = [
    ["press", "quadrant", "3", "1", "2", "0", "100% of 3", "100% of 1", "0% of 2"],
    ["sd21", "quadrant", "2", "1", "1", "0", "50% of 2", "50% of 2", "-"],
]


def write_sourced(root: Path) -> dict[str, str]:
    """The images of :data:`SOURCED` under ``root``; absolute path -> source."""
    for name, (kind, _, _) in SOURCED.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        picture(kind, len(name)).save(root / name)
    return {str(root / name): source for name, (_, _, source) in SOURCED.items()}


def run_quadrant(inputs, out: Path, **options):
    return analyze(
        inputs,
        detectors=[QuadrantDetector()],
        explainers=[],
        projection=None,
        out=out,
        batch_size=8,
        num_workers=0,
        progress=False,
        faces=False,  # noise quadrants, not faces
        **options,
    )


def by_source_rows(page: str) -> list[list[str]]:
    """The cells of the report's "By source" table, row by row (without the header)."""
    table = re.search(r"<h2>By source</h2><table>(.*?)</table>", page).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", table)[1:]
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows]


def check_sources(result, sources: dict[str, str]) -> None:
    """``source`` in the predictions (also predictions.csv) and the per-source table."""
    rows = result.predictions
    assert dict(zip(rows["path"], rows["source"], strict=True)) == sources
    exported = pd.read_csv(result.out / "predictions.csv", keep_default_na=False)
    assert exported["source"].tolist() == rows["source"].tolist()
    table = result.by_source()
    assert table[["source", "detector"]].values.tolist() == [
        ["press", "quadrant"],
        ["sd21", "quadrant"],
    ]
    for row, expected in zip(table.to_dict("records"), (PRESS, SD21), strict=True):
        assert {k: row[k] for k in expected} == pytest.approx(expected)
    assert np.isnan(table["reals_called_fake"].iloc[1])
    page = result.report_path.read_text(encoding="utf-8")
    assert by_source_rows(page) == SOURCE_ROWS
    described = result.describe()
    assert "by source:\n    press, quadrant: 3 images (fake 1, no signs found 2)" in described


def test_sub_folders_are_sources_in_the_predictions_the_result_and_the_report(tmp_path):
    sources = write_sourced(tmp_path / "photos")
    result = run_quadrant(tmp_path / "photos", tmp_path / "run")
    check_sources(result, sources)
    page = result.report_path.read_text(encoding="utf-8")
    assert f"<td>{tmp_path / 'photos'}</td>" in page  # the folder the names start from
    for name in ("press/real/my photo é.png", "press/fake/a &amp; b.png", "sd21/fake/y.png"):
        assert f'<div class="name">{name}<br>' in page


def test_a_manifest_group_column_gives_the_sources_and_survives_a_resume(tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    rows = ["path,label,group"]
    for name, (kind, label, source) in SOURCED.items():
        flat = name.replace("/", "_")
        picture(kind, len(name)).save(folder / flat)
        rows.append(f'"{flat}",{label},{source}')
    manifest = folder / "list.csv"
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    sources = {str(folder / n.replace("/", "_")): s for n, (_, _, s) in SOURCED.items()}
    result = run_quadrant(manifest, tmp_path / "run")
    check_sources(result, sources)
    page = result.report_path.read_text(encoding="utf-8")
    assert '<div class="name">press_fake_a &amp; b.png<br>' in page

    for part in part_files(result.out):
        part.unlink()
    (result.out / "report.html").unlink()
    resumed = run_quadrant(manifest, tmp_path / "run")
    assert resumed.summary["resumed"] == 0 and resumed.summary["processed_now"] == len(SOURCED)
    check_sources(resumed, sources)

    manifest.write_text("\n".join(rows).replace(",sd21", ",sd2") + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="different images, labels or sources"):
        run_quadrant(manifest, tmp_path / "run")


# -- words a person needs -----------------------------------------------------------------------
def test_report_says_what_metrics_projections_and_limits_mean(faces, tmp_path):
    from deepfake_xai.analysis import AnalysisResult
    from deepfake_xai.analysis.projection import write_projection
    from deepfake_xai.analysis.report import write_report

    carded = QuadrantDetector()
    carded.metadata = {**carded.metadata, "model_card": {"limits": "Sees one quadrant only."}}
    result = analyze(  # as the Batch tab runs it: no projection, then one of its own
        faces,
        detectors=[carded],
        explainers=[],
        projection=None,
        out=tmp_path / "run",
        batch_size=8,
        num_workers=0,
        progress=False,
        report=False,
        faces=False,  # noise quadrants, not faces
    )
    write_projection(result, "quadrant", "pca")
    page = write_report(AnalysisResult(result.out)).read_text(encoding="utf-8")
    assert "None" not in page
    assert "<h2>Embeddings: how each detector groups the images</h2>" in page
    assert "Each point is an image" in page
    head = re.search(r"<h2>Metrics \(labelled images\)</h2><table><tr>(.*?)</tr>", page)[1]
    assert re.findall(r"<th>(.*?)</th>", head) == [
        "detector",
        "images",
        "accuracy",
        "precision",
        "fakes caught",
        "F1",
        "ROC AUC",
        "average precision",
        "equal error rate",
        "calibration error (ECE)",
    ]
    assert "<strong>equal error rate</strong>: the error rate at the threshold" in page
    assert "<h2>Limits</h2><p>A detector recognises only the kinds of fake it learnt from" in page
    assert "<li><strong>quadrant</strong>: Sees one quadrant only.</li>" in page

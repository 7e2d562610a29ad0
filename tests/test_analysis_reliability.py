"""The three outcomes in every batch front door: ``analyze`` (its columns, run.json, resume,
the report and the CLI), the app's Batch tab and ``evaluate``, with a tiny detector whose
reliability statistics were fitted on noise, and the same detector without them."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from analysis_data import split_parts
from PIL import Image, ImageFilter

import deepfake_xai as dx
from deepfake_xai.analysis import AnalysisResult, analyze
from deepfake_xai.analysis.outcomes import NO_STATISTICS, p_fake_text
from deepfake_xai.analysis.store import RELIABILITY_FIELDS, part_files, write_parquet
from deepfake_xai.reliability import fit_detector

SIZE = 48
NOISE, BLURRED = 8, 6
NEW_COLUMNS = (*RELIABILITY_FIELDS, "jpeg_quality", "model_version")


def _noise(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=generator, dtype=torch.uint8)


def _picture(rng: np.random.Generator, side: int = SIZE, blurred: bool = False) -> Image.Image:
    image = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
    return image.filter(ImageFilter.GaussianBlur(3)) if blurred else image


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """One untrained MobileNetV2 saved twice: with statistics fitted on uniform noise (faces of
    at least 24 px, JPEG quality 50 and up) and without."""
    folder = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    detector = dx.load_detector("mobilenetv2_100", image_size=SIZE, device="cpu")
    bare = detector.save(folder / "bare")
    train = [(_noise(16, seed), torch.tensor([0] * 8 + [1] * 8)) for seed in range(3)]
    val = [_noise(16, 10), _noise(16, 11)]
    fit_detector(detector, train, val, min_face_side=24, min_jpeg_quality=50)
    return {"fitted": detector.save(folder / "fitted"), "bare": bare}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """``noise/``: images like the training noise (one too small, one a rough JPEG);
    ``blurred/``: blurred noise, unlike anything the statistics saw."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(5)
    (root / "noise").mkdir()
    (root / "blurred").mkdir()
    for i in range(NOISE):
        _picture(rng).save(root / "noise" / f"{i}.png")
    for i in range(BLURRED):
        _picture(rng, blurred=True).save(root / "blurred" / f"{i}.png")
    _picture(rng, side=16).save(root / "noise" / "small.png")
    _picture(rng).save(root / "noise" / "rough.jpg", quality=20)
    return root


def run(photos: Path, detector, out: Path, **options) -> AnalysisResult:
    return analyze(
        photos,
        detectors=[detector],
        explainers=(),
        projection=None,
        out=out,
        batch_size=8,
        num_workers=0,
        progress=False,
        faces=False,  # noise, not faces
        **options,
    )


@pytest.fixture(scope="module")
def fitted_run(photos, checkpoints, tmp_path_factory) -> AnalysisResult:
    return run(photos, str(checkpoints["fitted"]), tmp_path_factory.mktemp("fitted") / "out")


def by_name(result: AnalysisResult) -> pd.DataFrame:
    rows = result.predictions
    return rows.set_index(pd.Index([f"{Path(p).parent.name}/{Path(p).name}" for p in rows["path"]]))


def test_analyze_gives_three_outcomes_with_the_distance_and_the_model_version(
    fitted_run, checkpoints
):
    fingerprint = dx.load_detector(checkpoints["fitted"], device="cpu").fingerprint
    rows = by_name(fitted_run)
    assert set(NEW_COLUMNS) <= set(rows.columns) and len(rows) == NOISE + BLURRED + 2
    assert (rows["status"] == "ok").all() and (rows["model_version"] == fingerprint).all()

    blurred = rows[rows.index.str.startswith("blurred/")]
    assert (blurred["verdict"] == "uncertain").all() and (blurred["ood_score"] >= 1).all()
    assert not blurred["reliable"].any()
    assert blurred["reasons"].str.startswith("unlike the faces this detector learnt from").all()

    noise = rows.loc[[f"noise/{i}.png" for i in range(NOISE)]]
    assert (noise["verdict"] == "uncertain").mean() <= 0.5
    sure = noise[noise["verdict"] != "uncertain"]
    assert (
        sure["reliable"].all() and (sure["reasons"] == "").all() and (sure["ood_score"] < 1).all()
    )
    assert (sure["verdict"] == np.where(sure["p_fake"] >= 0.5, "fake", "real")).all()

    small, rough = rows.loc["noise/small.png"], rows.loc["noise/rough.jpg"]
    assert small["verdict"] == "uncertain" and "16 px across" in small["reasons"]
    assert 15 <= rough["jpeg_quality"] <= 25 and "JPEG" in rough["reasons"]
    assert pd.isna(small["jpeg_quality"])

    exported = pd.read_csv(fitted_run.out / "predictions.csv", keep_default_na=False)
    assert set(NEW_COLUMNS) <= set(exported.columns)
    assert set(exported["reliable"].astype(str)) == {"True", "False"}

    info = json.loads((fitted_run.out / "run.json").read_text())
    facts = info["detectors"]["mobilenetv2_100"]
    assert facts["fingerprint"] == fingerprint and facts["reliability"]["min_face_side"] == 24
    counts = fitted_run.summary["verdicts"]["mobilenetv2_100"]
    assert counts["uncertain"] == (rows["verdict"] == "uncertain").sum() >= BLURRED + 2
    assert counts["fake"] + counts["real"] + counts["uncertain"] == len(rows)
    described = fitted_run.describe()
    assert f"mobilenetv2_100 (model {fingerprint}): fake" in described
    assert f"uncertain {counts['uncertain']}" in described
    assert "blurred, mobilenetv2_100: 6 images (fake 0, no signs found 0, uncertain 6)" in described
    table = fitted_run.by_source()
    assert table.set_index("source").loc["blurred", "said_uncertain"] == BLURRED


def test_the_report_shows_the_outcomes_the_distance_and_the_fingerprint(fitted_run):
    page = fitted_run.report_path.read_text(encoding="utf-8")
    fingerprint = fitted_run.info["detectors"]["mobilenetv2_100"]["fingerprint"]
    assert "<h2>Outcomes</h2>" in page and f"<code>{fingerprint}</code>" in page
    assert f"mobilenetv2_100 (model {fingerprint})" in page
    assert "Three outcomes: fake" in page and "no proof that the photo is real" in page
    assert "<h2>Uncertain (furthest from the training faces first)</h2>" in page
    assert '<b class="uncertain">uncertain</b>' in page and "distance score " in page
    assert "why uncertain: unlike the faces this detector learnt from" in page
    assert "smaller than any this detector learnt from" in page
    assert "confiden" not in page and "% fake" not in page


def test_without_statistics_nothing_is_measured_and_nothing_uncertain(
    photos, checkpoints, tmp_path
):
    result = run(photos, str(checkpoints["bare"]), tmp_path / "out")
    rows = result.predictions
    assert rows["reliable"].isna().all() and rows["ood_score"].isna().all()
    assert (rows["reasons"] == "").all() and set(rows["verdict"]) <= {"fake", "real"}
    assert (rows["verdict"] == np.where(rows["p_fake"] >= 0.5, "fake", "real")).all()
    assert result.info["detectors"]["mobilenetv2_100"]["reliability"] is None
    assert f"mobilenetv2_100 {NO_STATISTICS}" in result.describe()
    page = result.report_path.read_text(encoding="utf-8")
    assert NO_STATISTICS in page and "<h2>Uncertain" not in page


def test_a_resumed_run_keeps_the_reliability_fields(fitted_run, photos, checkpoints, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(fitted_run.out, out)
    parts = split_parts(out, len(fitted_run.paths), 4)
    lost = set(pq.read_table(parts[-1], columns=["index"])["index"].to_pylist())
    parts[-1].unlink()
    resumed = run(photos, str(checkpoints["fitted"]), out)
    assert resumed.summary["processed_now"] == len(lost)
    before, after = fitted_run.predictions, resumed.predictions
    text = ["index", "verdict", "reliable", "reasons", "jpeg_quality", "model_version"]
    pd.testing.assert_frame_equal(before[text], after[text])
    np.testing.assert_allclose(before["ood_score"], after["ood_score"], rtol=1e-4)


def test_a_run_written_before_these_columns_reads_and_resumes(photos, checkpoints, tmp_path):
    out = tmp_path / "out"
    bare = str(checkpoints["bare"])
    fresh = run(photos, bare, out)
    for part in split_parts(out, len(fresh.paths), 4):  # as an older version wrote them
        table = pq.read_table(part)
        write_parquet(part, table.drop_columns(list(NEW_COLUMNS)))
    old = AnalysisResult(out).predictions
    assert (old["reasons"] == "").all() and (old["model_version"] == "").all()
    assert old["reliable"].isna().all() and old["ood_score"].isna().all()
    assert (old["verdict"] == fresh.predictions["verdict"]).all()
    last = part_files(out)[-1]
    lost = set(pq.read_table(last, columns=["index"])["index"].to_pylist())
    last.unlink()
    resumed = run(photos, bare, out)
    rows = resumed.predictions
    new = rows["index"].isin(lost)
    assert (rows.loc[new, "model_version"] != "").all() and (
        rows.loc[~new, "model_version"] == ""
    ).all()
    assert (rows["verdict"] == fresh.predictions["verdict"]).all()


def test_other_reliability_statistics_are_not_mixed_into_a_run(photos, checkpoints, tmp_path):
    run(photos, str(checkpoints["bare"]), tmp_path / "out")
    with pytest.raises(ValueError, match="reliability statistics"):
        run(photos, str(checkpoints["fitted"]), tmp_path / "out")


def test_infinite_scores_give_no_verdict_and_the_cli_says_so(photos, tmp_path, capsys):
    from deepfake_xai.cli import main

    torch.manual_seed(0)
    broken = dx.load_detector("mobilenetv2_100", image_size=SIZE, device="cpu")
    classifier = broken.model.get_classifier()
    classifier.weight.data.fill_(3e38)  # finite weights whose logits overflow to +inf
    classifier.bias.data.fill_(3e38)
    checkpoint = broken.save(tmp_path / "overflowing")
    args = ["analyze", str(photos / "noise"), "--detector", str(checkpoint), "--out"]
    options = ["--no-face-check", "--projection", "none", "--explainer", "none", "--no-report"]
    options += ["--no-progress", "--workers", "0", "--device", "cpu", "--threads", "1"]
    assert main([*args, str(tmp_path / "out"), *options]) == 1
    captured = capsys.readouterr()
    assert "no usable score" in captured.err and len(captured.err.strip().splitlines()) == 1
    rows = AnalysisResult(tmp_path / "out").predictions
    assert (rows["status"] == "invalid_score").all() and (rows["verdict"] == "").all()
    assert rows["p_fake"].isna().all() and rows["reliable"].isna().all()


# -- the app's Batch tab ----------------------------------------------------------------------
def test_the_batch_tab_counts_each_outcome_and_downloads_the_reliability_fields(
    photos, checkpoints, tmp_path
):
    from deepfake_xai.ui.batch_tab import CSV_COLUMNS, TABLE_COLUMNS, run_batch

    fitted = dx.load_detector(checkpoints["fitted"], device="cpu")
    files = [str(p) for p in sorted(photos.glob("*/*.png"))]
    summary, table, csv_file, gallery, scatter, *_ = run_batch(
        files, [fitted], "pca", False, tmp_path / "work", [fitted.name]
    )
    assert list(table.columns) == TABLE_COLUMNS
    assert set(table["verdict"]) <= {"fake", "no signs found", "uncertain"}
    uncertain = int((table["verdict"] == "uncertain").sum())
    assert uncertain >= BLURRED + 1
    assert "| detector | model | fake | no signs found | uncertain |" in summary
    fake, found = (int((table["verdict"] == v).sum()) for v in ("fake", "no signs found"))
    assert f"| MobileNetV2 | {fitted.fingerprint} | {fake} | {found} | {uncertain} |" in summary
    assert "Three outcomes" in summary and "said real" not in summary
    flagged = table[table["verdict"] == "uncertain"]
    assert (flagged["distance"] >= 1).any() and flagged["note"].str.len().gt(0).all()
    assert all(len(f"{p:.10g}".split(".")[-1]) <= 2 for p in table["P(fake)"])
    download = pd.read_csv(csv_file, keep_default_na=False)
    assert list(download.columns) == CSV_COLUMNS
    assert set(download["model version"]) == {fitted.fingerprint}
    assert set(download["reliable"].astype(str)) == {"True", "False"}
    captions = [caption for _, caption in gallery]
    assert all(re.search(r" · P\(fake\) (0\.\d\d|above 0\.99|below 0\.01) · ", c) for c in captions)
    assert not any("%" in c for c in captions)
    points = pd.DataFrame(scatter.value["data"], columns=scatter.value["columns"])
    assert "uncertain" in set(points["label and verdict"])

    bare = dx.load_detector(checkpoints["bare"], device="cpu")
    summary, table, *_ = run_batch(files, [bare], "none", False, tmp_path / "work", [bare.name])
    assert f"MobileNetV2 {NO_STATISTICS}" in summary
    assert set(table["verdict"]) <= {"fake", "no signs found"}


# -- evaluate ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """real/: noise like the training faces; fake/: blurred noise, unlike them."""
    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(7)
    for label, blurred in (("real", False), ("fake", True)):
        (root / label).mkdir()
        for i in range(6):
            _picture(rng, blurred=blurred).save(root / label / f"{i}.png")
    return root


def test_evaluate_reports_the_share_flagged_and_the_accuracy_on_the_rest(
    labelled, checkpoints, tmp_path
):
    from deepfake_xai.evaluation import evaluate

    comparison = evaluate(
        [checkpoints["fitted"], checkpoints["bare"]],
        labelled,
        split=None,
        latency=False,
        robustness=True,
        perturb=["blur=1"],
        out=tmp_path,
    )
    fitted, bare = comparison.table.index
    table = comparison.table
    assert {"accuracy", "f1", "flagged_uncertain", "accuracy_unflagged"} <= set(table.columns)
    predictions = comparison.predictions
    mine = predictions[predictions["detector"] == fitted]
    flagged = mine["verdict"] == "uncertain"
    assert flagged[mine["label"] == "fake"].all()  # every blurred image is unlike the noise
    assert table.loc[fitted, "flagged_uncertain"] == pytest.approx(flagged.mean())
    sure = mine[~flagged]
    expected = ((sure["p_fake"] >= 0.5) == (sure["target"] == 1)).mean()
    assert table.loc[fitted, "accuracy_unflagged"] == pytest.approx(expected)
    assert np.isnan(table.loc[bare, "flagged_uncertain"])
    assert predictions.loc[predictions["detector"] == bare, "ood_score"].isna().all()

    saved = json.loads((tmp_path / "comparison.json").read_text())
    rows = {row["detector"]: row for row in saved["table"]}
    assert rows[fitted]["flagged_uncertain"] == pytest.approx(flagged.mean())
    assert rows[bare]["flagged_uncertain"] is None and rows[bare]["accuracy"] is not None
    robustness = {(r["detector"], r["level"]): r for r in saved["trust"]["robustness"]}
    assert robustness[fitted, ""]["flagged_uncertain"] >= 0.5
    assert 0 <= robustness[fitted, "1"]["flagged_uncertain"] <= 1
    assert robustness[bare, "1"]["flagged_uncertain"] is None
    assert "flagged_uncertain" in (tmp_path / "comparison.md").read_text()


def test_p_fake_is_never_written_as_certainty():
    assert p_fake_text(0.934) == "P(fake) 0.93"
    assert p_fake_text(0.9999) == "P(fake) above 0.99"
    assert p_fake_text(1e-6) == "P(fake) below 0.01"

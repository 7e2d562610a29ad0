import json
import math

import numpy as np
import pytest
import torch

import deepfake_xai as dx
from deepfake_xai import evaluation
from deepfake_xai.data import discover, write_manifest
from deepfake_xai.evaluation import evaluate, measure_speed, select_split
from deepfake_xai.metrics import classification_metrics
from deepfake_xai.synthetic import generate_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, 20, size=40, seed=2, split=True)
    return root


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt")
    paths = []
    for name, size in (("mobilenetv2_100", 32), ("efficientnet_b0", 40)):
        torch.manual_seed(0)
        detector = dx.load_detector(name, image_size=size, device="cpu")
        paths.append(detector.save(out / name / "best.safetensors", metrics={"note": "untrained"}))
    return paths


def test_evaluate_two_checkpoints_table_and_files(dataset, checkpoints, tmp_path):
    comparison = evaluate(checkpoints, dataset, split="test", batch_size=4, out=tmp_path)
    table = comparison.table
    assert list(table.index) == ["mobilenetv2_100", "efficientnet_b0"]
    for column in (
        "accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "ap",
        "eer",
        "ece",
        "ms_per_image",
        "images_per_s",
        "params",
        "n",
    ):
        assert column in table.columns
    assert (table["n"] == 4).all()  # 20 per class -> 2 per class in test
    assert (table["ms_per_image"] > 0).all() and (table["images_per_s"] > 0).all()
    assert table.loc["mobilenetv2_100", "params"] < table.loc["efficientnet_b0", "params"]

    predictions = comparison.predictions
    assert len(predictions) == 8 and set(predictions["split"]) == {"test"}
    for name, rows in predictions.groupby("detector"):
        expected = classification_metrics(rows["target"], rows["p_fake"])
        assert comparison.metrics[name]["f1"] == pytest.approx(expected["f1"])
        assert table.loc[name, "accuracy"] == pytest.approx(expected["accuracy"])
    # the probabilities match the detector's own predict_proba
    detector = dx.load_detector(checkpoints[0], device="cpu")
    rows = predictions[predictions["detector"] == "mobilenetv2_100"]
    np.testing.assert_allclose(
        rows["p_fake"], detector.predict_proba(list(rows["path"])), rtol=1e-4, atol=1e-5
    )

    markdown = comparison.to_markdown()
    assert markdown.startswith("| detector | accuracy |")
    assert "| mobilenetv2_100 |" in markdown and "M |" in markdown
    for name in (
        "comparison.md",
        "comparison.json",
        "predictions.csv",
        "confusion_matrices.png",
        "roc_curves.png",
        "reliability.png",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "roc_curves.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert saved["split"] == "test" and saved["n_images"] == 4
    assert [row["detector"] for row in saved["table"]] == list(table.index)


def test_groups_errors_and_shared_decoding(dataset, checkpoints, tmp_path, monkeypatch):
    samples = [s for s in discover(dataset) if s.split == "test"]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"definitely not a png")
    rows = [
        (s.path, s.label, s.split, "studio" if i % 2 else "phone") for i, s in enumerate(samples)
    ]
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,label,split,group\n"
        + "".join(f"{p},{lbl},{sp},{g}\n" for p, lbl, sp, g in rows)
        + f"{bad},fake,test,phone\n"
    )
    loaders = []
    real_make_loader = evaluation.make_loader

    def counting(*args, **kwargs):
        loaders.append(args[0])
        return real_make_loader(*args, **kwargs)

    monkeypatch.setattr(evaluation, "make_loader", counting)
    same_size = [checkpoints[0], checkpoints[0]]
    comparison = evaluate(same_size, manifest, latency=False)
    assert len(loaders) == 1  # both detectors share one decoded batch
    assert (
        list(comparison.table.index)
        == ["mobilenetv2_100 (mobilenetv2_100)", "mobilenetv2_100 (mobilenetv2_100) #2"]
        or len(set(comparison.table.index)) == 2
    )
    assert comparison.errors and comparison.errors[0][0] == str(bad)
    assert "corrupt" in comparison.errors[0][1] or "not a recognised" in comparison.errors[0][1]
    groups = next(iter(comparison.per_group.values()))
    assert (
        sorted(groups) == ["phone", "studio"]
        and groups["phone"]["n"] == 2
        and groups["studio"]["n"] == 2
    )
    assert math.isnan(comparison.table["ms_per_image"].iloc[0])
    assert "| - |" in comparison.to_markdown()


def test_select_split_errors(dataset, tmp_path):
    with pytest.raises(
        ValueError,
        match=r"no images in split 'holdout' \(splits found: \['test', 'train', 'val'\]\)",
    ):
        select_split(dataset, "holdout")
    assert len(select_split(dataset, None)) == 40
    unlabelled = tmp_path / "u.csv"
    write_manifest([s.__class__(s.path) for s in discover(dataset)[:2]], unlabelled)
    with pytest.raises(ValueError, match="no labelled images"):
        select_split(unlabelled, "test")


def test_measure_speed(checkpoints):
    detector = dx.load_detector(checkpoints[0], device="cpu")
    speed = measure_speed(detector, runs=3, warmup=1, batch_size=4, batches=1)
    assert speed["ms_per_image"] > 0 and speed["images_per_s"] > 0


def test_same_detector_from_two_runs_is_named_by_path(dataset, checkpoints, tmp_path):
    copies = []
    for run in ("run_a", "run_b"):
        target = tmp_path / run / "best.safetensors"
        target.parent.mkdir()
        target.write_bytes(checkpoints[0].read_bytes())
        copies.append(target)
    comparison = evaluate(copies, dataset, latency=False)
    assert list(comparison.table.index) == [
        "mobilenetv2_100 (run_a/best.safetensors)",
        "mobilenetv2_100 (run_b/best.safetensors)",
    ]


def test_held_out_split_of_the_training_runs(dataset, checkpoints, tmp_path):
    from dataclasses import replace

    from deepfake_xai.evaluation import held_out, run_split_file

    unsplit = [replace(s, split=None) for s in discover(dataset)]
    run_a, run_b = tmp_path / "a" / "split.csv", tmp_path / "b" / "split.csv"
    write_manifest(
        [replace(s, split="test" if i < 6 else "train") for i, s in enumerate(unsplit)], run_a
    )
    write_manifest(
        [replace(s, split="test" if i >= 4 else "train") for i, s in enumerate(unsplit)], run_b
    )
    both = held_out(unsplit, [run_a, run_b], "test")
    assert [s.path for s in both] == [s.path for s in unsplit[4:6]]
    assert all(s.split == "test" for s in both)
    detector = dx.load_detector(checkpoints[0], device="cpu")
    assert run_split_file(detector, checkpoints[0]) is None
    detector.metadata["training"] = {"split_file": str(run_a)}
    assert run_split_file(detector) == run_a
    comparison = evaluate([detector], unsplit, latency=False)
    assert comparison.split_source == str(run_a) and comparison.table["n"].iloc[0] == 6

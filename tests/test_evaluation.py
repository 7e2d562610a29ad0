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
    assert (table["threads"] == torch.get_num_threads()).all()  # next to every speed figure
    assert comparison.threads == torch.get_num_threads()
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


def test_auto_split_on_a_plain_real_fake_folder(checkpoints, tmp_path, capsys):
    from deepfake_xai.cli import main

    plain = tmp_path / "plain"
    generate_dataset(plain, 3, size=40, seed=4)
    comparison = evaluate(checkpoints[:1], plain, latency=False)
    assert comparison.split is None and comparison.table["n"].iloc[0] == 6
    assert "has no train/val/test folders: evaluating all 6 labelled images" in (
        comparison.split_note
    )
    with pytest.raises(ValueError, match="no train/val/test folders, so pass split 'all'"):
        evaluate(checkpoints[:1], plain, split="test", latency=False)
    assert (
        main(
            [
                "evaluate",
                str(plain),
                "--detector",
                str(checkpoints[0]),
                "--no-latency",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "6 images of all splits on cpu with" in out and "no train/val/test folders" in out


def test_auto_split_prefers_val_to_training_images(checkpoints, tmp_path):
    generate_dataset(tmp_path / "d", 10, size=40, seed=5, split=True)
    samples = discover(tmp_path / "d")
    manifest = tmp_path / "no_test.csv"
    write_manifest([s for s in samples if s.split != "test"], manifest)
    comparison = evaluate(checkpoints[:1], manifest, latency=False)
    assert comparison.split == "val" and "no test split" in comparison.split_note
    only_train = tmp_path / "train.csv"
    write_manifest([s for s in samples if s.split == "train"], only_train)
    with pytest.raises(ValueError, match="only training images.*--split train"):
        evaluate(checkpoints[:1], only_train, latency=False)


def test_untrained_registry_detector_warns(dataset):
    from deepfake_xai.detectors import UntrainedDetectorWarning

    with pytest.warns(UntrainedDetectorWarning, match="mobilenetv2_100: built from the registry"):
        evaluate(["mobilenetv2_100"], dataset, latency=False)


def test_robustness_explanations_and_card(dataset, checkpoints, tmp_path):
    from deepfake_xai.detectors.checkpoint import read_metadata

    checkpoint = tmp_path / "mobilenetv2_100.safetensors"
    checkpoint.write_bytes(checkpoints[0].read_bytes())
    comparison = evaluate(
        [checkpoint],
        dataset,
        latency=False,
        robustness=True,
        perturb=["jpeg=50", "shift=4"],
        explainers=["gradcam"],
        explain_images=2,
        write_card=True,
        out=tmp_path / "out",
    )
    saved = json.loads((tmp_path / "out" / "comparison.json").read_text())
    rows = saved["trust"]["robustness"]
    assert [(r["perturbation"], r["level"]) for r in rows] == [("clean", ""), ("jpeg", "50")]
    assert saved["trust"]["explanations"]["verdicts"][0]["explainer"] == "gradcam"
    assert saved["trust"]["settings"]["explained_images"] == 2
    for name in ("robustness", "stability", "faithfulness", "sanity"):
        assert (tmp_path / "out" / f"{name}.png").stat().st_size > 0
    assert "## Robustness" in (tmp_path / "out" / "comparison.md").read_text()
    card = read_metadata(checkpoint)["robustness"]
    assert card == comparison.trust.card("mobilenetv2_100")
    assert str(dataset) not in card["dataset"]  # no server path in the model card
    assert card["rows"][0] == {
        "perturbation": "clean",
        "level": "",
        "accuracy": rows[0]["accuracy"],
        "roc_auc": rows[0]["roc_auc"],
        "ece": rows[0]["ece"],
        "n": 4,
    }
    with pytest.raises(ValueError, match="write_card needs local .safetensors checkpoints"):
        evaluate(["mobilenetv2_100"], dataset, robustness=True, write_card=True)


def test_evaluate_cli_trust_flags(dataset, checkpoints, capsys):
    from deepfake_xai.cli import main

    args = ["evaluate", str(dataset), "--detector", str(checkpoints[0]), "--no-latency"]
    code = main(
        [
            *args,
            "--no-progress",
            "--robustness",
            "--perturb",
            "blur=1",
            "--explainer",
            "gradcam",
            "--explain-images",
            "2",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "## Robustness" in out and "| mobilenetv2_100 | blur | 1 |" in out
    assert "## Can the explanations be trusted?" in out
    assert main([*args, "--robustness", "--perturb", "jpeg=0"]) == 2
    assert "jpeg=0: out of range" in capsys.readouterr().err


def test_a_card_written_into_an_fp16_checkpoint_keeps_it_fp16(checkpoints, tmp_path):
    from safetensors.torch import load_file

    from deepfake_xai.evaluation import write_robustness_card

    detector = dx.Detector.load(checkpoints[0], device="cpu")
    detector.model.half()
    path = detector.save(tmp_path / "half.safetensors")
    size = path.stat().st_size
    write_robustness_card(path, {"dataset": "d", "rows": []})
    assert {t.dtype for t in load_file(path).values() if t.is_floating_point()} == {torch.float16}
    assert path.stat().st_size < size * 1.05
    assert dx.Detector.load(path).metadata["robustness"] == {"dataset": "d", "rows": []}

import csv
import json
import math
import time
from pathlib import Path

import pytest
import torch

from deepfake_xai.data import (
    Sample,
    discover,
    fingerprint,
    read_manifest,
    split_counts,
    subsample,
)
from deepfake_xai.detectors import Detector, weights
from deepfake_xai.detectors.checkpoint import read_metadata, update_metadata
from deepfake_xai.registry import RegistryError
from deepfake_xai.synthetic import generate_dataset
from deepfake_xai.training import TrainConfig, prepare_split, train

DETECTOR = "mobilenetv2_100"


def tiny_config(**overrides) -> TrainConfig:
    settings = dict(epochs=1, batch_size=8, image_size=32, pretrained=False, max_train_batches=2)
    return TrainConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, 12, size=40, seed=1)
    return root


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    messages = []
    results = train(dataset, [DETECTOR], out, tiny_config(epochs=2), log=messages.append)
    return out, results[DETECTOR], messages


def test_training_writes_checkpoints_logs_and_metadata(run, dataset):
    out, result, messages = run
    folder = out / DETECTOR
    for name in (
        "best.safetensors",
        "last.safetensors",
        "last.state.safetensors",
        "metrics.csv",
        "metrics.json",
    ):
        assert (folder / name).is_file(), name
    assert result.checkpoint == folder / "best.safetensors"
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert result.history[0]["train_loss"] < 1.0  # a fresh head starts near BCE = ln 2
    with open(folder / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and float(rows[0]["lr"]) == pytest.approx(1e-3)
    assert json.loads((folder / "metrics.json").read_text())["best"]["epoch"] == result.best_epoch

    split = read_manifest(out / "split.csv")
    assert split_counts(split) == {
        "test": {"fake": 1, "real": 1},
        "train": {"fake": 10, "real": 10},
        "val": {"fake": 1, "real": 1},
    }
    detector = Detector.load(result.checkpoint, device="cpu")
    meta = detector.metadata
    assert meta["training"]["fingerprint"] == fingerprint(split)
    assert meta["training"]["n_per_split"]["train"] == {"fake": 10, "real": 10}
    assert meta["training"]["epochs_run"] == result.best_epoch
    assert meta["training"]["lr"] == 1e-3 and meta["training"]["pretrained_init"] is False
    assert meta["metrics"]["accuracy"] == result.best["accuracy"]
    assert meta["metrics"]["loss"] == pytest.approx(result.best["loss"])
    assert meta["trained_on"] == str(dataset)
    assert detector.input_size == 32
    # BatchNorm statistics were re-estimated on the 20 training images (3 batches of 8)
    tracked = {
        int(m.num_batches_tracked)
        for m in detector.model.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    }
    assert tracked == {3}
    assert detector.predict_proba([s.path for s in split[:3]]).shape == (3,)
    assert any(m.startswith(f"{DETECTOR} epoch 2:") for m in messages)


def test_same_seed_same_result_and_resume_continues_exactly(run, dataset, tmp_path):
    out, full, _ = run
    first = train(dataset, [DETECTOR], tmp_path, tiny_config(epochs=1), log=lambda m: None)
    assert {**first[DETECTOR].history[0], "seconds": 0} == {**full.history[0], "seconds": 0}
    messages = []
    checkpoint = tmp_path / DETECTOR / "last.safetensors"
    resumed = train(
        dataset, [], tmp_path, tiny_config(epochs=2), resume=checkpoint, log=messages.append
    )
    assert any("resuming from" in m for m in messages)
    assert [row["epoch"] for row in resumed[DETECTOR].history] == [1, 2]
    expected = Detector.load(out / DETECTOR / "last.safetensors", device="cpu").model.state_dict()
    got = Detector.load(checkpoint, device="cpu").model.state_dict()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    with pytest.raises(ValueError, match="already ran 2 epochs"):
        train(dataset, [], tmp_path, tiny_config(epochs=2), resume=checkpoint)


def test_resume_without_state_restores_weights_only(run, dataset, tmp_path):
    out, _, _ = run
    checkpoint = tmp_path / "w.safetensors"
    checkpoint.write_bytes((out / DETECTOR / "last.safetensors").read_bytes())
    update_metadata(checkpoint, robustness={"rows": []}, model_card={"summary": "old weights"})
    messages = []
    result = train(
        dataset,
        [DETECTOR],
        tmp_path / "again",
        tiny_config(max_train_batches=1),
        resume=checkpoint,
        log=messages.append,
    )
    assert any("weights only" in m for m in messages)
    assert result[DETECTOR].history[0]["epoch"] == 1
    fine_tuned = read_metadata(result[DETECTOR].checkpoint)  # the old weights' figures are gone
    assert "robustness" not in fine_tuned and "model_card" not in fine_tuned
    with pytest.raises(ValueError, match="holds 'mobilenetv2_100'; it cannot resume"):
        train(dataset, ["efficientnet_b0"], tmp_path / "x", tiny_config(), resume=checkpoint)


def test_offline_pretrained_falls_back_fast(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "hub_unreachable", lambda: "test says offline")
    messages = []
    start = time.perf_counter()
    train(
        dataset,
        [DETECTOR],
        tmp_path,
        tiny_config(pretrained=True, max_train_batches=1, precise_bn_images=0),
        log=messages.append,
    )
    assert time.perf_counter() - start < 60
    assert any(
        m.startswith(f"no pretrained weights for {DETECTOR} (")
        and "timm's download: test says offline" in m
        and m.endswith("training from scratch")
        for m in messages
    )
    detector = Detector.load(tmp_path / DETECTOR / "best.safetensors", device="cpu")
    meta = detector.metadata
    assert meta["training"]["pretrained_init"] is False and meta["training"]["lr"] == 1e-3
    norms = [m for m in detector.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {int(m.num_batches_tracked) for m in norms} == {1}  # precise BN off: 1 train step


def test_hub_probe_respects_offline_flag(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    assert weights.hub_unreachable() == "HF_HUB_OFFLINE is set"
    assert time.perf_counter() - start < 1


def test_prepare_split_carves_test_from_train_and_is_reused(tmp_path):
    samples = [
        Sample(tmp_path / f"{label}{i}.png", label, "train")
        for label in ("real", "fake")
        for i in range(9)
    ]
    samples += [
        Sample(tmp_path / f"v{label}{i}.png", label, "val")
        for label in ("real", "fake")
        for i in range(2)
    ]
    messages = []
    split = prepare_split(samples, tmp_path / "out", tiny_config(), log=messages.append)
    assert split_counts(split) == {
        "test": {"fake": 1, "real": 1},
        "train": {"fake": 8, "real": 8},
        "val": {"fake": 2, "real": 2},
    }
    assert any("no test split in the data" in m for m in messages)
    again = prepare_split(samples, tmp_path / "out", tiny_config(seed=5), log=messages.append)
    assert again == sorted(split) and "reusing the split" in messages[-2]
    with pytest.raises(ValueError, match="split.csv was written for other data"):
        prepare_split(samples[:-1], tmp_path / "out", tiny_config())


def test_prepare_split_needs_both_classes(tmp_path):
    samples = [Sample(tmp_path / f"{i}.png", "real") for i in range(10)]
    with pytest.raises(ValueError, match="the train split needs real and fake images"):
        prepare_split(samples, tmp_path, tiny_config())


def test_bad_names_and_config_fail_early(dataset, tmp_path):
    with pytest.raises(RegistryError, match="unknown detector 'efficientnet_b9'"):
        train(dataset, ["efficientnet_b9"], tmp_path, tiny_config())
    assert not (tmp_path / "split.csv").exists()
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="image_size must be an int"):
        TrainConfig(image_size=4)
    with pytest.raises(ValueError, match="at least one detector"):
        train(dataset, [], tmp_path, tiny_config())


def test_limit_per_class_subsets(dataset, tmp_path):
    split = prepare_split(discover(dataset), tmp_path, tiny_config(limit_per_class=5))
    assert sum(1 for s in split if s.label == "fake") == 5


TAEF2 = Path(__file__).resolve().parents[2] / "shared" / "models" / "taef2"


def test_robust_recipe_frames_faces_adds_pseudo_fakes_and_fits_reliability(faces_sample, tmp_path):
    """Every lever of the robust recipe on a few real shared faces: faces found once (faces.csv),
    self-blended and reconstructed pseudo-fakes among the training fakes, degradations, and
    reliability statistics inside best.safetensors."""
    data = subsample(discover(faces_sample), 6, seed=0)
    levers = dict(faces=True, degrade=0.5, self_blend=0.5, balance=True, reliability_images=4)
    if TAEF2.is_dir():
        levers.update(autoencoder=0.5, autoencoder_weights=str(TAEF2))
    config = tiny_config(image_size=64, **levers)
    result = train(data, [DETECTOR], tmp_path, config, log=lambda _: None)[DETECTOR]
    with open(tmp_path / "faces.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == len(data)
    if TAEF2.is_dir():
        assert len(list((tmp_path / "autoencoder").glob("*.png"))) >= 1
    detector = Detector.load(result.checkpoint)
    assert detector.reliability is not None
    assert detector.reliability.min_face_side == 16  # a quarter of 64 px: the rescale range
    assert detector.reliability.min_jpeg_quality == 30
    training = detector.metadata["training"]
    assert (training["self_blend"], training["degrade"]) == (0.5, 0.5)


def test_self_blend_needs_faces_and_shares_are_checked():
    with pytest.raises(ValueError, match="faces"):
        TrainConfig(self_blend=0.3)
    with pytest.raises(ValueError, match="autoencoder"):
        TrainConfig(autoencoder=-1)
    with pytest.raises(ValueError, match="degrade"):
        TrainConfig(degrade=2)


def test_distillation_records_its_teacher_and_trains(run, dataset, tmp_path):
    teacher_checkpoint = run[1].checkpoint
    teacher = Detector.load(teacher_checkpoint, device="cpu")
    config = tiny_config(teacher=str(teacher_checkpoint), distill=0.7, distill_features=1.0)
    messages = []
    result = train(dataset, [DETECTOR], tmp_path, config, log=messages.append)[DETECTOR]
    meta = Detector.load(result.checkpoint, device="cpu").metadata
    assert meta["distillation"]["teacher_fingerprint"] == teacher.fingerprint
    assert meta["distillation"]["soft"] == 0.7 and meta["distillation"]["features"] == 1.0
    assert meta["training"]["teacher"] == str(teacher_checkpoint)
    assert any("distilling" in m and teacher.fingerprint in m for m in messages)
    assert math.isfinite(result.history[0]["train_loss"])


def test_distillation_pulls_the_student_to_the_teachers_answer(run):
    from models import QuadrantDetector

    from deepfake_xai.distillation import Distillation

    teacher = Detector.load(run[1].checkpoint, device="cpu")
    distillation = Distillation(teacher, soft=1.0, features=1.0)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    target_logit, target_embedding = distillation.targets(images)
    logit = target_logit.clone().requires_grad_(True)
    loss = distillation.loss(logit, target_embedding, torch.zeros(4), images)
    loss.backward()
    assert logit.grad.abs().max() < 1e-6  # soft targets only: the teacher's logit is the minimum
    far = distillation.loss(target_logit + 3, -target_embedding, torch.zeros(4), images)
    assert far > loss + 1.0
    with pytest.raises(ValueError, match="equal widths.*1280"):
        Distillation(QuadrantDetector(), features=1.0).check_student(teacher)
    with pytest.raises(ValueError, match="soft is a weight"):
        Distillation(teacher, soft=1.5)

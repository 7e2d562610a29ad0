"""The detector that ships inside the package: small, documented, and it detects on faces it
never saw (its own held-out test split of the shared sample)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open

import deepfake_xai as dx
from deepfake_xai.detectors.shipped import shipped_checkpoint
from deepfake_xai.reliability import TENSOR_PREFIX

CARD_FIELDS = (
    "training_data",
    "metrics_text",
    "reliability_text",
    "intended_use",
    "limits",
    "licence",
    "reproduce",
)
PER_CLASS = 10


@pytest.fixture(scope="module")
def default():
    return dx.load_detector("default", device="cpu")


def test_the_default_is_small_fp16_and_documented(default):
    path = shipped_checkpoint()
    assert path is not None and path.stat().st_size < 25 * 2**20  # the budget of all shipped
    with safe_open(str(path), framework="pt") as weights:
        dtypes = {
            (name.startswith(TENSOR_PREFIX), weights.get_tensor(name).dtype)
            for name in weights.keys()  # noqa: SIM118 (no __iter__)
        }
    # fp16 weights; the reliability statistics (inverse covariances) stay fp32
    weights, statistics = ({d for stats, d in dtypes if stats == side} for side in (False, True))
    assert torch.float16 in weights and weights <= {torch.float16, torch.int64}
    assert statistics == {torch.float32}
    assert default.name == "efficientnet_lite0"
    assert default.reliability is not None and default.reliability.threshold > 0
    card = default.metadata["model_card"]
    assert all(card.get(field) for field in CARD_FIELDS)
    assert "non-commercial" in card["licence"] and "StyleGAN" in card["limits"]
    assert default.metadata["evaluation"]["families"]["test"]["n"] == len(
        default.metadata["test_files"]
    )
    training = default.metadata["training"]
    assert len(training["fingerprint"]) == 64 and training["seed"] == 0
    assert training["split_file"] is None  # no path of the training machine ships
    assert default.metadata["test_metrics"]["accuracy"] >= 0.9
    assert len(default.metadata["test_files"]) == default.metadata["test_metrics"]["n"]


def test_the_default_separates_its_held_out_faces(default, faces_sample):
    held_out = default.metadata["test_files"]
    chosen = {label: [] for label in ("real", "fake")}
    for name in held_out:
        for label, paths in chosen.items():
            path = faces_sample / "train" / label / name
            if len(paths) < PER_CLASS and path.is_file():
                paths.append(path)
    if min(map(len, chosen.values())) < PER_CLASS:
        pytest.skip(f"the held-out faces are not in {faces_sample / 'train'}")
    images = [dx.load_image(p) for p in chosen["real"] + chosen["fake"]]
    p_fake = default.predict_proba(images)
    truth = np.repeat([0, 1], PER_CLASS)
    accuracy = float(((p_fake >= 0.5) == truth).mean())
    assert accuracy >= 0.85, (accuracy, p_fake.round(3))
    assert p_fake[truth == 1].mean() - p_fake[truth == 0].mean() > 0.6

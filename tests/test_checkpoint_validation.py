"""Crafted checkpoints fail on load with a CheckpointError naming the file and the problem, and a
detector never turns NaN into a verdict (issue 12, items 4, 6 and 11)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from models import QuadrantDetector, noise_batch
from safetensors import safe_open
from safetensors.torch import save_file

from deepfake_xai.detectors import CheckpointError, Detector, NonFiniteOutputError
from deepfake_xai.detectors.checkpoint import METADATA_KEY
from deepfake_xai.engine import Engine
from deepfake_xai.registry import DETECTORS


def quadrant_factory(pretrained: bool = False, device: str = "cpu", **_: object) -> Detector:
    return QuadrantDetector().to(device)


@pytest.fixture
def registered():
    DETECTORS.add("quadrant", quadrant_factory)
    yield
    DETECTORS.remove("quadrant")


@pytest.fixture
def saved(registered, tmp_path) -> Path:
    return QuadrantDetector().save(tmp_path / "good.safetensors")


def rewrite(path: Path, target: Path, edit=None, raw: str | None = None, state=None) -> Path:
    """A copy of checkpoint ``path`` with its metadata edited (or replaced by ``raw``)."""
    with safe_open(str(path), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
        config = json.loads(handle.metadata()[METADATA_KEY])
    if edit:
        edit(config)
    save_file(state or tensors, str(target), metadata={METADATA_KEY: raw or json.dumps(config)})
    return target


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


BAD_METADATA = {
    "std of zeros": (lambda c: c.update(std=[0, 0, 0]), "std must be positive"),
    "NaN std": (lambda c: c.update(std=[math.nan, 0.2, 0.2]), "std must be finite"),
    "mean of length 1": (lambda c: c.update(mean=[0.5]), "mean must be three numbers"),
    "string mean": (lambda c: c.update(mean="0.5"), "mean must be three numbers"),
    "image_size 100000": (
        lambda c: c["harmonization"].update(image_size=100000),
        "harmonization: image_size must be an int in [8, 4096], got 100000",
    ),
    "harmonization a list": (
        lambda c: c.update(harmonization=[224]),
        "harmonization must be a dict of settings",
    ),
    "unhashable resize": (lambda c: c["harmonization"].update(resize=[1]), "harmonization: "),
    "detector a number": (lambda c: c.update(detector=5), "detector must be a non-empty string"),
    "swapped labels": (lambda c: c.update(labels=["fake", "real"]), "labels must be"),
    "cam_layers a string": (lambda c: c.update(cam_layers="0"), "cam_layers must map names"),
    "missing cam layer": (lambda c: c.update(cam_layers={"final": "nope"}), "no layer 'nope'"),
    "metrics nested 40 deep": (
        lambda c: c.update(metrics=nested(40)),
        "nested more than 32 levels deep",
    ),
}


@pytest.mark.parametrize("case", BAD_METADATA)
def test_malformed_metadata_is_a_checkpoint_error_naming_the_file(saved, tmp_path, case):
    edit, words = BAD_METADATA[case]
    bad = rewrite(saved, tmp_path / "bad.safetensors", edit)
    with pytest.raises(CheckpointError) as info:
        Detector.load(bad)
    assert str(info.value).startswith(f"{bad}: ") and words in str(info.value)


def test_deeply_nested_json_is_not_a_recursion_error(saved, tmp_path):
    raw = json.dumps({"format": "deepfake-xai/1", "x": "["}).replace('"["', "[" * 100_000)
    bad = rewrite(saved, tmp_path / "deep.safetensors", raw=raw + "]" * 100_000)
    with pytest.raises(CheckpointError, match="deep.safetensors: the metadata block is nested"):
        Detector.load(bad)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_weights_are_refused(saved, tmp_path, value):
    state = {"0.weight": QuadrantDetector().model[0].weight.detach().clone()}
    state["0.weight"][0, 0, 0, 0] = value
    bad = rewrite(saved, tmp_path / "nan.safetensors", state=state)
    with pytest.raises(CheckpointError, match=r"nan.safetensors: the weights hold NaN or infinite"):
        Detector.load(bad)


def test_nan_outputs_never_become_probabilities():
    detector = QuadrantDetector()
    with torch.no_grad():
        detector.model[0].weight[0, 0, 0, 0] = math.nan
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with pytest.raises(NonFiniteOutputError, match="quadrant: produced NaN or infinite logits"):
        detector.predict_proba(x)
    with pytest.raises(NonFiniteOutputError, match="for 2 of 2 images"):
        Engine([detector], method="gradcam", device="cpu").run(x)


def test_constructor_refuses_a_zero_std():
    with pytest.raises(ValueError, match="std must be positive"):
        Detector(
            torch.nn.Conv2d(3, 1, 1),
            name="z",
            architecture="z",
            cam_layers={"final": ""},
            std=(0, 0, 0),
            device="cpu",
        )


def test_good_checkpoint_still_loads(saved):
    detector = Detector.load(saved, device="cpu")
    probs = detector.predict_proba(noise_batch(detector, 2).mul(0).add(128).byte())
    assert np.isfinite(probs).all()


class Payload:
    def __reduce__(self):
        return (print, ("the payload ran",))


def test_pickle_errors_carry_no_terminal_colour_codes(registered, tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"config": {}, "state_dict": {"x": Payload()}}, path)
    with pytest.raises(CheckpointError) as info:
        Detector.load(path, allow_pickle=True)
    message = str(info.value)
    assert "\x1b" not in message and "\n" not in message
    assert message.startswith(f"{path}: cannot be loaded with weights_only=True (")
    assert "print" in message


def test_plugin_checkpoint_names_the_plugin_it_needs(tmp_path):
    DETECTORS.add("quadrant_plugin", quadrant_factory, source="dfx-quadrant", version="1.2.3")
    try:
        detector = QuadrantDetector()
        detector.name = "quadrant_plugin"
        path = detector.save(tmp_path / "plugin.safetensors")
    finally:
        DETECTORS.remove("quadrant_plugin")
    with safe_open(str(path), framework="pt") as handle:
        config = json.loads(handle.metadata()[METADATA_KEY])
    assert config["provided_by"] == {"distribution": "dfx-quadrant", "version": "1.2.3"}
    with pytest.raises(CheckpointError) as info:
        Detector.load(path)
    assert str(info.value) == (
        f"{path}: detector 'quadrant_plugin' comes from the plugin dfx-quadrant (version 1.2.3 "
        "saved this checkpoint), which is not installed; install it (pip install dfx-quadrant) "
        "to load this checkpoint"
    )


def test_built_in_checkpoints_name_no_plugin(saved):
    with safe_open(str(saved), framework="pt") as handle:
        assert "provided_by" not in json.loads(handle.metadata()[METADATA_KEY])


def test_untrained_detectors_warn_the_same_way_everywhere(tmp_path):
    import deepfake_xai as dx
    from deepfake_xai.detectors import UntrainedDetectorWarning

    words = (
        "mobilenetv2_100: built from the registry with random weights, not trained to tell real "
        "from fake faces"
    )
    with pytest.warns(UntrainedDetectorWarning, match=words):
        detector = dx.load_detector("mobilenetv2_100", image_size=32, device="cpu")
    with pytest.warns(UntrainedDetectorWarning, match=words):
        Engine(["mobilenetv2_100"], device="cpu")  # the path analyze, evaluate and the app take
    path = detector.save(tmp_path / "trained.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedDetectorWarning)
        loaded = dx.load_detector(path, device="cpu")
        Engine([loaded], device="cpu")
    assert loaded.checkpoint == str(path)

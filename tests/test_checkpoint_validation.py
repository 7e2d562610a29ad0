"""Crafted checkpoints fail on load with a CheckpointError naming the file and the problem, and a
detector never turns NaN into a verdict (issue 12, items 4, 6 and 11; issue 24, items 2 and 7)."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
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
        "harmonization: image_size must be an int in [8, 1024], got 100000",
    ),
    "input_size 4096": (
        lambda c: (c["harmonization"].update(image_size=4096), c.update(input_size=4096)),
        "image_size must be an int in [8, 1024], got 4096",
    ),
    "image_size true": (
        lambda c: c["harmonization"].update(image_size=True),
        "image_size must be an int in [8, 1024], got True",
    ),
    "face_margin NaN": (
        lambda c: c["harmonization"].update(face_margin=math.nan),
        "face_margin must be a number in [0, 2.0], got nan",
    ),
    "face_margin inf": (
        lambda c: c["harmonization"].update(face_margin=math.inf),
        "face_margin must be a number in [0, 2.0], got inf",
    ),
    "face_margin 1e9": (
        lambda c: c["harmonization"].update(face_margin=1e9),
        "face_margin must be a number in [0, 2.0], got 1000000000.0",
    ),
    "face_margin a string": (
        lambda c: c["harmonization"].update(face_margin="0.4"),
        "face_margin must be a number",
    ),
    "face_crop a string": (
        lambda c: c["harmonization"].update(face_crop="no"),
        "face_crop must be true or false, got 'no'",
    ),
    "jpeg_quality 50.5": (
        lambda c: c["harmonization"].update(jpeg_quality=50.5),
        "jpeg_quality must be an int in [1, 100] or None, got 50.5",
    ),
    "std 1e-38": (lambda c: c.update(std=[1e-38] * 3), "std must be in [0.001, 10]"),
    "mean 1e30": (lambda c: c.update(mean=[1e30] * 3), "mean must be in [-1, 2]"),
    "detector name of 10,000 characters": (
        lambda c: c.update(detector="q" * 10_000),
        "detector must be a non-empty string of at most 200 characters",
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


UNUSABLE_DTYPES = {
    "bool": (torch.bool, "0.weight is bool (needs a float dtype)"),
    "int64": (torch.int64, "0.weight is int64 (needs a float dtype)"),
    "fp8": (torch.float8_e4m3fn, "0.weight is float8_e4m3fn (needs a float dtype)"),
}


@pytest.mark.parametrize("case", UNUSABLE_DTYPES)
def test_weights_of_an_unusable_dtype_are_a_checkpoint_error(saved, tmp_path, case):
    dtype, words = UNUSABLE_DTYPES[case]
    state = {"0.weight": QuadrantDetector().model[0].weight.detach().clone().to(dtype)}
    bad = rewrite(saved, tmp_path / f"{case}.safetensors", state=state)
    with pytest.raises(CheckpointError) as info:
        Detector.load(bad, device="cpu")
    assert str(info.value).startswith(f"{bad}: unusable tensor dtypes") and words in str(info.value)


def test_fp16_and_bf16_weights_still_load(saved, tmp_path):
    for dtype in (torch.float16, torch.bfloat16):
        state = {"0.weight": QuadrantDetector().model[0].weight.detach().clone().to(dtype)}
        loaded = Detector.load(rewrite(saved, tmp_path / "half.safetensors", state=state))
        assert loaded.model[0].weight.dtype == torch.float32


def test_a_header_listing_too_many_tensors_is_refused_before_reading_them(saved, tmp_path):
    state = {"0.weight": QuadrantDetector().model[0].weight.detach().clone()}
    state.update({f"extra.{i}": torch.zeros(0) for i in range(10_001)})
    bad = rewrite(saved, tmp_path / "many.safetensors", state=state)
    with pytest.raises(CheckpointError, match=r"many.safetensors: its header lists 10002 tensors"):
        Detector.load(bad, device="cpu")


def test_a_header_larger_than_the_bound_is_refused_unread(registered, tmp_path):
    bad = tmp_path / "huge-header.safetensors"
    bad.write_bytes(struct.pack("<Q", 100 << 20) + b"{" + b" " * 1000)
    with pytest.raises(CheckpointError, match=r"huge-header.safetensors: .*a header of 104857600"):
        Detector.load(bad, device="cpu")


def test_a_directory_named_model_safetensors_is_a_checkpoint_error(tmp_path):
    (tmp_path / "repo" / "model.safetensors").mkdir(parents=True)
    with pytest.raises(CheckpointError, match=r"model.safetensors: a directory, not a checkpoint"):
        Detector.load(tmp_path / "repo", device="cpu")


def test_a_fifo_as_a_checkpoint_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    code = (
        "import sys; from deepfake_xai.detectors import Detector, CheckpointError\n"
        "try:\n    Detector.load(sys.argv[1], device='cpu')\n"
        "except CheckpointError as exc:\n    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == f"{fifo}: a FIFO (named pipe), not a checkpoint file"


def test_a_bad_face_margin_fails_analyze_on_load_in_one_line(saved, tmp_path, capsys):
    from PIL import Image

    from deepfake_xai.cli import main

    bad = rewrite(
        saved, tmp_path / "margin.safetensors", lambda c: c["harmonization"].update(face_margin=1e9)
    )
    (tmp_path / "images").mkdir()
    Image.new("RGB", (64, 64), (90, 120, 150)).save(tmp_path / "images" / "a.png")
    options = ["--no-face-check", "--projection", "none", "--explainer", "none", "--no-report"]
    args = ["analyze", str(tmp_path / "images"), "--detector", str(bad), "--out"]
    assert main([*args, str(tmp_path / "out"), *options, "--no-progress", "--workers", "0"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "face_margin must be a number" in lines[0]


def _overflowing(saved: Path, target: Path, dtype: torch.dtype = torch.float32) -> Path:
    """A copy of ``saved`` whose weights are all 3.4e38: finite as stored in fp32, but the
    features (squared) and so the logits overflow to +inf."""
    weight = torch.full_like(QuadrantDetector().model[0].weight, 3.4e38)
    return rewrite(saved, target, state={"0.weight": weight.to(dtype)})


def test_fp16_weights_at_3_4e38_are_infinite_and_refused(saved, tmp_path):
    bad = _overflowing(saved, tmp_path / "fp16.safetensors", torch.float16)
    with pytest.raises(CheckpointError, match="fp16.safetensors: the weights hold NaN or infinite"):
        Detector.load(bad, device="cpu")


def test_infinite_logits_never_become_a_probability_or_a_verdict(saved, tmp_path, capsys):
    from PIL import Image

    from deepfake_xai.analysis import AnalysisResult
    from deepfake_xai.cli import main
    from deepfake_xai.engine import explain

    detector = Detector.load(_overflowing(saved, tmp_path / "fp32.safetensors"), device="cpu")
    x = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    output = Engine([detector], method="gradcam", device="cpu").run(x, check_finite=False)
    assert np.isposinf(output["quadrant"].logits).all() and np.isnan(output["quadrant"].probs).all()
    with pytest.raises(NonFiniteOutputError, match="for 3 of 3 images"):
        Engine([detector], method=None, device="cpu").run(x)
    with pytest.raises(NonFiniteOutputError):
        explain(detector, x, method=None)
    with pytest.raises(NonFiniteOutputError):
        detector.predict_proba(x)
    (tmp_path / "images").mkdir()
    for i in range(2):
        Image.new("RGB", (64, 64), (40 * i, 90, 150)).save(tmp_path / "images" / f"{i}.png")
    options = ["--no-face-check", "--projection", "none", "--explainer", "none", "--no-report"]
    args = ["analyze", str(tmp_path / "images"), "--detector", str(detector.checkpoint), "--out"]
    assert main([*args, str(tmp_path / "out"), *options, "--no-progress", "--workers", "0"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "no usable score" in lines[0]
    rows = AnalysisResult(tmp_path / "out").predictions
    assert (rows["status"] == "invalid_score").all() and rows["p_fake"].isna().all()
    assert (rows["verdict"] == "").all()


def _reliable(saved: Path, target: Path, edit=None, means=(2, 4), precision=(4, 4)) -> Path:
    """A copy of ``saved`` with Mahalanobis statistics of the quadrant's 4-wide embedding."""
    block = {
        "layers": [{"name": "embedding", "method": "mahalanobis", "scale": 1.0, "k": 10}],
        "threshold": 1.0,
        "flag_rate": 0.05,
        "min_face_side": 24,
        "min_jpeg_quality": 50,
        "fitted_on": {},
    }
    if edit:
        edit(block)
    state = {
        "0.weight": QuadrantDetector().model[0].weight.detach().clone(),
        "__reliability__.0.means": torch.zeros(means),
        "__reliability__.0.precision": torch.eye(*precision[:1]).expand(precision).clone(),
    }
    return rewrite(saved, target, lambda c: c.update(reliability=block), state=state)


BAD_RELIABILITY = {
    "min_face_side a string": (
        lambda b: b.update(min_face_side="24"),
        "reliability statistics: min_face_side must be a number in [1, 4096], got '24'",
    ),
    "min_jpeg_quality 1e9": (
        lambda b: b.update(min_jpeg_quality=10**9),
        "min_jpeg_quality must be a number in [1, 100]",
    ),
    "flag_rate NaN": (lambda b: b.update(flag_rate=math.nan), "flag_rate must be a number"),
    "threshold negative": (lambda b: b.update(threshold=-1), "threshold must be a number > 0"),
    "k of a billion": (lambda b: b["layers"][0].update(k=10**9), "k must be an int in [1, 10000]"),
    "no layers": (lambda b: b.update(layers=[]), "layers must list 1 to 16 layers"),
    "unknown method": (lambda b: b["layers"][0].update(method="x"), "method must be one of"),
}


@pytest.mark.parametrize("case", BAD_RELIABILITY)
def test_reliability_settings_are_bounded_at_load(saved, tmp_path, case):
    edit, words = BAD_RELIABILITY[case]
    bad = _reliable(saved, tmp_path / "bad.safetensors", edit)
    with pytest.raises(CheckpointError) as info:
        Detector.load(bad, device="cpu")
    assert str(info.value).startswith(f"{bad}: invalid metadata: ") and words in str(info.value)


def test_reliability_statistics_whose_shapes_do_not_fit_are_refused(saved, tmp_path):
    good = Detector.load(_reliable(saved, tmp_path / "good.safetensors"), device="cpu")
    assert good.reliability is not None
    bad = _reliable(saved, tmp_path / "bad.safetensors", precision=(3, 3))
    with pytest.raises(CheckpointError, match=r"layer 'embedding': shapes do not fit"):
        Detector.load(bad, device="cpu")

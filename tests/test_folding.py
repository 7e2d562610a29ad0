"""The engine's eager pass runs a copy of the network with BatchNorm folded into the
convolutions: the same outputs, the detector's own network untouched, a fresh copy after the
weights change, and the unfolded network wherever folding would change what is read."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.layers import BatchNormAct2d
from torch import nn

from deepfake_xai import folding
from deepfake_xai.detectors import Detector
from deepfake_xai.engine import Engine
from deepfake_xai.explainers.attribution import IntegratedGradientsExplainer
from deepfake_xai.preprocessing import Harmonization

SIZE = 32


@pytest.fixture(autouse=True)
def _folding_on_by_default(monkeypatch):
    monkeypatch.delenv(folding.FOLD_ENV, raising=False)


def _norm_with_statistics(norm: nn.BatchNorm2d, seed: int) -> nn.BatchNorm2d:
    """``norm`` with running statistics and affine values far from the identity."""
    generator = torch.Generator().manual_seed(seed)
    channels = norm.num_features
    with torch.no_grad():
        norm.running_mean.copy_(torch.randn(channels, generator=generator))
        norm.running_var.copy_(torch.rand(channels, generator=generator) * 3 + 0.2)
        norm.weight.copy_(torch.randn(channels, generator=generator))
        norm.bias.copy_(torch.randn(channels, generator=generator))
    return norm


class Body(nn.Module):
    """Two conv + norm stages as timm builds them: a norm with its activation, a plain norm."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = _norm_with_statistics(BatchNormAct2d(8, act_layer=nn.ReLU6), 1)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1, stride=2)
        self.bn2 = _norm_with_statistics(nn.BatchNorm2d(6), 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.bn1(self.conv1(x))))


class NormFirst(nn.Module):
    """A norm registered after a convolution but run before it: folding would be wrong."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = _norm_with_statistics(nn.BatchNorm2d(3), 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(x))


class TinyDetector(Detector):
    def __init__(self, body: nn.Module, **layers: str):
        torch.manual_seed(0)
        model = nn.ModuleDict({"body": body, "fc": nn.Linear(_channels(body), 1)})
        super().__init__(
            model,
            name="tiny-bn",
            architecture="test",
            cam_layers=layers or {"final": "body.bn2", "mid": "body.bn1"},
            harmonization=Harmonization(image_size=SIZE),
            device="cpu",
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model["body"](x)

    def head(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = fmap.mean(dim=(2, 3))
        return self.model["fc"](embedding).reshape(-1), embedding


def _channels(body: nn.Module) -> int:
    return [m for m in body.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


def images(n: int = 4) -> torch.Tensor:
    generator = torch.Generator().manual_seed(5)
    return torch.randint(0, 256, (n, 3, SIZE, SIZE), dtype=torch.uint8, generator=generator)


def run(detector: Detector, monkeypatch, fold: bool, **options):
    monkeypatch.setenv(folding.FOLD_ENV, "1" if fold else "0")
    engine = Engine([detector], device="cpu", onnx=False, compiled=False, **options)
    return engine.run(images())[detector.name]


def test_fold_batchnorm_keeps_the_function_and_the_activation():
    body = Body().eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = body(x)
        changed = folding.fold_batchnorm(body)
        got = body(x)
    assert changed == {"conv1", "conv2"}
    assert isinstance(body.bn1, folding.FoldedNormAct) and isinstance(body.bn1.act, nn.ReLU6)
    assert isinstance(body.bn2, nn.Identity) and body.conv1.bias is not None
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_norms_in_training_mode_are_not_folded():
    assert folding.fold_batchnorm(Body().train()) == set()


@pytest.mark.parametrize("layers", [("final",), ("mid",)])
def test_the_folded_eager_pass_gives_the_unfolded_outputs(monkeypatch, layers):
    detector = TinyDetector(Body())
    kinds = {type(m) for m in detector.model.modules()}
    plain = run(detector, monkeypatch, fold=False, layers=layers, saliency=True)
    monkeypatch.setenv(folding.FOLD_ENV, "1")
    calls = []
    folding.folded(detector).detector.model["body"].register_forward_hook(
        lambda *_: calls.append(1)
    )
    fast = run(detector, monkeypatch, fold=True, layers=layers, saliency=True)
    assert calls, "the engine did not run the folded copy"
    np.testing.assert_allclose(fast.probs, plain.probs, atol=1e-5)
    np.testing.assert_allclose(fast.embeddings, plain.embeddings, atol=1e-4, rtol=1e-4)
    for layer in (*layers, "input"):
        np.testing.assert_allclose(fast.heatmaps[layer], plain.heatmaps[layer], atol=2e-3)
    assert {type(m) for m in detector.model.modules()} == kinds  # its own network untouched


def test_changed_weights_are_folded_again(monkeypatch):
    detector = TinyDetector(Body())
    first = folding.folded(detector)
    with torch.no_grad():
        detector.model["body"].bn1.weight.mul_(-2)  # as an optimiser step would, in place
    second = folding.folded(detector)
    assert second is not first and folding.folded(detector) is second
    plain = run(detector, monkeypatch, fold=False, layers=("mid",))
    fast = run(detector, monkeypatch, fold=True, layers=("mid",))
    np.testing.assert_allclose(fast.probs, plain.probs, atol=1e-5)


def test_a_folded_convolution_that_is_read_runs_unfolded(monkeypatch):
    detector = TinyDetector(Body())
    plain = run(detector, monkeypatch, fold=False, layers=("body.conv1",))
    read = run(detector, monkeypatch, fold=True, layers=("body.conv1",))
    np.testing.assert_array_equal(read.heatmaps["body.conv1"], plain.heatmaps["body.conv1"])
    np.testing.assert_array_equal(read.probs, plain.probs)


def test_a_fold_that_changes_the_outputs_is_not_used(caplog):
    detector = TinyDetector(NormFirst(), final="body.conv")
    with caplog.at_level("WARNING", logger="deepfake_xai.folding"):
        assert folding.folded(detector) is None
    assert "changed its outputs" in caplog.text


def test_folding_can_be_turned_off(monkeypatch):
    monkeypatch.setenv(folding.FOLD_ENV, "0")
    assert folding.folded(TinyDetector(Body())) is None


def test_captum_attributions_run_the_folded_copy(monkeypatch):
    detector = TinyDetector(Body())
    x = detector.normalize(images(2))
    monkeypatch.setenv(folding.FOLD_ENV, "0")
    plain = IntegratedGradientsExplainer(detector, n_steps=8).attribute(x)["input"].maps
    monkeypatch.setenv(folding.FOLD_ENV, "1")
    calls = []
    folding.folded(detector).detector.model["body"].register_forward_hook(
        lambda *_: calls.append(1)
    )
    fast = IntegratedGradientsExplainer(detector, n_steps=8).attribute(x)["input"].maps
    assert calls, "the explainer did not run the folded copy"
    torch.testing.assert_close(fast, plain, atol=2e-3, rtol=0)

"""The conformance kit: built-ins pass it, and each check catches the mistake it is for."""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import deepfake_xai as dx
from deepfake_xai.detectors import Detector
from deepfake_xai.explainers import (
    AttributionExplainer,
    Heatmaps,
    Projection,
    ProjectionExplainer,
    normalize_maps,
    resolve_targets,
)
from deepfake_xai.registry import Registry
from deepfake_xai.testing import (
    CheckReport,
    CheckResult,
    ConformanceError,
    check_detector,
    check_explainer,
)
from deepfake_xai.testing import detector as detector_checks

SIZE = 48
FAST_OPTIONS = {
    "integrated_gradients": {"n_steps": 4},
    "occlusion": {"window": 24, "stride": 24},
    "saliency": {},
}
SLOW_PROJECTIONS = {"tsne", "umap"}  # numba compiles their kernels on first use


# -- the built-ins pass ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenetv2_100"])
def test_builtin_detectors_conform(name):
    report = check_detector(name, image_size=SIZE)
    report.raise_if_failed()
    assert report["save/load"].passed and report["grad-cam"].passed
    assert report.subject == f"detector {name!r} from deepfake-xai"


EXPLAINER_PARAMS = [
    pytest.param(name, marks=pytest.mark.slow if name in SLOW_PROJECTIONS else (), id=name)
    for name in dx.list_explainers()
]


@pytest.mark.parametrize("name", EXPLAINER_PARAMS)
def test_builtin_explainers_conform(name):
    report = check_explainer(name, **FAST_OPTIONS.get(name, {}))
    report.raise_if_failed()
    assert all(r.passed for r in report.results), report.format()


# -- a tiny detector, and deliberately broken variants ---------------------------------------
class Tiny(Detector):
    """A two-conv detector at 16 px: valid, and fast enough to break in many ways."""

    def __init__(self, *, pretrained: bool = False, device: str = "cpu"):
        model = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(3, 4, 3, padding=1),
                conv2=nn.Conv2d(4, 8, 3, stride=2, padding=1),
                classifier=nn.Linear(8, 1),
            )
        )
        super().__init__(
            model,
            name="tiny",
            architecture="tiny",
            cam_layers={"final": "conv2", "mid": "conv1"},
            harmonization=dx.Harmonization(image_size=16),
            device=device,
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.conv2(torch.relu(self.model.conv1(x)))

    def head(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = fmap.mean(dim=(2, 3))
        return self.model.classifier(embedding).reshape(-1), embedding


@pytest.fixture
def tiny_registry(monkeypatch) -> Registry:
    """A detector registry holding only ``tiny``, in place of the global one."""
    registry = Registry("detector")
    registry.add("tiny", Tiny)
    monkeypatch.setattr("deepfake_xai.registry.DETECTORS", registry)
    monkeypatch.setattr(detector_checks, "DETECTORS", registry)
    return registry


def test_a_valid_plugin_passes_every_check(tiny_registry):
    report = check_detector("tiny")
    assert report.passed, report.format()
    assert [r.status for r in report.results] == ["passed"] * len(report.results)
    assert report["cpu"].message == "every check ran on the CPU"


def test_unregistered_factory_skips_save_load_and_name():
    report = check_detector(Tiny)
    assert report.passed, report.format()
    assert report["name"].status == "skipped"
    assert report["save/load"].status == "skipped"
    assert "'tiny' is not registered" in report["save/load"].message


def test_factory_without_device_keyword():
    def make(pretrained: bool = False) -> Detector:
        return Tiny()

    report = check_detector(make)
    assert report["factory"].failed
    assert "pretrained=False, device='cpu'" in report["factory"].message
    assert all(r.status == "skipped" for r in report.results[1:])


def test_factory_returning_the_wrong_type():
    report = check_detector(lambda **kwargs: nn.Linear(2, 2))
    assert report["factory"].passed
    assert (
        "returned a Linear, expected a deepfake_xai Detector"
        in report["returns a Detector"].message
    )
    assert report["labels"].message == "needs 'returns a Detector' to pass first"


def test_two_logits_instead_of_one():
    class TwoLogits(Tiny):
        def head(self, fmap):
            embedding = fmap.mean(dim=(2, 3))
            return torch.stack([-embedding[:, 0], embedding[:, 0]], dim=1), embedding

    report = check_detector(TwoLogits)
    message = report["features and head"].message
    assert "expected shape (3,)" in message and "shape (3, 2)" in message
    assert report["probabilities"].status == "skipped"
    with pytest.raises(ConformanceError, match="features and head: head\\(\\) returned logits"):
        report.raise_if_failed()


def test_features_must_be_a_feature_map():
    class Flat(Tiny):
        def features(self, x):
            return super().features(x).flatten(1)

    assert "expected the final feature map" in check_detector(Flat)["features and head"].message


def test_final_layer_must_be_what_features_returns():
    class WrongFinal(Tiny):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.cam_layers = {"final": "conv1", "mid": "conv1"}

    report = check_detector(WrongFinal)
    assert report["final layer"].failed
    assert "cam_layers['final'] must be the module" in report["final layer"].message


def test_unresolvable_cam_layer():
    class Missing(Tiny):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.cam_layers = {"final": "conv2", "mid": "blocks.9"}

    assert "mid='blocks.9'" in check_detector(Missing)["cam layers"].message


def test_wrong_labels_and_0_255_mean():
    class Swapped(Tiny):
        labels = ("fake", "real")

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.mean = (123.7, 116.3, 103.5)

    report = check_detector(Swapped)
    assert "expected ('real', 'fake')" in report["labels"].message
    assert "look like 0-255 values" in report["preprocessing"].message


def test_nan_probabilities():
    class NaNs(Tiny):
        def head(self, fmap):
            logit, embedding = super().head(fmap)
            return logit * float("nan"), embedding

    assert "must be finite and in [0, 1]" in check_detector(NaNs)["probabilities"].message


def test_training_mode_breaks_batches_and_determinism():
    class Trains(Tiny):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.model.conv1 = nn.Sequential(self.model.conv1, nn.BatchNorm2d(4), nn.Dropout(0.5))
            self.model.train()

    report = check_detector(Trains)
    assert "depends on the rest of its batch" in report["batch consistency"].message
    assert "in training mode" in report["eval determinism"].message


def test_unfrozen_parameters():
    def make(pretrained: bool = False, device: str = "cpu") -> Detector:
        detector = Tiny(device=device)
        detector.model.requires_grad_(True)
        return detector

    assert "require grad after construction" in check_detector(make)["frozen parameters"].message


def test_weights_outside_the_state_dict(tiny_registry):
    class Unsaved(Tiny):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.bias = torch.randn(1)  # a plain attribute: not saved, different after load

        def head(self, fmap):
            logit, embedding = super().head(fmap)
            return logit + self.bias, embedding

    tiny_registry.add("tiny", Unsaved, override=True)
    report = check_detector("tiny")
    assert "keep every weight in model.state_dict()" in report["save/load"].message


def test_leaked_hooks_are_found():
    class Leaky(Tiny):
        def features(self, x):
            self.model.conv1.register_forward_hook(lambda *args: None)
            return super().features(x)

    report = check_detector(Leaky)
    assert report["grad-cam"].passed
    assert "conv1._forward_hooks" in report["hooks removed"].message


def test_unknown_name_says_how_to_register():
    report = check_detector("no_such_detector")
    assert not report.passed and [r.name for r in report.results] == ["registered"]
    assert "deepfake_xai.detectors" in report["registered"].message


def test_report_format_and_error():
    report = CheckReport(
        "detector 'x'",
        [
            CheckResult("a", "passed"),
            CheckResult("b", "failed", "fix b"),
            CheckResult("c", "skipped", "needs 'b'"),
        ],
    )
    lines = report.format().splitlines()
    assert lines[0] == "detector 'x'" and lines[-1] == "1 passed, 1 failed, 1 skipped"
    assert lines[2].split() == ["FAIL", "b", "fix", "b"]
    with pytest.raises(ConformanceError) as error:
        report.raise_if_failed()
    assert str(error.value) == "detector 'x': 1 conformance check(s) failed\n  b: fix b"
    with pytest.raises(KeyError, match="no check 'z'"):
        report["z"]


# -- explainers that break the contract ------------------------------------------------------
@pytest.fixture(scope="module")
def tiny() -> Tiny:
    torch.manual_seed(0)
    return Tiny()


class RawGradients(AttributionExplainer):
    """Input gradients, not normalised: values outside [0, 1]."""

    def attribute(self, inputs, target="fake", layers=("final",)):
        x = inputs.detach().requires_grad_()
        with torch.enable_grad():
            logits = self.detector(x)
        targets = resolve_targets(target, logits)
        (grad,) = torch.autograd.grad(logits.sum(), x)
        return {"input": Heatmaps(grad.sum(1) * 1e3, "raw", "input", targets)}


class AlwaysFake(AttributionExplainer):
    """Normalised maps, but the targets ignore what was asked."""

    def attribute(self, inputs, target="fake", layers=("final",)):
        maps = normalize_maps(inputs.abs().sum(1))
        return {"input": Heatmaps(maps, "fake", "input", torch.ones(len(inputs)))}


def test_attribution_maps_outside_0_1(tiny):
    report = check_explainer(RawGradients, detector=tiny)
    assert report["kind"].passed and report["builds"].passed
    assert "expected [0, 1]" in report["heatmaps (fake)"].message


def test_attribution_targets_must_follow_the_request(tiny):
    report = check_explainer(AlwaysFake, detector=tiny)
    assert report["heatmaps (fake)"].passed
    assert "targets is [1, 1, 1]; expected [0, 0, 0]" in report["heatmaps (real)"].message


def test_builtin_attribution_runs_on_a_plugin_detector(tiny):
    report = check_explainer("gradcam", detector=tiny)
    assert report.passed, report.format()


class Unseeded(ProjectionExplainer):
    def __init__(self, random_state: int = 0):
        self.random_state = random_state

    def fit_transform(self, embeddings):
        coords = np.random.default_rng().standard_normal((len(embeddings), 2))
        return Projection(coords, "unseeded")


class ThreeD(Unseeded):
    def fit_transform(self, embeddings):
        return Projection(np.zeros((len(embeddings), 3)), "3d")


def test_projection_must_be_reproducible_with_a_seed():
    report = check_explainer(Unseeded)
    assert report["projection"].passed
    assert "two runs with random_state=0 differ" in report["deterministic with a seed"].message


def test_projection_must_be_2d():
    assert "expected (60, 2)" in check_explainer(ThreeD)["projection"].message


def test_projection_needs_random_state():
    class NoSeed(ProjectionExplainer):
        def fit_transform(self, embeddings):
            return Projection(np.zeros((len(embeddings), 2)), "none")

    assert "random_state=0" in check_explainer(NoSeed)["builds"].message


def test_explainer_without_kind():
    report = check_explainer(lambda **kwargs: None)
    assert "expected one of ('attribution', 'projection')" in report["kind"].message
    assert [r.name for r in report.results] == ["kind"]


# -- the examples in docs/plugins.md ---------------------------------------------------------
DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


@pytest.mark.parametrize("name", ["InputTimesGradient", "RandomProjection"])
def test_explainer_examples_in_the_docs_conform(name, tiny):
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    namespace: dict = {}
    exec(next(b for b in blocks if f"class {name}(" in b), namespace)
    report = check_explainer(namespace[name], detector=tiny)
    assert report.passed and len(report.results) >= 5, report.format()

"""Captum attribution explainers: a known-answer detector, the built-ins, batching and targets."""

from __future__ import annotations

import pytest
import torch
from models import SIZE, QuadrantDetector, noise_batch, quadrant_share

import deepfake_xai as dx
from deepfake_xai.detectors import Detector
from deepfake_xai.explainers.attribution import (
    IntegratedGradientsExplainer,
    LogitModel,
    OcclusionExplainer,
    SaliencyExplainer,
    make_baseline,
)
from deepfake_xai.folding import eager_network
from deepfake_xai.registry import EXPLAINERS

BUILTIN_SIZE = 48


def builtin_batch(detector: Detector) -> torch.Tensor:
    """Two noise images at the built-in detectors' test size."""
    return noise_batch(detector, 2, size=BUILTIN_SIZE)


@pytest.fixture(scope="module", params=["efficientnet_b0", "mobilenetv2_100"])
def builtin(request: pytest.FixtureRequest) -> Detector:
    torch.manual_seed(0)
    return dx.load_detector(request.param, image_size=BUILTIN_SIZE, device="cpu")


FAST = {
    "integrated_gradients": {"n_steps": 8},
    "saliency": {},
    "smoothgrad": {"smoothgrad": True, "nt_samples": 4},
    "occlusion": {"window": 16, "stride": 16},
}


def build(name: str, detector: Detector, **kwargs) -> object:
    method = "saliency" if name == "smoothgrad" else name
    return EXPLAINERS.create(method, detector=detector, **{**FAST[name], **kwargs})


@pytest.mark.parametrize("name", list(FAST))
def test_known_answer_energy_in_top_left_quadrant(quadrant: QuadrantDetector, name: str) -> None:
    explainer = build(name, quadrant, **({"window": 8, "stride": 4} if name == "occlusion" else {}))
    heatmaps = explainer.attribute(noise_batch(quadrant, 4), "fake")["input"]
    share = quadrant_share(heatmaps.maps)
    assert (share > 0.6).all(), f"{name}: quadrant shares {share.tolist()}"
    assert heatmaps.maps.sum(dim=(1, 2)).gt(0).all()


@pytest.mark.parametrize("name", list(FAST))
def test_builtin_maps_are_finite_unit_range_and_target_specific(
    builtin: Detector, name: str
) -> None:
    explainer = build(name, builtin)
    x = builtin_batch(builtin)
    result = explainer.attribute(x, "fake", layers=("final", "mid"))
    assert list(result) == ["input"]
    fake = result["input"]
    assert fake.maps.shape == (2, BUILTIN_SIZE, BUILTIN_SIZE)
    assert torch.isfinite(fake.maps).all()
    assert fake.maps.min() >= 0 and fake.maps.max() <= 1
    assert fake.maps.amax(dim=(1, 2)).eq(1).all(), "each map is scaled to reach 1"
    assert fake.layer == "input" and fake.detector == builtin.name
    assert fake.targets.tolist() == [1, 1]

    real = explainer.attribute(x, "real")["input"].maps
    if name in ("saliency", "smoothgrad"):  # |d(-logit)/dx| == |d(logit)/dx|: by design
        torch.testing.assert_close(fake.maps, real)
    else:
        assert (fake.maps - real).abs().mean() > 0.05


def test_mixed_targets_in_one_batch_match_separate_calls(quadrant: QuadrantDetector) -> None:
    explainer = build("integrated_gradients", quadrant)
    x = noise_batch(quadrant, 2)
    mixed = explainer.attribute(x, torch.tensor([1, 0]))["input"]
    fake = explainer.attribute(x[:1], "fake")["input"].maps
    real = explainer.attribute(x[1:], "real")["input"].maps
    torch.testing.assert_close(mixed.maps, torch.cat([fake, real]))
    assert mixed.targets.tolist() == [1, 0]


def test_logit_model_scores_real_as_minus_logit(quadrant: QuadrantDetector) -> None:
    x = noise_batch(quadrant, 3)
    scores = LogitModel(quadrant)(x)
    logits = quadrant(x)
    assert scores.shape == (3, 2)
    torch.testing.assert_close(scores, torch.stack([-logits, logits], dim=1))


def test_ig_internal_batch_size_is_honoured_and_does_not_change_results(builtin: Detector) -> None:
    x = builtin_batch(builtin)
    sizes: list[int] = []
    network = eager_network(builtin)  # what the attributions run: the folded copy where made
    hook = network.module("final").register_forward_pre_hook(
        lambda _m, args: sizes.append(len(args[0]))
    )
    try:
        small, _ = build("integrated_gradients", builtin, internal_batch_size=4).raw_attributions(x)
    finally:
        hook.remove()
    large, _ = build("integrated_gradients", builtin, internal_batch_size=32).raw_attributions(x)
    assert max(sizes) <= 4
    # Equal up to float32 rounding, which the ReLU6 kinks of a random-init MobileNetV2 can
    # amplify at a few pixels; the smooth quadrant model below checks exactness. At 1 thread
    # the mean difference is 0.3 % unfolded and 1.1 % with BatchNorm folded (whose
    # convolutions, now with a bias, round differently per batch size); correlation 0.9999.
    correlation = torch.corrcoef(torch.stack([small.flatten(), large.flatten()]))[0, 1]
    assert correlation > 0.999
    assert (small - large).abs().mean() < 0.02 * large.abs().mean()


@pytest.mark.parametrize("internal_batch_size", [2, 16])
def test_ig_is_complete_whatever_the_batching(
    quadrant: QuadrantDetector, internal_batch_size: int
) -> None:
    x = noise_batch(quadrant, 3)
    explainer = IntegratedGradientsExplainer(
        quadrant, n_steps=32, internal_batch_size=internal_batch_size
    )
    raw, targets = explainer.raw_attributions(x, "real")
    with torch.no_grad():
        expected = -(quadrant(x) - quadrant(make_baseline(quadrant, x, "black")))
    assert raw.shape == x.shape and targets.tolist() == [0, 0, 0]
    torch.testing.assert_close(raw.sum(dim=(1, 2, 3)), expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", ["smoothgrad", "occlusion"])
def test_perturbation_methods_honour_internal_batch_size(
    quadrant: QuadrantDetector, name: str
) -> None:
    x = noise_batch(quadrant, 3)
    sizes: list[int] = []
    hook = quadrant.model.register_forward_pre_hook(lambda _m, args: sizes.append(len(args[0])))
    try:
        build(name, quadrant, internal_batch_size=2).attribute(x)
    finally:
        hook.remove()
    assert max(sizes) <= 2


def test_smoothgrad_is_seeded_and_leaves_global_rng_alone(quadrant: QuadrantDetector) -> None:
    x = noise_batch(quadrant, 2)
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    first = build("smoothgrad", quadrant).attribute(x)["input"].maps
    assert torch.rand(1) == expected
    again = build("smoothgrad", quadrant).attribute(x)["input"].maps
    plain = build("saliency", quadrant).attribute(x)["input"].maps
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, plain)


def test_predicted_target_on_inference_tensors(quadrant: QuadrantDetector) -> None:
    with torch.inference_mode():
        x = noise_batch(quadrant, 2)
        x[1] = make_baseline(quadrant, x[1:], "blur")[0]
        result = build("integrated_gradients", quadrant).attribute(x, "predicted")["input"]
    assert result.targets.tolist() == [1, 0]
    assert torch.isfinite(result.maps).all()


@pytest.mark.parametrize("name", list(FAST))
def test_inference_tensor_targets_as_the_engine_passes_them(
    quadrant: QuadrantDetector, name: str
) -> None:
    with torch.inference_mode():
        x = noise_batch(quadrant, 2)
        targets = (quadrant(x) > 0).long()
    maps = build(name, quadrant).attribute(x, targets)["input"].maps
    assert maps.shape == (2, SIZE, SIZE) and maps.amax(dim=(1, 2)).eq(1).all()


def test_registry_names_and_aliases(quadrant: QuadrantDetector) -> None:
    assert isinstance(EXPLAINERS.create("ig", detector=quadrant), IntegratedGradientsExplainer)
    assert isinstance(EXPLAINERS.create("saliency", detector=quadrant), SaliencyExplainer)
    assert isinstance(EXPLAINERS.create("occlusion", detector=quadrant), OcclusionExplainer)
    assert "guided_backprop" not in EXPLAINERS
    assert EXPLAINERS.get("ig").uses_layers is False


def test_baselines(quadrant: QuadrantDetector) -> None:
    x = noise_batch(quadrant, 2)
    black = make_baseline(quadrant, x, "black")
    zeros = quadrant.normalize(torch.zeros(2, 3, SIZE, SIZE, dtype=torch.uint8))
    torch.testing.assert_close(black, zeros)
    mean = make_baseline(quadrant, x, "mean")
    torch.testing.assert_close(mean[:, :, 0, 0], x.mean(dim=(2, 3)))
    blur = make_baseline(quadrant, x, "blur")
    assert blur.shape == x.shape and blur.std() < 0.25 * x.std()
    torch.testing.assert_close(blur.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.05, rtol=0)


@pytest.mark.parametrize(
    ("factory", "kwargs", "message"),
    [
        (IntegratedGradientsExplainer, {"baseline": "white"}, "baseline must be one of"),
        (IntegratedGradientsExplainer, {"n_steps": 0}, "n_steps"),
        (SaliencyExplainer, {"internal_batch_size": 0}, "internal_batch_size"),
        (SaliencyExplainer, {"noise_level": 0}, "noise_level"),
        (OcclusionExplainer, {"window": 0}, "window"),
    ],
)
def test_bad_parameters_are_named(
    quadrant: QuadrantDetector, factory, kwargs, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        factory(quadrant, **kwargs)


def test_occlusion_window_larger_than_input_is_reported(quadrant: QuadrantDetector) -> None:
    explainer = OcclusionExplainer(quadrant, window=SIZE + 1)
    with pytest.raises(ValueError, match=r"window 65 px exceeds the 64x64 input"):
        explainer.attribute(noise_batch(quadrant, 1))


def test_rejects_a_single_image_without_batch_dimension(quadrant: QuadrantDetector) -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        build("saliency", quadrant).attribute(noise_batch(quadrant, 1)[0])

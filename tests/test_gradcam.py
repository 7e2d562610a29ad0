import gc
import os

import numpy as np
import psutil
import pytest
import torch
from captum.attr import LayerGradCam
from models import quadrant_share
from torch import nn

import deepfake_xai as dx
from deepfake_xai.detectors import Detector
from deepfake_xai.explainers.base import normalize_maps
from deepfake_xai.explainers.gradcam import (
    GradCAM,
    GradCAMPlusPlus,
    LayerCAM,
    cam_pass,
    captured_activations,
)
from deepfake_xai.preprocessing import Harmonization
from deepfake_xai.registry import EXPLAINERS

SIZE = 64
TINY = 32


@pytest.fixture(scope="module", params=["efficientnet_b0", "mobilenetv2_100"])
def detector(request):
    torch.manual_seed(0)
    return dx.load_detector(request.param, image_size=SIZE, device="cpu")


@pytest.fixture(scope="module")
def x(detector):
    generator = torch.Generator().manual_seed(1)
    batch = torch.randint(0, 256, (3, 3, SIZE, SIZE), dtype=torch.uint8, generator=generator)
    return detector.normalize(batch)


class SignedLogit(nn.Module):
    """normalised x -> (B, 1): the logit for target fake, minus it for target real."""

    def __init__(self, detector: Detector, sign: float):
        super().__init__()
        self.model = detector.model  # registered so Captum sees the hooked layer inside
        self.detector = detector
        self.sign = sign

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sign * self.detector(x)[:, None]


@pytest.mark.parametrize("layer", ["final", "mid"])
@pytest.mark.parametrize("target", ["fake", "real"])
def test_gradcam_matches_captum(detector, x, layer, target):
    logits, embeddings, maps, targets = cam_pass(detector, x, layers=(layer,), target=target)
    wrapper = SignedLogit(detector, 1.0 if target == "fake" else -1.0)
    captum = LayerGradCam(wrapper, detector.module(layer))
    reference = captum.attribute(x, target=0, relu_attributions=True)[:, 0]
    assert maps[layer].shape == reference.shape
    assert reference.abs().sum() > 0, "degenerate reference: nothing to compare"
    torch.testing.assert_close(maps[layer], normalize_maps(reference), atol=1e-5, rtol=1e-4)
    with torch.inference_mode():
        plain = detector(x)
    torch.testing.assert_close(logits, plain)
    assert embeddings.shape == (3, 1280)
    assert targets.tolist() == [int(target == "fake")] * 3


@pytest.mark.parametrize("method", ["gradcam++", "layercam"])
def test_plusplus_and_layercam_match_pytorch_grad_cam(detector, x, method):
    pgc = pytest.importorskip("pytorch_grad_cam")
    fmap = detector.features(x).detach().requires_grad_()
    grads = torch.autograd.grad(detector.head(fmap)[0].sum(), fmap)[0]
    acts, grads = fmap.detach().numpy(), grads.numpy()
    if method == "gradcam++":
        weights = pgc.GradCAMPlusPlus.get_cam_weights(None, x, None, None, acts, grads)
        reference = (weights[:, :, None, None] * acts).sum(axis=1)
    else:
        reference = pgc.LayerCAM.get_cam_image(None, x, None, None, acts, grads, False)
    expected = normalize_maps(torch.from_numpy(np.maximum(reference, 0)))
    maps = cam_pass(detector, x, method=method)[2]["final"]
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=1e-4)


def test_several_layers_in_one_pass_equal_separate_passes(detector, x):
    together = cam_pass(detector, x, layers=("final", "mid"), method="layercam")[2]
    for layer in ("final", "mid"):
        alone = cam_pass(detector, x, layers=(layer,), method="layercam")[2][layer]
        torch.testing.assert_close(together[layer], alone, atol=1e-6, rtol=1e-5)
    assert together["final"].shape[-1] < together["mid"].shape[-1]


def test_predicted_target_and_plain_pass(detector, x):
    logits, embeddings, maps, targets = cam_pass(detector, x, layers=(), target="predicted")
    assert maps == {} and not logits.requires_grad
    assert torch.equal(targets, (logits > 0).long())


class QuadrantMask(nn.Module):
    """Zeroes everything outside the top-left quadrant."""

    def __init__(self, size: int):
        super().__init__()
        mask = torch.zeros(1, 1, size, size)
        mask[..., : size // 2, : size // 2] = 1
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.mask = QuadrantMask(TINY)
        self.fc = nn.Linear(8, 1)
        self.spare = nn.Identity()
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.body[0].weight.copy_(torch.rand(8, 3, 3, 3, generator=generator) / 27)
            self.body[0].bias.fill_(1.0)
            self.fc.weight.fill_(1.0)
            self.fc.bias.zero_()


class TinyDetector(Detector):
    """A logit that depends only on the top-left quadrant of the image."""

    def __init__(self):
        super().__init__(
            TinyNet(),
            name="tiny",
            architecture="tiny",
            cam_layers={"final": "mask", "mid": "body"},
            harmonization=Harmonization(image_size=TINY),
            device="cpu",
        )

    def features(self, x):
        return self.model.mask(self.model.body(x))

    def head(self, fmap):
        embedding = fmap.mean(dim=(2, 3))
        return self.model.fc(embedding).reshape(-1), embedding


@pytest.fixture(scope="module")
def tiny():
    return TinyDetector()


@pytest.fixture(scope="module")
def tiny_x(tiny):
    generator = torch.Generator().manual_seed(2)
    return tiny.normalize(
        torch.randint(0, 256, (2, 3, TINY, TINY), dtype=torch.uint8, generator=generator)
    )


@pytest.mark.parametrize("explainer_cls", [GradCAM, GradCAMPlusPlus, LayerCAM])
def test_known_answer_final_layer(tiny, tiny_x, explainer_cls):
    heatmaps = explainer_cls(tiny).attribute(tiny_x, target="fake", layers=("final",))["final"]
    assert heatmaps.layer == "final" and heatmaps.method == explainer_cls.name
    assert heatmaps.detector == "tiny" and heatmaps.targets.tolist() == [1, 1]
    energy = quadrant_share(heatmaps.upsample(TINY * 2))
    assert (energy > 0.7).all(), energy


def test_known_answer_mid_layer_layercam_localises_gradcam_does_not(tiny, tiny_x):
    layercam = LayerCAM(tiny).attribute(tiny_x, layers=("mid",))["mid"].maps
    gradcam = GradCAM(tiny).attribute(tiny_x, layers=("mid",))["mid"].maps
    assert (quadrant_share(layercam) > 0.7).all()
    assert (quadrant_share(gradcam) < 0.5).all()


def test_target_real_without_evidence_gives_flat_zero_maps(tiny, tiny_x):
    maps = GradCAM(tiny).attribute(tiny_x, target="real")["final"].maps
    assert torch.equal(maps, torch.zeros_like(maps))


def test_registered_with_aliases():
    assert EXPLAINERS.get("grad-cam") is GradCAM
    assert EXPLAINERS.get("gradcampp") is GradCAMPlusPlus
    assert EXPLAINERS.get("grad-cam++") is GradCAMPlusPlus
    assert EXPLAINERS.get("layercam") is LayerCAM
    assert all(cls.uses_layers and cls.kind == "attribution" for cls in (GradCAM, LayerCAM))


def test_layer_path_and_names_kept_as_asked(tiny, tiny_x):
    out = GradCAM(tiny).attribute(tiny_x, layers=("body", "mid", "final"))
    assert list(out) == ["body", "mid", "final"]
    torch.testing.assert_close(out["body"].maps, out["mid"].maps)


def test_bad_layers_and_methods_are_clear_errors(tiny, tiny_x):
    with pytest.raises(ValueError, match="no layer 'nope'"):
        cam_pass(tiny, tiny_x, layers=("nope",))
    with pytest.raises(ValueError, match="were not run"):
        cam_pass(tiny, tiny_x, layers=("spare",))
    with pytest.raises(ValueError, match=r"'fc' outputs \(2, 1\)"):
        cam_pass(tiny, tiny_x, layers=("fc",))
    with pytest.raises(ValueError, match="unknown CAM method 'scorecam'"):
        cam_pass(tiny, tiny_x, method="scorecam")


def all_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def live_tensors() -> int:
    gc.collect()
    return sum(issubclass(type(obj), torch.Tensor) for obj in gc.get_objects())


@pytest.mark.parametrize("detector", ["efficientnet_b0"], indirect=True)
def test_hooks_removed_and_memory_flat_over_many_calls(detector, x):
    x = x[:1, :, :32, :32]
    process = psutil.Process(os.getpid())
    for _ in range(5):
        cam_pass(detector, x, layers=("final", "mid"))
    tensors, rss = live_tensors(), process.memory_info().rss
    for _ in range(50):
        cam_pass(detector, x, layers=("final", "mid"), method="gradcam++")
    grown = process.memory_info().rss - rss
    assert all_hooks(detector.model) == 0
    assert live_tensors() <= tensors
    assert grown < 20 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 50 calls"


def test_hooks_removed_on_exception(tiny, tiny_x, monkeypatch):
    def broken_head(fmap):
        raise RuntimeError("head failed")

    monkeypatch.setattr(tiny, "head", broken_head)
    with pytest.raises(RuntimeError, match="head failed"):
        cam_pass(tiny, tiny_x, layers=("mid",))
    with pytest.raises(KeyError), captured_activations(tiny, ["mid", "body", "fc"]):
        assert all_hooks(tiny.model) == 2
        raise KeyError("inside")
    assert all_hooks(tiny.model) == 0


def test_one_detector_explained_from_four_threads(detector):
    """The issue's case: explain(..., layers=("final", "mid")) on one shared detector."""
    from concurrent.futures import ThreadPoolExecutor

    generator = torch.Generator().manual_seed(5)
    batches = [
        torch.randint(0, 256, (2, 3, SIZE, SIZE), dtype=torch.uint8, generator=generator)
        for _ in range(4)
    ]
    expected = [dx.explain(detector, b, layers=("final", "mid")) for b in batches]

    def explain(i: int):
        return i % 4, dx.explain(detector, batches[i % 4], layers=("final", "mid"))

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(explain, range(24)))
    for i, got in results:
        np.testing.assert_allclose(got.probs, expected[i].probs, atol=1e-5)
        for layer in ("final", "mid"):
            np.testing.assert_allclose(
                got.heatmaps[layer].numpy(), expected[i].heatmaps[layer].numpy(), atol=2e-3
            )
    assert not any(m._forward_hooks for m in detector.model.modules())


def test_a_plain_pass_in_another_thread_is_not_captured(detector, x):
    """A hook installed for one thread's capture leaves other threads' passes untouched."""
    import threading

    inside, done = threading.Event(), threading.Event()

    def plain_pass():
        inside.wait()
        with torch.inference_mode():
            detector.features(x)  # would fail inside inference_mode if it were captured
        done.set()

    worker = threading.Thread(target=plain_pass)
    worker.start()
    with captured_activations(detector, ["mid"]) as captured:
        inside.set()
        done.wait(30)
        assert captured == {}
    worker.join()


@pytest.mark.parametrize("detector", ["mobilenetv2_100"], indirect=True)
def test_two_hooked_layers_one_above_the_other_in_one_pass(detector, x):
    """Layers upstream of another hooked layer still get their gradient (one pass, several)."""
    together = cam_pass(detector, x, layers=("blocks.2", "blocks.4", "final"))[2]
    for layer in ("blocks.2", "blocks.4"):
        alone = cam_pass(detector, x, layers=(layer,))[2][layer]
        torch.testing.assert_close(together[layer], alone, atol=1e-5, rtol=1e-4)

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import deepfake_xai as dx
from deepfake_xai.engine import DetectorOutput, Engine, Explanation, explain
from deepfake_xai.explainers.base import AttributionExplainer, Heatmaps, ProjectionExplainer
from deepfake_xai.explainers.gradcam import cam_pass
from deepfake_xai.registry import EXPLAINERS

EFFNET_SIZE, MOBILENET_SIZE = 64, 48


@pytest.fixture(scope="module")
def effnet():
    torch.manual_seed(0)
    return dx.load_detector("efficientnet_b0", image_size=EFFNET_SIZE, device="cpu")


@pytest.fixture(scope="module")
def mobilenet():
    torch.manual_seed(1)
    return dx.load_detector("mobilenetv2_100", image_size=MOBILENET_SIZE, device="cpu")


def uint8_batch(n: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)


@pytest.mark.parametrize("n", [1, 3, 5])
def test_outputs_match_the_detector(effnet, n):
    batch = uint8_batch(n, EFFNET_SIZE, seed=n)
    out = Engine([effnet], device="cpu").run(batch)["efficientnet_b0"]
    assert isinstance(out, DetectorOutput) and out.detector == "efficientnet_b0"
    np.testing.assert_allclose(out.probs, effnet.predict_proba(batch), atol=1e-5, rtol=0)
    np.testing.assert_allclose(out.embeddings, effnet.embed(batch), atol=1e-4, rtol=1e-4)
    assert out.probs.dtype == out.logits.dtype == out.embeddings.dtype == np.float32
    assert out.embeddings.shape == (n, 1280)
    assert out.targets.dtype == np.int64 and out.targets.tolist() == [1] * n
    maps = out.heatmaps["final"]
    assert maps.dtype == np.float16 and maps.shape == (n, 2, 2)
    assert ((maps >= 0) & (maps <= 1)).all()
    expected = cam_pass(effnet, effnet.normalize(batch))[2]["final"].numpy()
    np.testing.assert_allclose(maps, expected, atol=2e-3)
    assert out.seconds > 0


def test_shared_batch_for_two_detectors_of_different_sizes(effnet, mobilenet):
    engine = Engine([effnet, mobilenet], device="cpu", layers=("final", "mid"), target="predicted")
    batch = uint8_batch(3, EFFNET_SIZE)
    outputs = engine.run(batch)
    assert list(outputs) == ["efficientnet_b0", "mobilenetv2_100"]
    np.testing.assert_allclose(
        outputs["efficientnet_b0"].probs, effnet.predict_proba(batch), atol=1e-5, rtol=0
    )
    resized = F.interpolate(
        mobilenet.normalize(batch), size=MOBILENET_SIZE, mode="bilinear", antialias=True
    )
    with torch.inference_mode():
        expected = torch.sigmoid(mobilenet(resized)).numpy()
    small = outputs["mobilenetv2_100"]
    np.testing.assert_allclose(small.probs, expected, atol=1e-5, rtol=0)
    assert small.heatmaps["final"].shape == (3, 2, 2)
    assert small.heatmaps["mid"].shape == (3, 3, 3)
    assert outputs["efficientnet_b0"].heatmaps["mid"].shape == (3, 4, 4)
    assert small.targets.tolist() == (small.logits > 0).astype(int).tolist()


def test_mapping_gives_each_detector_its_own_batch(effnet, mobilenet):
    engine = Engine([effnet, mobilenet], method=None, device="cpu")
    batches = {
        "efficientnet_b0": uint8_batch(2, EFFNET_SIZE),
        "mobilenetv2_100": uint8_batch(2, 48),
    }
    outputs = engine.run(batches)
    for detector in (effnet, mobilenet):
        out = outputs[detector.name]
        np.testing.assert_allclose(
            out.probs, detector.predict_proba(batches[detector.name]), atol=1e-5, rtol=0
        )
        assert out.heatmaps == {}
    with pytest.raises(ValueError, match="must be the detector names"):
        engine.run({"efficientnet_b0": batches["efficientnet_b0"]})
    assert engine.harmonizations() == {
        "efficientnet_b0": effnet.harmonization,
        "mobilenetv2_100": mobilenet.harmonization,
    }


def test_rejects_bad_batches(effnet):
    engine = Engine([effnet], device="cpu")
    with pytest.raises(ValueError, match=r"uint8 \(B, 3, H, W\).*float32"):
        engine.run(torch.zeros(2, 3, 64, 64))
    with pytest.raises(ValueError, match=r"got \(2, 1, 64, 64\)"):
        engine.run(torch.zeros(2, 1, 64, 64, dtype=torch.uint8))
    with pytest.raises(TypeError, match="got ndarray"):
        engine.run(np.zeros((2, 3, 64, 64), np.uint8))


def test_single_image_without_batch_axis(effnet):
    out = Engine([effnet], device="cpu", layers=("mid",)).run(uint8_batch(1, EFFNET_SIZE)[0])
    assert out["efficientnet_b0"].heatmaps["mid"].shape == (1, 4, 4)


def test_constructor_checks(effnet):
    with pytest.raises(ValueError, match="unique"):
        Engine([effnet, effnet], device="cpu")
    with pytest.raises(TypeError, match="gradcam takes no options"):
        Engine([effnet], device="cpu", steps=4)


class RecordingExplainer(AttributionExplainer):
    """A plugin attribution explainer that records what the engine passes it."""

    name = "test-recording"
    calls: list = []

    def __init__(self, detector, fill: float = 0.25):
        super().__init__(detector)
        self.fill = fill

    def attribute(self, inputs, target="fake", layers=("final",)):
        self.calls.append((inputs, target, tuple(layers)))
        maps = torch.full((inputs.shape[0], *inputs.shape[-2:]), self.fill)
        return {"input": Heatmaps(maps, self.name, "input", target, self.detector.name)}


class RecordingProjection(ProjectionExplainer):
    name = "test-projection"


@pytest.fixture
def test_explainers():
    """Register two plugin-like explainers for one test, and always unregister them."""
    EXPLAINERS.add("test-recording", RecordingExplainer)
    EXPLAINERS.add("test-projection", RecordingProjection)
    yield
    EXPLAINERS.remove("test-recording")
    EXPLAINERS.remove("test-projection")


def test_any_registered_attribution_explainer_runs_after_the_pass(effnet, test_explainers):
    engine = Engine([effnet], method="test-recording", device="cpu", target="real", fill=0.75)
    batch = uint8_batch(2, EFFNET_SIZE)
    out = engine.run(batch)["efficientnet_b0"]
    inputs, targets, layers = RecordingExplainer.calls[-1]
    assert inputs.dtype == torch.float32 and inputs.shape == (2, 3, EFFNET_SIZE, EFFNET_SIZE)
    assert targets.tolist() == [0, 0] and layers == ("final",)
    assert out.heatmaps["input"].shape == (2, EFFNET_SIZE, EFFNET_SIZE)
    assert (out.heatmaps["input"] == np.float16(0.75)).all()
    np.testing.assert_allclose(out.probs, effnet.predict_proba(batch), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="not an attribution explainer"):
        Engine([effnet], method="test-projection", device="cpu")


@pytest.mark.parametrize("layers", [("final",), ("final", "mid")])
def test_saliency_from_the_cam_pass_matches_the_saliency_explainer(effnet, layers):
    batch = uint8_batch(3, EFFNET_SIZE, seed=7)
    both = explain(effnet, batch, layers=layers, target="predicted", saliency=True)
    plain = explain(effnet, batch, layers=layers, target="predicted")
    alone = explain(effnet, batch, method="saliency", target="predicted")
    assert sorted(both.heatmaps) == sorted([*layers, "input"])
    assert (
        both.heatmaps["input"].method == "saliency" and both.heatmaps["final"].method == "gradcam"
    )
    np.testing.assert_allclose(
        both.heatmaps["input"].numpy(), alone.heatmaps["input"].numpy(), atol=2e-3
    )
    for layer in layers:
        np.testing.assert_allclose(
            both.heatmaps[layer].numpy(), plain.heatmaps[layer].numpy(), atol=2e-3
        )
    np.testing.assert_allclose(both.probs, plain.probs, atol=1e-5)
    np.testing.assert_array_equal(both.targets, plain.targets)
    with pytest.raises(ValueError, match="Grad-CAM family"):
        Engine([effnet], method="saliency", device="cpu", saliency=True)


def test_engine_from_names_pickles(mobilenet):
    engine = Engine(["mobilenetv2_100"], method="layercam", device="cpu")
    assert isinstance(engine.detectors[0], dx.Detector)
    assert engine.detectors[0].input_size == 224 and engine.method == "layercam"
    small = Engine([mobilenet], device="cpu")
    clone = pickle.loads(pickle.dumps(small))
    batch = uint8_batch(1, MOBILENET_SIZE)
    np.testing.assert_array_equal(
        clone.run(batch)["mobilenetv2_100"].probs, small.run(batch)["mobilenetv2_100"].probs
    )


def test_explain_pil_images_of_mixed_sizes_and_paths(effnet, rgb_images, tmp_path):
    explanation = explain(effnet, rgb_images, layers=("final", "mid"), batch_size=2)
    assert isinstance(explanation, Explanation) and len(explanation) == 3
    assert explanation.method == "gradcam" and explanation.detector == "efficientnet_b0"
    assert explanation.embeddings.shape == (3, 1280)
    assert [img.size for img in explanation.images] == [(EFFNET_SIZE, EFFNET_SIZE)] * 3
    heatmaps = explanation.heatmaps["mid"]
    assert heatmaps.layer == "mid" and heatmaps.maps.shape == (3, 4, 4)
    assert heatmaps.targets.tolist() == [1, 1, 1]
    prepared = effnet.prepare(rgb_images)
    np.testing.assert_allclose(explanation.probs, effnet.predict_proba(prepared), atol=1e-5)

    paths = []
    for i, image in enumerate(rgb_images):
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])
    from_paths = explain(effnet, paths, layers=("final", "mid"))
    np.testing.assert_allclose(from_paths.probs, explanation.probs, atol=1e-6)

    picture = explanation.overlay(1, "mid", alpha=0.4, colormap="viridis")
    assert picture.mode == "RGB" and picture.size == (EFFNET_SIZE, EFFNET_SIZE)
    bigger = explanation.overlay(0, image=rgb_images[0].resize((100, 90)))
    assert bigger.size == (100, 90)
    with pytest.raises(KeyError, match="available: \\['final', 'mid'\\]"):
        explanation.overlay(0, "nope")


def test_explain_uint8_tensor_and_prediction_only(effnet):
    batch = uint8_batch(2, EFFNET_SIZE)
    explanation = explain(effnet, batch, method=None)
    assert explanation.heatmaps == {} and explanation.method is None
    assert isinstance(explanation.images[0], Image.Image)
    np.testing.assert_array_equal(
        np.asarray(explanation.images[1]), batch[1].permute(1, 2, 0).numpy()
    )
    np.testing.assert_allclose(explanation.probs, effnet.predict_proba(batch), atol=1e-5)
    with pytest.raises(ValueError, match="no images"):
        explain(effnet, [])

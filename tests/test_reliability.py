"""Reliability: the ood_score, the three-way verdict and the statistics inside checkpoints."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import deepfake_xai as dx
from deepfake_xai.detectors.checkpoint import CheckpointError
from deepfake_xai.engine import Engine
from deepfake_xai.faces import FaceBox
from deepfake_xai.reliability import (
    EMBEDDING,
    TENSOR_PREFIX,
    Reliability,
    assess,
    collect_features,
    fit_detector,
    input_problems,
)

SIZE = 48


def _clusters(rng: np.random.Generator, n: int, shift: float = 0.0) -> tuple[np.ndarray, ...]:
    """Two classes of positive 16-d Gaussian features (and labels); ``shift`` moves the first
    half of the dimensions (a change of direction, which both methods must notice)."""
    labels = np.repeat([0, 1], n // 2)
    features = rng.normal(size=(n, 16)) + 4.0 + labels[:, None] * 2.0
    features[:, :8] += shift
    return features.astype(np.float32), labels


@pytest.mark.parametrize("method", ["mahalanobis", "knn"])
def test_fit_flags_the_chosen_share_and_the_unfamiliar(method):
    rng = np.random.default_rng(0)
    train, labels = _clusters(rng, 600)
    val, _ = _clusters(rng, 400)
    test, _ = _clusters(rng, 400)
    far, _ = _clusters(rng, 200, shift=12.0)
    fitted = Reliability.fit({EMBEDDING: train}, labels, {EMBEDDING: val}, method=method)
    assert fitted.method == method
    validation = fitted.score({EMBEDDING: torch.from_numpy(val)}).numpy()
    assert (validation >= 1).mean() == pytest.approx(0.05, abs=0.01)
    inside = fitted.score({EMBEDDING: torch.from_numpy(test)}).numpy()
    assert (inside >= 1).mean() < 0.12
    outside = fitted.score({EMBEDDING: torch.from_numpy(far)}).numpy()
    assert (outside >= 1).mean() > 0.95


def test_layers_combine_by_their_maximum():
    rng = np.random.default_rng(1)
    train, labels = _clusters(rng, 400)
    other, _ = _clusters(rng, 400)
    val, _ = _clusters(rng, 200)
    fitted = Reliability.fit(
        {EMBEDDING: train, "blocks.1": other}, labels, {EMBEDDING: val, "blocks.1": val}
    )
    assert fitted.module_layers == ["blocks.1"]
    moved = {EMBEDDING: torch.from_numpy(val), "blocks.1": torch.from_numpy(val + 8.0)}
    assert (fitted.score(moved).numpy() >= 1).all()


def test_fit_refuses_bad_settings():
    rng = np.random.default_rng(0)
    train, labels = _clusters(rng, 40)
    with pytest.raises(ValueError, match="method"):
        Reliability.fit({EMBEDDING: train}, labels, {EMBEDDING: train}, method="cosine")
    with pytest.raises(ValueError, match="flag_rate"):
        Reliability.fit({EMBEDDING: train}, labels, {EMBEDDING: train}, flag_rate=1.5)


def test_assess_gives_three_outcomes_and_says_why():
    assert assess(0.9, 0.2).verdict == "fake"
    assert assess(0.1, 0.2) == assess(0.1, 0.2)
    clear = assess(0.1, 0.2)
    assert (clear.verdict, clear.reliable, clear.reasons) == ("real", True, ())
    flagged = assess(0.1, 3.0)
    assert (flagged.verdict, flagged.reliable) == ("uncertain", False)
    assert "unlike the faces this detector learnt from" in flagged.reasons[0]
    assert assess(0.97, 1.0).verdict == "uncertain"  # the score at the threshold flags
    small = assess(0.9, 0.1, ["the face is 20 px across"])
    assert (small.verdict, small.reasons) == ("uncertain", ("the face is 20 px across",))
    unmeasured = assess(0.7, None)
    assert (unmeasured.verdict, unmeasured.reliable) == ("fake", None)
    assert assess(math.nan, 0.1).verdict == ""
    assert assess(0.7, math.nan).reliable is None


def test_input_problems_name_the_limit():
    fitted = Reliability({}, min_face_side=64, min_jpeg_quality=30)
    assert fitted.input_problems(face_side=80, jpeg_quality=75) == []
    small, rough = fitted.input_problems(face_side=40, jpeg_quality=20)
    assert "40 px" in small and "64 px" in small
    assert "about 20" in rough and "30" in rough
    assert fitted.input_problems() == []


def test_input_problems_measure_the_face_as_analysed():
    """A training-style photo (the face framed like FFHQ, so analysed whole) is never "smaller
    than the training faces", whatever its framing square measures; a small face in a large
    photo is measured by the crop that is analysed."""
    detector = SimpleNamespace(reliability=Reliability({}, min_face_side=256))
    aligned = FaceBox(x=50, y=50, width=140, height=170)  # its framing square: 233 px
    assert input_problems(detector, (256, 256), aligned) == []
    assert input_problems(detector, (256, 256)) == []
    (small,) = input_problems(detector, (1024, 768), FaceBox(x=500, y=300, width=40, height=50))
    assert "smaller than any" in small


def _noise(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=generator, dtype=torch.uint8)


@pytest.fixture(scope="module")
def fitted_detector():
    detector = dx.load_detector("mobilenetv2_100", image_size=SIZE, device="cpu")
    train = [(_noise(16, seed), torch.tensor([0] * 8 + [1] * 8)) for seed in range(3)]
    fit_detector(detector, train, [_noise(16, 10), _noise(16, 11)], min_face_side=24)
    return detector


def test_statistics_travel_inside_the_checkpoint(fitted_detector, tmp_path):
    path = fitted_detector.save(tmp_path / "with-stats")
    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
        meta = json.loads(handle.metadata()["deepfake_xai"])
    assert any(k.startswith(TENSOR_PREFIX) for k in keys)
    assert [layer["name"] for layer in meta["reliability"]["layers"]] == [EMBEDDING, "blocks.4"]
    loaded = dx.load_detector(path, device="cpu")
    assert loaded.fingerprint and len(loaded.fingerprint) == 12
    assert "reliability" not in loaded.metadata
    assert loaded.reliability.min_face_side == 24
    images = _noise(8, 20)
    features = collect_features(loaded, [images], ("mid",))
    expected = fitted_detector.reliability.score(
        {k: torch.from_numpy(v) for k, v in features.items()}
    )
    engine = Engine([loaded], method="gradcam", layers=("final", "mid"), device="cpu")
    output = engine.run(images)[loaded.name]
    np.testing.assert_allclose(output.ood_scores, expected.numpy(), rtol=1e-4)
    explained = dx.explain(loaded, images, layers=("final",))
    np.testing.assert_allclose(explained.ood_scores, expected.numpy(), rtol=1e-4)
    assert explained.assessment(0).reliable is not None


def test_observing_the_mid_layer_leaves_its_heatmap_alone(fitted_detector):
    images = _noise(4, 30)
    bare = dx.load_detector("mobilenetv2_100", image_size=SIZE, device="cpu")
    bare.model.load_state_dict(fitted_detector.model.state_dict())
    with_stats = Engine([fitted_detector], layers=("final", "mid"), device="cpu").run(images)
    without = Engine([bare], layers=("final", "mid"), device="cpu").run(images)
    name = fitted_detector.name
    for layer in ("final", "mid"):
        np.testing.assert_allclose(
            with_stats[name].heatmaps[layer], without[name].heatmaps[layer], atol=1e-3
        )
    assert without[name].ood_scores is None


def test_a_damaged_reliability_block_is_refused_by_name(fitted_detector, tmp_path):
    path = fitted_detector.save(tmp_path / "damaged")
    with safe_open(str(path), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
        meta = json.loads(handle.metadata()["deepfake_xai"])
    del tensors[f"{TENSOR_PREFIX}0.precision"]
    save_file(tensors, str(path), metadata={"deepfake_xai": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="reliability statistics.*lacks"):
        dx.load_detector(path, device="cpu")
    meta["reliability"]["threshold"] = -1
    tensors = {k: v for k, v in tensors.items() if not k.startswith(TENSOR_PREFIX)}
    save_file(tensors, str(path), metadata={"deepfake_xai": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="reliability statistics"):
        dx.load_detector(path, device="cpu")


def test_half_precision_statistics_are_a_quarter_the_size_and_score_alike(
    fitted_detector, tmp_path
):
    """Shipped checkpoints carry the statistics in fp16, the precision matrix as its upper
    triangle: a quarter of the bytes, the same scores to within 0.1 %."""
    full = fitted_detector.save(tmp_path / "full")
    fitted_detector.reliability, kept = (
        fitted_detector.reliability.half(),
        fitted_detector.reliability,
    )
    try:
        compact = fitted_detector.save(tmp_path / "compact")
    finally:
        fitted_detector.reliability = kept

    def statistic_bytes(path):
        with safe_open(str(path), framework="pt") as handle:
            named = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
        stats = {k: v for k, v in named.items() if k.startswith(TENSOR_PREFIX)}
        return sum(v.numel() * v.element_size() for v in stats.values()), stats

    full_bytes, _ = statistic_bytes(full)
    compact_bytes, stored = statistic_bytes(compact)
    assert f"{TENSOR_PREFIX}0.precision_upper" in stored
    assert f"{TENSOR_PREFIX}0.precision" not in stored
    assert compact_bytes < 0.3 * full_bytes
    images = _noise(8, 40)
    scores = [
        Engine([dx.load_detector(p, device="cpu")], device="cpu").run(images)
        for p in (full, compact)
    ]
    name = fitted_detector.name
    np.testing.assert_allclose(scores[1][name].ood_scores, scores[0][name].ood_scores, rtol=2e-3)
    precision = kept.layers[EMBEDDING].precision
    restored = dx.load_detector(compact, device="cpu").reliability.layers[EMBEDDING].precision
    assert torch.equal(restored, restored.T)
    np.testing.assert_allclose(
        restored, precision, rtol=2e-3, atol=1e-3 * float(precision.abs().max())
    )

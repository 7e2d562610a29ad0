"""The engine's ONNX Runtime path gives the eager path's outputs, exports once per weights (a
later process reuses the cached file), is chosen as documented, and falls back to eager with
the reason logged when it cannot serve."""

from __future__ import annotations

import copy
import logging
import os
import sys

import numpy as np
import pytest
import torch

from deepfake_xai import onnx_engine
from deepfake_xai.detectors.timm import TimmDetector
from deepfake_xai.engine import Engine
from deepfake_xai.reliability import fit_detector

SIZE = 32


def uint8_batch(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, SIZE, SIZE), dtype=torch.uint8, generator=generator)


def new_process() -> None:
    """Forget this process's sessions, as a new process starts (the cached files stay)."""
    onnx_engine._CACHE.clear()
    onnx_engine._SESSIONS.clear()


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory, monkeypatch):
    """One ONNX cache for this file (not the user's), and the switch left to each test."""
    root = tmp_path_factory.getbasetemp() / "onnx-cache"
    monkeypatch.setenv("DEEPFAKE_XAI_CACHE", str(root))
    monkeypatch.delenv(onnx_engine.ONNX_ENV, raising=False)
    return root / "onnx"


@pytest.fixture(scope="module")
def detector() -> TimmDetector:
    """A random-weight MobileNetV2 at 32 px with reliability statistics on its mid block
    (nearest neighbours: fitted in 0.5 s, where a 1280-D covariance takes 4 s)."""
    torch.manual_seed(0)
    detector = TimmDetector(architecture="mobilenetv2_100", image_size=SIZE, device="cpu")
    train = [(uint8_batch(8, seed), torch.tensor([0, 1] * 4)) for seed in (1, 2)]
    fit_detector(detector, train, [uint8_batch(8, 3)], method="knn", min_face_side=SIZE)
    return detector


def outputs(detector, onnx: bool, batch: torch.Tensor, **kwargs):
    return Engine([detector], device="cpu", onnx=onnx, compiled=False, **kwargs).run(batch)[
        detector.name
    ]


@pytest.mark.parametrize("target", ["fake", "predicted"])
def test_onnx_and_eager_give_the_same_outputs(detector, target):
    batch = uint8_batch(5, seed=7)
    a = outputs(detector, False, batch, target=target)
    b = outputs(detector, True, batch, target=target)
    assert b.ood_scores is not None and a.ood_scores is not None
    np.testing.assert_allclose(b.probs, a.probs, atol=1e-4, rtol=0)
    np.testing.assert_allclose(b.embeddings, a.embeddings, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(b.heatmaps["final"], a.heatmaps["final"], atol=1e-3, rtol=0)
    np.testing.assert_allclose(b.ood_scores, a.ood_scores, rtol=1e-4)
    assert (a.targets == b.targets).all()
    _, made = onnx_engine.onnx_features(detector, detector.reliability.module_layers)
    assert not made  # the engine ran on it


def test_chunks_side_by_side_give_the_outputs_of_one_thread(detector):
    """With several threads a batch runs as chunks side by side; uneven chunks come back whole
    and in order."""
    observed = detector.reliability.module_layers
    x = detector.normalize(uint8_batch(11, seed=9))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, _ = onnx_engine.onnx_features(detector, observed)
        torch.set_num_threads(3)
        three, _ = onnx_engine.onnx_features(detector, observed)
    finally:
        torch.set_num_threads(threads)
    assert (one.threads, three.threads) == (1, 3)
    (fmap_a, taps_a), (fmap_b, taps_b) = one(x), three(x)
    assert fmap_b.shape[0] == 11
    torch.testing.assert_close(fmap_b, fmap_a, rtol=0, atol=1e-6)
    for name in observed:
        torch.testing.assert_close(taps_b[name], taps_a[name], rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients"])
def test_an_input_attribution_takes_its_verdict_from_onnx_runtime(detector, method, monkeypatch):
    """Captum makes its own forward and backward passes; the engine's P(fake), embedding and
    targets come from ONNX Runtime, and the maps are those of the eager engine."""
    batch = uint8_batch(3, seed=11)
    a = outputs(detector, False, batch, method=method, target="predicted")
    used = []

    def spy(*args, **kwargs):
        used.append(args[0].name)
        return onnx_engine.onnx_features(*args, **kwargs)

    monkeypatch.setattr("deepfake_xai.engine.onnx_features", spy)
    b = outputs(detector, True, batch, method=method, target="predicted")
    assert used == [detector.name]
    np.testing.assert_allclose(b.probs, a.probs, atol=1e-4, rtol=0)
    assert (a.targets == b.targets).all()
    np.testing.assert_allclose(b.heatmaps["input"], a.heatmaps["input"], atol=1e-3, rtol=0)


def test_a_second_process_reuses_the_cached_file(detector, cache_dir, monkeypatch):
    observed = detector.reliability.module_layers
    first, _ = onnx_engine.onnx_features(detector, observed)
    assert first.path.parent == cache_dir and first.path.is_file()
    new_process()

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_engine, "export", no_export)
    engine = Engine([detector], device="cpu", onnx=True)
    engine.run(uint8_batch(3))
    again, made = onnx_engine.onnx_features(detector, observed)
    assert not made and not again.exported and again.path == first.path
    assert 0 < engine.onnx_seconds == again.session_seconds


def test_a_second_load_of_the_same_weights_shares_the_warm_session(detector):
    """Each ``analyze`` call loads its own detector object: it gets the session an earlier one
    warmed up, until a run on that session fails."""
    observed = detector.reliability.module_layers
    first, _ = onnx_engine.onnx_features(detector, observed)
    copied = copy.deepcopy(detector)
    shared, made = onnx_engine.onnx_features(copied, observed)
    assert shared is first and not made
    onnx_engine.forget(copied, RuntimeError("out of memory"))
    with pytest.raises(onnx_engine.OnnxUnavailable):
        onnx_engine.onnx_features(copied, observed)
    fresh, made = onnx_engine.onnx_features(copy.deepcopy(detector), observed)
    assert made and fresh is not first
    new_process()


def test_changed_weights_get_their_own_export(detector):
    observed = detector.reliability.module_layers
    before, _ = onnx_engine.onnx_features(detector, observed)
    with torch.no_grad():
        detector.model.conv_stem.weight.mul_(1.5)
    try:
        after, made = onnx_engine.onnx_features(detector, observed)
        assert made and after.path != before.path
        np.testing.assert_allclose(
            outputs(detector, True, uint8_batch(2)).probs,
            outputs(detector, False, uint8_batch(2)).probs,
            atol=1e-4,
        )
    finally:
        with torch.no_grad():
            detector.model.conv_stem.weight.div_(1.5)


def test_a_wrapper_sharing_the_model_gets_its_own_export(detector):
    class Doubled(type(detector)):
        def features(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().features(x)

    wrapper = copy.copy(detector)
    wrapper.__class__ = Doubled
    observed = detector.reliability.module_layers
    assert (
        onnx_engine.onnx_features(wrapper, observed)[0].path
        != onnx_engine.onnx_features(detector, observed)[0].path
    )
    np.testing.assert_allclose(
        outputs(wrapper, True, uint8_batch(2)).probs,
        outputs(wrapper, False, uint8_batch(2)).probs,
        atol=1e-4,
    )


def test_the_switch_and_the_default_choice(detector, monkeypatch):
    assert not onnx_engine.onnx_wanted(detector)  # built in memory: no reusable export
    monkeypatch.setattr(detector, "fingerprint", "0123456789ab")
    assert onnx_engine.onnx_wanted(detector)  # built-in, loaded from a checkpoint
    monkeypatch.setenv(onnx_engine.ONNX_ENV, "0")
    assert not onnx_engine.onnx_wanted(detector)
    assert onnx_engine.onnx_wanted(detector, True)  # the engine's argument wins

    def never(*args, **kwargs):
        raise AssertionError("ONNX Runtime was used")

    monkeypatch.setattr("deepfake_xai.engine.onnx_features", never)
    outputs(detector, None, uint8_batch(2))
    Engine([detector], device="cpu", onnx=True, layers=("mid",)).run(uint8_batch(1))
    monkeypatch.setenv(onnx_engine.ONNX_ENV, "1")
    monkeypatch.setattr(detector, "fingerprint", None)
    assert onnx_engine.onnx_wanted(detector)


def test_a_failed_export_falls_back_to_eager_with_the_reason(
    detector, monkeypatch, caplog, tmp_path
):
    new_process()
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("unsupported operator Foo")

    monkeypatch.setattr(torch.onnx, "export", broken)
    monkeypatch.setattr(onnx_engine, "cache_path", lambda *a: tmp_path / "not-there.onnx")
    batch = uint8_batch(3, seed=5)
    with caplog.at_level(logging.WARNING, logger="deepfake_xai.onnx_engine"):
        fallen = outputs(detector, True, batch)
        outputs(detector, True, batch)  # the failure is remembered: no second export
    eager = outputs(detector, False, batch)
    np.testing.assert_array_equal(fallen.probs, eager.probs)
    assert "running eagerly: export failed: RuntimeError: unsupported operator Foo" in caplog.text
    assert len(calls) == 1
    new_process()


def test_without_onnxruntime_the_engine_runs_eagerly(detector, monkeypatch, caplog):
    new_process()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with caplog.at_level(logging.WARNING, logger="deepfake_xai.onnx_engine"):
        fallen = outputs(detector, True, uint8_batch(2))
    np.testing.assert_array_equal(fallen.probs, outputs(detector, False, uint8_batch(2)).probs)
    assert "onnxruntime does not import" in caplog.text
    new_process()


def test_a_damaged_cached_file_is_exported_again(detector):
    observed = detector.reliability.module_layers
    features, _ = onnx_engine.onnx_features(detector, observed)
    new_process()
    features.path.write_bytes(b"not an onnx file")
    again, made = onnx_engine.onnx_features(detector, observed)
    assert made and again.exported


def test_the_cache_keeps_the_most_recently_used_exports(tmp_path):
    for age, name in enumerate(["c.onnx", "b.onnx", "a.onnx"]):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (1000 - age, 1000 - age))
    (tmp_path / ".d.onnx.1.2.part").write_bytes(b"x")
    os.utime(tmp_path / ".d.onnx.1.2.part", (0, 0))
    onnx_engine.prune(tmp_path, keep=2)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["b.onnx", "c.onnx"]

"""The engine's compiled path gives the eager path's outputs, compiles once per shape, and is
chosen only where it pays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from models import SIZE, QuadrantDetector

from deepfake_xai import compiled
from deepfake_xai.engine import Engine
from deepfake_xai.reliability import fit_detector


def uint8_batch(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, SIZE, SIZE), dtype=torch.uint8, generator=generator)


@pytest.fixture(scope="module")
def detector() -> QuadrantDetector:
    """The tiny known-answer detector, with reliability statistics observing its conv layer."""
    detector = QuadrantDetector()
    train = [(uint8_batch(8, seed), torch.tensor([0, 1] * 4)) for seed in (1, 2)]
    fit_detector(detector, train, [uint8_batch(8, 3)], layers=("final",), min_face_side=SIZE)
    return detector


@pytest.fixture(scope="module")
def compiled_engine(detector) -> Engine:
    engine = Engine([detector], device="cpu", compiled=True)
    engine.run(uint8_batch(6))
    if engine.compiled is False:  # no C++ compiler or an unsupported platform for inductor
        pytest.skip("torch.compile is unavailable here (the engine fell back to eager)")
    return engine


def test_a_failed_compile_falls_back_to_eager(detector, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no C compiler")

    monkeypatch.setattr("deepfake_xai.engine.compiled_features", broken)
    batch = uint8_batch(3, seed=5)
    engine = Engine([detector], device="cpu", compiled=True)
    fallen = engine.run(batch)[detector.name]
    eager = Engine([detector], device="cpu", compiled=False).run(batch)[detector.name]
    np.testing.assert_array_equal(fallen.probs, eager.probs)
    assert engine.compiled is False and "running eagerly: no C compiler" in caplog.text


@pytest.mark.parametrize("target", ["fake", "predicted"])
def test_compiled_and_eager_give_the_same_outputs(detector, compiled_engine, target):
    batch = uint8_batch(6, seed=7)
    eager = Engine([detector], device="cpu", compiled=False, target=target).run(batch)
    fast = Engine([detector], device="cpu", compiled=True, target=target).run(batch)
    a, b = eager[detector.name], fast[detector.name]
    np.testing.assert_allclose(b.probs, a.probs, atol=1e-4, rtol=0)
    np.testing.assert_allclose(b.embeddings, a.embeddings, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(b.heatmaps["final"], a.heatmaps["final"], atol=1e-3, rtol=0)
    np.testing.assert_allclose(b.ood_scores, a.ood_scores, rtol=1e-4)
    assert (a.targets == b.targets).all()


def test_a_smaller_batch_reuses_the_compiled_shape(detector, compiled_engine):
    cached = compiled.compiled_features(detector, detector.reliability.module_layers)
    shapes = set(cached.first_call_seconds)
    batch = uint8_batch(2, seed=9)
    fast = compiled_engine.run(batch)[detector.name]
    eager = Engine([detector], device="cpu", compiled=False).run(batch)[detector.name]
    np.testing.assert_allclose(fast.probs, eager.probs, atol=1e-4, rtol=0)
    assert set(cached.first_call_seconds) == shapes and compiled_engine.compile_seconds > 0


def test_the_compiled_path_is_chosen_only_where_it_pays(detector, compiled_engine, monkeypatch):
    monkeypatch.delenv(compiled.COMPILE_ENV, raising=False)
    engine = Engine([detector], device="cpu")  # compiled=None: reuse what this process has
    assert engine.compiled is None
    engine.plan(compiled.COMPILE_MIN_IMAGES - 1)
    assert engine.compiled is None
    engine.plan(compiled.COMPILE_MIN_IMAGES)
    assert engine.compiled is True
    monkeypatch.setenv(compiled.COMPILE_ENV, "0")
    assert not compiled.compile_pays(10**6)
    monkeypatch.setenv(compiled.COMPILE_ENV, "1")
    assert compiled.compile_pays(1)
    mid = Engine([detector], device="cpu", compiled=True, layers=("mid",))
    assert mid._compiled_pass(detector, detector.normalize(uint8_batch(1)), []) == (None, {})

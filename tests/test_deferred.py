"""A checkpoint loaded before comes back without its torch network (no timm import in a fresh
process), gives the eager load's outputs through ONNX Runtime, builds the network when something
needs it, and loads eagerly whenever the record cannot vouch for the file."""

from __future__ import annotations

import copy
import json
import os
import pickle
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from deepfake_xai import onnx_engine
from deepfake_xai.analysis.analyzer import detector_config
from deepfake_xai.detectors import Detector, deferred
from deepfake_xai.detectors.timm import TimmDetector
from deepfake_xai.engine import Engine
from deepfake_xai.reliability import fit_detector

SIZE = 32


def uint8_batch(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, SIZE, SIZE), dtype=torch.uint8, generator=generator)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """A cache of its own per test (records and exports), as on a machine never used."""
    monkeypatch.setenv("DEEPFAKE_XAI_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(deferred.DEFER_ENV, raising=False)
    monkeypatch.delenv(onnx_engine.ONNX_ENV, raising=False)
    onnx_engine._CACHE.clear()
    onnx_engine._SESSIONS.clear()
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random-weight MobileNetV2 at 32 px with nearest-neighbour statistics, saved."""
    torch.manual_seed(0)
    detector = TimmDetector(architecture="mobilenetv2_100", image_size=SIZE, device="cpu")
    train = [(uint8_batch(8, seed), torch.tensor([0, 1] * 4)) for seed in (1, 2)]
    fit_detector(detector, train, [uint8_batch(8, 3)], method="knn", min_face_side=SIZE)
    return detector.save(tmp_path_factory.mktemp("deferred") / "tiny.safetensors")


def run(detector: Detector, onnx: bool):
    engine = Engine([detector], device="cpu", onnx=onnx, compiled=False)
    return engine.run(uint8_batch(5, seed=7))[detector.name]


def assert_same_outputs(a, b) -> None:
    np.testing.assert_allclose(b.probs, a.probs, atol=1e-4, rtol=0)
    np.testing.assert_allclose(b.embeddings, a.embeddings, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(b.heatmaps["final"], a.heatmaps["final"], atol=1e-3, rtol=0)
    np.testing.assert_allclose(b.ood_scores, a.ood_scores, rtol=1e-4)


def test_the_second_load_defers_the_network_and_gives_the_same_outputs(checkpoint):
    eager = Detector.load(checkpoint, device="cpu")
    assert eager.is_built and deferred.record_path(eager.fingerprint).is_file()
    later = Detector.load(checkpoint, device="cpu")
    assert not later.is_built
    assert (type(later), later.name, later.config()) == (type(eager), eager.name, eager.config())
    assert later.fingerprint == eager.fingerprint and later.reliability is not None
    assert detector_config(later) == detector_config(eager)  # a resume accepts either

    served = run(later, onnx=True)
    assert not later.is_built  # ONNX Runtime and the served head did all of it
    assert_same_outputs(run(eager, onnx=False), served)

    assert not later.model.training  # first use builds the network, ready for inference
    assert later.is_built
    assert_same_outputs(served, run(later, onnx=False))
    assert detector_config(later) == detector_config(eager)


def test_threads_that_need_the_network_at_once_get_one_built_network(checkpoint):
    Detector.load(checkpoint, device="cpu")
    later = Detector.load(checkpoint, device="cpu")
    later.use_channels_last()
    with ThreadPoolExecutor(4) as pool:
        models = list(pool.map(lambda _: later.model, range(8)))
    assert all(m is models[0] for m in models) and not models[0].training
    assert models[0].conv_stem.weight.is_contiguous(memory_format=torch.channels_last)


def test_a_network_first_needed_under_inference_mode_still_explains(checkpoint):
    """A deferred network first built inside ``torch.inference_mode`` (a predict) gets normal
    parameters, so a later pass with gradients through the network (a mid-layer CAM) works."""
    Detector.load(checkpoint, device="cpu")
    later = Detector.load(checkpoint, device="cpu")
    with torch.inference_mode():
        later.features(later.normalize(uint8_batch(1)))
    assert not any(p.is_inference() for p in later.model.parameters())
    engine = Engine([later], layers=("final", "mid"), device="cpu", compiled=False)
    assert engine.run(uint8_batch(2))[later.name].heatmaps["mid"].shape[0] == 2


def test_a_deferred_detector_copies_and_pickles(checkpoint):
    Detector.load(checkpoint, device="cpu")
    later = Detector.load(checkpoint, device="cpu")
    for other in (copy.deepcopy(later), pickle.loads(pickle.dumps(later))):
        assert not other.is_built
        assert torch.equal(
            other.model.state_dict()["classifier.weight"],
            Detector.load(checkpoint, device="cpu").model.state_dict()["classifier.weight"],
        )
    assert not later.is_built


def test_loads_eagerly_where_the_record_cannot_vouch(checkpoint, tmp_path, monkeypatch):
    fingerprint = Detector.load(checkpoint, device="cpu").fingerprint
    record = deferred.record_path(fingerprint)
    assert not Detector.load(checkpoint, device="cpu").is_built

    data = json.loads(record.read_text())  # another torch or timm than the one that wrote it
    record.write_text(json.dumps({**data, "environment": {**data["environment"], "timm": "0"}}))
    assert Detector.load(checkpoint, device="cpu").is_built
    assert not Detector.load(checkpoint, device="cpu").is_built  # that load wrote it again

    record.write_text("{not json")
    assert Detector.load(checkpoint, device="cpu").is_built

    for damaged in ({**data, "sha256": "0" * 64}, {k: v for k, v in data.items() if k != "class"}):
        record.write_text(json.dumps(damaged))  # another file's record, a damaged one
        assert Detector.load(checkpoint, device="cpu").is_built

    changed = Detector.load(checkpoint, device="cpu")  # other bytes: another fingerprint
    saved = changed.save(tmp_path / "changed.safetensors", note="fine-tuned")
    assert Detector.load(saved, device="cpu").is_built

    monkeypatch.setenv(deferred.DEFER_ENV, "0")
    assert Detector.load(checkpoint, device="cpu").is_built


def test_only_a_pooled_linear_head_is_served(checkpoint):
    detector = Detector.load(checkpoint, device="cpu")
    assert deferred._pooled_linear_classifier(detector) == "classifier"
    pool = torch.nn.Sequential(torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten())
    detector.model.global_pool = pool  # a head that is not average pooling + linear
    assert deferred._pooled_linear_classifier(detector) is None


def test_a_fresh_process_analyses_without_importing_timm(checkpoint, cache_dir, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i, pixels in enumerate(uint8_batch(2).permute(0, 2, 3, 1).numpy()):
        Image.fromarray(pixels).save(images / f"face {i}.png")
    script = textwrap.dedent(
        f"""
        import sys
        import deepfake_xai as dx
        result = dx.analyze({str(images)!r}, detectors=[{str(checkpoint)!r}], projection=None,
                            report=False, progress=False, faces=False, device="cpu",
                            out=sys.argv[1])
        print(sorted(result.predictions["status"]), "timm" in sys.modules)
        """
    )
    env = {**os.environ, "DEEPFAKE_XAI_CACHE": str(cache_dir)}
    outputs = [
        subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / f"out{i}")],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()[-1]
        for i in range(2)
    ]
    assert outputs == ["['ok', 'ok'] True", "['ok', 'ok'] False"]  # eager once, then served


def test_the_cache_keeps_the_most_recently_used_records(checkpoint, cache_dir, monkeypatch):
    monkeypatch.setattr(deferred, "KEEP_RECORDS", 2)
    folder = cache_dir / "loaded"
    folder.mkdir(parents=True)
    for age, name in enumerate(["recent.json", "old.json"]):
        (folder / name).write_text("{}")
        os.utime(folder / name, (1000 - age, 1000 - age))
    fingerprint = Detector.load(checkpoint, device="cpu").fingerprint
    assert sorted(f.name for f in folder.iterdir()) == [f"{fingerprint}.json", "recent.json"]

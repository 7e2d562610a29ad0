"""Decoding in threads (engines on the CPU): the same rows as decoding in the caller's thread,
in order, with a decoding error raised and nothing left running when the caller stops early."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from analysis_data import write_faces, write_noise

import deepfake_xai as dx
from deepfake_xai.analysis import analyze, loader
from deepfake_xai.faces import faces_available


@pytest.mark.skipif(not faces_available(), reason="OpenCV or the MTCNN models are missing")
def test_threads_give_the_rows_of_one_thread_in_order(tmp_path):
    """Faces found in three threads at once (each with its own networks), a broken file and
    pictures without a face among them."""
    write_faces(tmp_path / "in" / "real", "real", range(6))
    write_faces(tmp_path / "in" / "fake", "fake", range(6, 12))
    write_noise(tmp_path / "in" / "fake", 3, seed=4)
    (tmp_path / "in" / "fake" / "broken.png").write_bytes(b"not a png")
    torch.manual_seed(0)
    detector = dx.load_detector("efficientnet_b0", image_size=48, device="cpu")
    options = dict(detectors=[detector], projection=None, report=False, progress=False,
                   batch_size=2, device="cpu")  # fmt: skip
    one = analyze(tmp_path / "in", out=tmp_path / "one", num_workers=0, **options)
    three = analyze(tmp_path / "in", out=tmp_path / "three", num_workers=3, **options)
    a, b = one.predictions, three.predictions
    assert list(a["path"]) == list(b["path"]) and list(a["status"]) == list(b["status"])
    assert list(a["face_width"].fillna(-1)) == list(b["face_width"].fillna(-1))
    assert {"ok", "no_face", "unreadable"} <= set(b["status"])
    np.testing.assert_allclose(a["p_fake"], b["p_fake"], atol=1e-6)
    first = int(np.flatnonzero(b["status"] == "ok")[0])
    np.testing.assert_allclose(three.heatmap(first, detector.name, "final"),
                               one.heatmap(first, detector.name, "final"), atol=1e-3)  # fmt: skip


class SlowItems:
    """Positions that take a while to 'decode'; ``failing`` raises; ``started`` records."""

    def __init__(self, failing: int = -1):
        self.failing, self.started = failing, []
        self.lock = threading.Lock()
        self.decoder = SimpleNamespace(harmonizations=[None])

    def __getitem__(self, position: int) -> list[int]:
        with self.lock:
            self.started.append(position)
        time.sleep(0.01 * (position % 3))  # later blocks may finish first
        if position == self.failing:
            raise OSError(f"cannot decode {position}")
        return [position]


@pytest.fixture
def plain_collate(monkeypatch):
    monkeypatch.setattr(loader, "collate", lambda items, slots: [i for item in items for i in item])


def test_blocks_come_back_in_order_and_errors_reach_the_caller(plain_collate):
    plan = [[i, i + 1] for i in range(0, 40, 2)]
    assert list(loader.decode_in_threads(SlowItems(), plan, 3)) == plan
    with pytest.raises(OSError, match="cannot decode 7"):
        list(loader.decode_in_threads(SlowItems(failing=7), plan, 3))


def test_stopping_early_starts_nothing_more(plain_collate):
    items = SlowItems()
    plan = [[i] for i in range(100)]
    blocks = loader.decode_in_threads(items, plan, 2)
    assert next(blocks) == [0]
    blocks.close()
    started = len(items.started)
    time.sleep(0.05)
    assert started == len(items.started) <= 2 * loader.PREFETCH + 1
    assert not [t for t in threading.enumerate() if t.name.startswith("decode")]

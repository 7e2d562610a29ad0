"""TAEF2 pseudo-fakes: strict loading, reconstruction quality, odd sizes, resumable folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepfake_xai.images import load_image
from deepfake_xai.pseudofakes.autoencoder import (
    DECODER_FILE,
    ENCODER_FILE,
    WEIGHTS_ENV,
    TinyAutoencoder,
    load_tiny_autoencoder,
    reconstruct,
    reconstruct_folder,
)

TAEF2 = Path(__file__).resolve().parents[2] / "shared" / "models" / "taef2"


@pytest.fixture(scope="module")
def taef2() -> Path:
    """The shared TAEF2 weights folder, or a skip saying why."""
    if not TAEF2.is_dir():
        pytest.skip(f"TAEF2 weights not found at {TAEF2}")
    return TAEF2


@pytest.fixture(scope="module")
def model(taef2) -> TinyAutoencoder:
    return load_tiny_autoencoder(taef2)


def test_every_key_loads_strictly(model, taef2):
    for part, name in ((model.encoder, ENCODER_FILE), (model.decoder, DECODER_FILE)):
        state = torch.load(taef2 / name, weights_only=True)
        assert state.keys() == part.state_dict().keys()
        assert len(state) == 79
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert model.encode(torch.zeros(1, 3, 16, 24)).shape == (1, 32, 2, 3)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.double() - b.double()).pow(2).mean()
    return float(10 * torch.log10(255**2 / mse))


def test_real_face_reconstructs_faithfully(model, faces_sample):
    # Measured on the 250 val/real faces: mean 30.4 dB, min 24.8 dB; these four give 29.1, 31.5,
    # 30.4 and 33.8. A wrong value convention ([-1, 1]) gives 17-22 dB; a wrong GroupNorm group
    # count gives 25-29 dB on average.
    paths = sorted((faces_sample / "val" / "real").glob("*.jpg"))[:4]
    if len(paths) < 4:
        pytest.skip("fewer than four real faces in the shared sample")
    images = torch.stack(
        [torch.from_numpy(np.array(load_image(p))).permute(2, 0, 1) for p in paths]
    )
    out = reconstruct(model, images)
    scores = [_psnr(a, b) for a, b in zip(images, out, strict=True)]
    assert min(scores) > 26 and np.mean(scores) > 29.5, scores
    assert not torch.equal(out, images)


def test_odd_sizes_come_back_the_same_size(model):
    rng = torch.Generator().manual_seed(0)
    for shape in ((1, 3, 203, 250), (2, 3, 5, 3)):
        images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=rng)
        out = reconstruct(model, images)
        assert out.shape == images.shape and out.dtype == torch.uint8


def test_reconstruct_rejects_float_input(model):
    with pytest.raises(ValueError, match="uint8"):
        reconstruct(model, torch.zeros(1, 3, 8, 8))


def test_folder_resumes_and_records_unreadable_files(model, tmp_path):
    rng = np.random.default_rng(0)
    sources = []
    for folder, size in (("a", (24, 16)), ("b", (24, 16)), ("c", (16, 32))):
        (tmp_path / folder).mkdir()
        sources.append(tmp_path / folder / "face.png")  # same stem: names must not collide
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(sources[-1])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    sources.insert(1, bad)
    out = tmp_path / "out"

    written, failures = reconstruct_folder(sources, out, model, batch_size=2)

    assert len(set(written)) == 3 and all(p.parent == out for p in written)
    assert [p.stem.split("-")[0] for p in written] == ["face"] * 3
    for source, path in zip([s for s in sources if s != bad], written, strict=True):
        assert load_image(path).size == load_image(source).size
    assert [f[0] for f in failures] == [str(bad)] and failures[0][1]
    stamps = {p: p.stat().st_mtime_ns for p in out.iterdir()}

    again, failures_again = reconstruct_folder(sources, out, model, batch_size=2)

    assert again == written and len(failures_again) == 1
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == stamps


@pytest.fixture
def weights_copy(tmp_path, taef2) -> Path:
    folder = tmp_path / "taef2"
    folder.mkdir()
    for name in (ENCODER_FILE, DECODER_FILE):
        shutil.copy(taef2 / name, folder / name)
    return folder


def test_missing_file_is_named(weights_copy):
    (weights_copy / DECODER_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=DECODER_FILE):
        load_tiny_autoencoder(weights_copy)


def test_wrong_keys_and_shapes_are_named(weights_copy):
    path = weights_copy / DECODER_FILE
    state = torch.load(path, weights_only=True)
    del state["19.bias"]
    state["1.weight"] = torch.zeros(64, 16, 3, 3)
    torch.save(state, path)
    with pytest.raises(ValueError, match=DECODER_FILE) as caught:
        load_tiny_autoencoder(weights_copy)
    assert "19.bias" in str(caught.value) and "1.weight" in str(caught.value)


def test_unreadable_file_is_named(weights_copy):
    (weights_copy / ENCODER_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=ENCODER_FILE):
        load_tiny_autoencoder(weights_copy)


def test_folder_comes_from_the_environment(weights_copy, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV, str(weights_copy))
    assert isinstance(load_tiny_autoencoder(), TinyAutoencoder)
    monkeypatch.delenv(WEIGHTS_ENV)
    with pytest.raises(FileNotFoundError, match=WEIGHTS_ENV):
        load_tiny_autoencoder()

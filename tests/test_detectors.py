import json
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import deepfake_xai as dx
from deepfake_xai.detectors import CheckpointError, Detector
from deepfake_xai.detectors.checkpoint import read_metadata

SIZE = 64


@pytest.fixture(scope="module", params=["efficientnet_b0", "mobilenetv2_100"])
def detector(request):
    torch.manual_seed(0)
    return dx.load_detector(request.param, image_size=SIZE, device="cpu")


@pytest.fixture
def batch():
    return torch.randint(
        0, 256, (3, 3, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )


def test_contract(detector, batch):
    assert detector.labels == ("real", "fake")
    assert detector.input_size == SIZE
    x = detector.normalize(batch)
    fmap = detector.features(x)
    logit, embedding = detector.head(fmap)
    assert fmap.shape[:2] == (3, 1280) and logit.shape == (3,) and embedding.shape == (3, 1280)
    assert detector.module("final") is detector.model.bn2
    assert detector.module("mid") is detector.model.get_submodule("blocks.4")
    with pytest.raises(ValueError, match="no layer 'nope'.*final"):
        detector.module("nope")
    assert not any(p.requires_grad for p in detector.model.parameters())


def test_predict_and_embed_accept_every_input(detector, rgb_images, tmp_path):
    path = tmp_path / "face.png"
    rgb_images[0].save(path)
    inputs = [rgb_images[1], str(path), np.asarray(rgb_images[2])]
    probs = detector.predict_proba(inputs, batch_size=2)
    assert probs.shape == (3,) and ((probs >= 0) & (probs <= 1)).all()
    assert np.allclose(probs[1], detector.predict_proba([path])[0], atol=1e-4)
    assert detector.embed(inputs).shape == (3, 1280)


def test_save_load_roundtrip_identical(detector, batch, tmp_path):
    path = detector.save(tmp_path / "det", training={"epochs": 1}, metrics={"accuracy": 0.5})
    assert path.suffix == ".safetensors"
    loaded = Detector.load(path, device="cpu")
    assert type(loaded) is type(detector)
    assert loaded.harmonization == detector.harmonization
    assert loaded.metadata["metrics"] == {"accuracy": 0.5}
    torch.testing.assert_close(
        loaded.predict_proba(batch), detector.predict_proba(batch), rtol=0, atol=0
    )
    meta = read_metadata(path)
    assert (
        meta["architecture"] == detector.architecture and meta["package_version"] == dx.__version__
    )


def test_tampered_checkpoints_give_clear_errors(detector, tmp_path):
    path = detector.save(tmp_path / "good.safetensors")
    raw = path.read_bytes()
    header_len = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + header_len])

    wrong_arch = dict(header)
    meta = json.loads(header["__metadata__"]["deepfake_xai"])
    other = "mobilenetv2_100" if meta["architecture"] == "efficientnet_b0" else "efficientnet_b0"
    meta["architecture"] = other
    wrong_arch["__metadata__"] = {"deepfake_xai": json.dumps(meta)}
    blob = json.dumps(wrong_arch).encode()
    bad = tmp_path / "wrong-arch.safetensors"
    bad.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + header_len :])
    with pytest.raises(CheckpointError, match="wrong architecture"):
        Detector.load(bad)

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="not a safetensors checkpoint"):
        Detector.load(truncated)

    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.safetensors: not a safetensors"):
        Detector.load(text)

    state = {k: v.clone() for k, v in detector.model.state_dict().items()}
    state.pop("classifier.weight")
    state["conv_stem.weight"] = torch.zeros(1, 1, 1, 1)
    partial = tmp_path / "partial.safetensors"
    save_file(
        state,
        str(partial),
        metadata={"deepfake_xai": json.dumps({"format": "deepfake-xai/1", **detector.config()})},
    )
    with pytest.raises(
        CheckpointError, match=r"1 missing keys: classifier.weight.*shape mismatches: conv_stem"
    ):
        Detector.load(partial)

    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(1)}, str(bare))
    with pytest.raises(CheckpointError, match="without deepfake-xai metadata"):
        Detector.load(bare)

    with pytest.raises(CheckpointError, match="checkpoint not found"):
        Detector.load(tmp_path / "missing.safetensors")


def test_pickle_refused_unless_opted_in(detector, batch, tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save(detector.model.state_dict(), path)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        Detector.load(path)
    with pytest.raises(CheckpointError, match="pass detector=NAME"):
        Detector.load(path, allow_pickle=True)
    loaded = Detector.load(path, allow_pickle=True, detector=detector.name)
    loaded.apply_config(detector.config())
    torch.testing.assert_close(loaded.predict_proba(batch), detector.predict_proba(batch))


def test_hf_hub_id_loads_offline_from_cache(detector, batch, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--faces-detector"
    snapshot = repo / "snapshots" / sha
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    detector.save(snapshot / "model.safetensors")
    loaded = dx.load_detector(
        "hf-hub:acme/faces-detector", cache_dir=tmp_path / "hub", device="cpu"
    )
    torch.testing.assert_close(
        loaded.predict_proba(batch), detector.predict_proba(batch), rtol=0, atol=0
    )
    with pytest.raises(CheckpointError, match="hf-hub:acme/absent.*not in the local hub cache"):
        dx.load_detector("hf-hub:acme/absent", cache_dir=tmp_path / "hub")


def test_pretrained_file_loads_local_imagenet_weights(tmp_path):
    import timm

    source = timm.create_model("mobilenetv2_100", num_classes=1000)
    weights = tmp_path / "imagenet.pth"
    torch.save(source.state_dict(), weights)
    det = dx.load_detector("mobilenetv2", pretrained_file=weights, image_size=SIZE, device="cpu")
    torch.testing.assert_close(det.model.conv_stem.weight, source.conv_stem.weight)
    assert det.model.get_classifier().out_features == 1 and det.metadata["pretrained"]


def test_missing_pretrained_file_is_clear(tmp_path):
    from deepfake_xai.detectors import PretrainedWeightsUnavailable

    with pytest.raises(PretrainedWeightsUnavailable, match="pretrained_file=PATH"):
        dx.load_detector("efficientnet_b0", pretrained_file=tmp_path / "nope.pth")

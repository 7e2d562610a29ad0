"""Train-time degradations and self-blended pseudo-fakes: shapes, randomness, where they act."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepfake_xai.data import Augmentation
from deepfake_xai.degradations import Degradations, gaussian_blur, jpeg, rescale
from deepfake_xai.pseudofakes.sbi import blend_mask, self_blend


def _image(size: int = 64, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    smooth = torch.rand(3, size // 8, size // 8, generator=generator) * 255
    image = torch.nn.functional.interpolate(smooth[None], size=(size, size), mode="bilinear")[0]
    return image.round().to(torch.uint8)


def test_off_returns_the_image_itself():
    image = _image()
    assert Degradations(p=0.0)(image) is image


def test_always_on_changes_the_image_but_not_its_shape():
    image = _image()
    out = Degradations(p=1.0, blur_sigma=(1.0, 2.0), scale=(0.5, 0.5))(image)
    assert out.shape == image.shape and out.dtype == torch.uint8
    assert not torch.equal(out, image)


def test_the_same_seed_gives_the_same_degradation():
    image, degrade = _image(), Degradations(p=0.5)
    torch.manual_seed(3)
    first = [degrade(image) for _ in range(4)]
    torch.manual_seed(3)
    second = [degrade(image) for _ in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"p": 1.5},
        {"chain": 1.5},
        {"blur_sigma": (2.0, 1.0)},
        {"scale": (0.5, 1.5)},
        {"jpeg_quality": (0, 90)},
    ],
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        Degradations(**kwargs)


def test_each_step_keeps_size_and_removes_detail():
    array = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    for encoder in ("pillow", "opencv"):
        out = jpeg(array, 30, encoder=encoder)
        assert out.shape == array.shape and out.flags.writeable
    assert rescale(array, 0.5, "area", "cubic").shape == array.shape
    assert gaussian_blur(array, 0) is array
    assert gaussian_blur(array, 2.0).std() < array.std()


def test_augmentation_applies_degradations_last():
    augment = Augmentation(degradations=Degradations(p=1.0, scale=(0.25, 0.25)))
    out = augment(_image(32))
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8


LANDMARKS = [(40.0, 50.0), (88.0, 50.0), (64.0, 75.0), (46.0, 96.0), (82.0, 96.0)]


def test_blend_mask_covers_the_face_and_not_the_corners():
    rng = np.random.default_rng(0)
    for _ in range(10):
        mask = blend_mask((128, 128), np.asarray(LANDMARKS, np.float32), rng)
        assert mask.shape == (128, 128) and mask.min() >= 0 and mask.max() <= 1.0
        assert mask[75, 64] > 0.2
        assert mask[:8, :8].max() < 0.05 and mask[-8:, -8:].max() < 0.05


def test_self_blend_changes_the_face_and_keeps_the_frame():
    image = np.asarray(_image(128).permute(1, 2, 0))
    out = self_blend(image, LANDMARKS, np.random.default_rng(1))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)


def test_the_chain_encodes_the_small_copy_as_a_messaging_app_does():
    seen: list[tuple[int, ...]] = []

    def record(small: np.ndarray) -> np.ndarray:
        seen.append(small.shape)
        return small

    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert rescale(image, 0.5, between=record).shape == image.shape
    assert seen == [(32, 32, 3)]

    torch.manual_seed(0)
    chained = Degradations(p=0.0, chain=1.0, scale=(0.5, 0.5), jpeg_quality=(30, 30))
    out = chained(torch.from_numpy(image).permute(2, 0, 1).contiguous())
    assert out.shape == (3, 64, 64) and out.dtype == torch.uint8
    assert not torch.equal(out, torch.from_numpy(image).permute(2, 0, 1))
    assert chained.to_dict()["chain"] == 1.0

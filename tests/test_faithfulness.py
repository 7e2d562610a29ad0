"""Faithfulness (deletion, insertion, Average Drop) and localisation (pointing, energy) scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from models import SIZE, QuadrantDetector, noise_batch

from deepfake_xai.explainers.faithfulness import (
    average_drop,
    deletion_auc,
    energy_in_mask,
    increase_in_confidence,
    insertion_auc,
    masked_probabilities,
    perturbation_curve,
    pointing_game,
)

HALF = SIZE // 2


def quadrant_maps(n: int, size: int = SIZE, corner: str = "top_left") -> torch.Tensor:
    """Maps that are 1 on one quadrant (with a little noise to order its pixels) and 0 elsewhere."""
    maps = torch.zeros(n, size, size)
    half = size // 2
    rows, cols = (
        (slice(0, half), slice(0, half)) if corner == "top_left" else (slice(half, None),) * 2
    )
    maps[:, rows, cols] = 0.5 + 0.5 * torch.rand(
        n, half, half, generator=torch.Generator().manual_seed(3)
    )
    return maps


def quadrant_masks(n: int, size: int, corner: str) -> np.ndarray:
    masks = np.zeros((n, size, size), dtype=bool)
    half = size // 2
    if corner == "top_left":
        masks[:, :half, :half] = True
    else:
        masks[:, half:, half:] = True
    return masks


def random_maps(n: int, size: int = SIZE) -> torch.Tensor:
    return torch.rand(n, size, size, generator=torch.Generator().manual_seed(4))


def test_deletion_and_insertion_rank_the_correct_map_above_random_maps(
    quadrant: QuadrantDetector,
) -> None:
    x = noise_batch(quadrant, 8)
    good, noise = quadrant_maps(8), random_maps(8)
    good_deletion = deletion_auc(quadrant, x, good, "fake", steps=16)
    noise_deletion = deletion_auc(quadrant, x, noise, "fake", steps=16)
    good_insertion = insertion_auc(quadrant, x, good, "fake", steps=16)
    noise_insertion = insertion_auc(quadrant, x, noise, "fake", steps=16)
    assert good_deletion.shape == (8,) and good_insertion.shape == (8,)
    assert good_deletion.mean() + 0.2 < noise_deletion.mean()
    assert good_insertion.mean() > noise_insertion.mean() + 0.2
    assert ((good_deletion >= 0) & (good_deletion <= 1)).all()


def test_curves_start_and_end_at_the_image_and_the_baseline(quadrant: QuadrantDetector) -> None:
    x = noise_batch(quadrant, 3)
    deletion = perturbation_curve(quadrant, x, random_maps(3), "fake", mode="deletion", steps=4)
    insertion = perturbation_curve(quadrant, x, random_maps(3), "fake", mode="insertion", steps=4)
    full = torch.sigmoid(quadrant(x)).detach().numpy()
    assert deletion.shape == insertion.shape == (3, 5)
    np.testing.assert_allclose(deletion[:, 0], full, rtol=1e-5)
    np.testing.assert_allclose(insertion[:, -1], full, rtol=1e-5)
    np.testing.assert_allclose(deletion[:, -1], insertion[:, 0], rtol=1e-5)
    assert (deletion[:, -1] < 0.05).all(), "the fully blurred image reads as real"


def test_real_target_scores_one_minus_fake(quadrant: QuadrantDetector) -> None:
    x = noise_batch(quadrant, 2)
    fake = perturbation_curve(quadrant, x, random_maps(2), "fake", steps=4)
    real = perturbation_curve(quadrant, x, random_maps(2), "real", steps=4)
    np.testing.assert_allclose(real, 1 - fake, atol=1e-6)


def test_low_resolution_maps_are_upsampled_and_batching_does_not_matter(
    quadrant: QuadrantDetector,
) -> None:
    x = noise_batch(quadrant, 3)
    small = quadrant_maps(3, size=8)
    one = deletion_auc(quadrant, x, small, "fake", steps=8, batch_size=1)
    many = deletion_auc(quadrant, x, small.numpy(), "fake", steps=8, batch_size=64)
    np.testing.assert_allclose(one, many, rtol=1e-5)


def test_whole_run_goes_through_the_model_in_chunks(quadrant: QuadrantDetector) -> None:
    x = noise_batch(quadrant, 3)
    sizes: list[int] = []
    hook = quadrant.model.register_forward_pre_hook(lambda _m, args: sizes.append(len(args[0])))
    try:
        deletion_auc(quadrant, x, random_maps(3), "fake", steps=8, batch_size=10)
    finally:
        hook.remove()
    assert sizes == [10, 10, 7]


def test_average_drop_and_increase_in_confidence(quadrant: QuadrantDetector) -> None:
    assert average_drop([0.8, 0.5], [0.4, 0.6]) == pytest.approx(25.0)
    assert increase_in_confidence([0.8, 0.5], [0.4, 0.6]) == pytest.approx(50.0)
    x = noise_batch(quadrant, 4)
    ones = torch.ones(4, SIZE, SIZE)
    p_full, p_masked = masked_probabilities(quadrant, x, ones, "fake")
    np.testing.assert_allclose(p_full, p_masked, rtol=1e-6)
    assert average_drop(p_full, p_masked) == pytest.approx(0.0, abs=1e-6)
    good = masked_probabilities(quadrant, x, 1 - quadrant_maps(4, corner="bottom_right"), "fake")
    bad = masked_probabilities(quadrant, x, 1 - quadrant_maps(4), "fake")
    assert average_drop(*good) < average_drop(*bad)


def test_average_drop_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="equally long"):
        average_drop([0.5, 0.4], [0.5])


@pytest.mark.parametrize("size", [SIZE, 16])
def test_pointing_game_and_energy_with_masks_at_any_resolution(size: int) -> None:
    maps = quadrant_maps(3)
    right = quadrant_masks(3, size, "top_left")
    wrong = quadrant_masks(3, size, "bottom_right")
    assert pointing_game(maps, right).tolist() == [True] * 3
    assert pointing_game(maps, wrong).tolist() == [False] * 3
    assert (energy_in_mask(maps, right) > 0.9).all()
    assert (energy_in_mask(maps, wrong) < 0.1).all()


def test_pointing_game_tolerance_and_empty_masks() -> None:
    maps = torch.zeros(2, 32, 32)
    maps[:, 10, 10] = 1
    masks = np.zeros((2, 32, 32), dtype=bool)
    masks[0, 10, 13:] = True
    assert pointing_game(maps, masks).tolist() == [False, False]
    assert pointing_game(maps, masks, tolerance=3).tolist() == [True, False]
    assert energy_in_mask(torch.zeros(1, 8, 8), np.ones((1, 8, 8), bool)).tolist() == [0.0]


def test_shape_errors_name_the_problem(quadrant: QuadrantDetector) -> None:
    x = noise_batch(quadrant, 2)
    with pytest.raises(ValueError, match="got 3 maps for 2 images"):
        deletion_auc(quadrant, x, random_maps(3))
    with pytest.raises(ValueError, match=r"maps must be \(N, h, w\)"):
        deletion_auc(quadrant, x, random_maps(2)[0])
    with pytest.raises(ValueError, match="steps must be >= 1"):
        insertion_auc(quadrant, x, random_maps(2), steps=0)
    with pytest.raises(ValueError, match="baseline must be one of"):
        deletion_auc(quadrant, x, random_maps(2), baseline="white")
    with pytest.raises(ValueError, match=r"masks must be \(N, H, W\)"):
        pointing_game(random_maps(2), np.ones((8, 8), bool))
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(random_maps(2), np.ones((2, 8, 8), bool), tolerance=-1)

"""Self-blended images (Shiohara & Yamasaki, CVPR 2022): a real face blended with a slightly
altered copy of itself, labelled fake.

Face swaps and local edits leave their traces where a pasted face meets its host: a seam of
colour, sharpness and alignment. A self-blended image has exactly those traces and nothing
else (same person, same photo), so a detector that learns them cannot lean on identity or
style, and no fake data is needed. Here the mask comes from MTCNN's five landmarks (eyes, nose
tip, mouth corners): a hull around them or an ellipse, grown or shrunk, deformed and blurred,
scaled by a blend ratio. One of the two copies gets colour and sharpness changes, the source is
shifted and rescaled by a few per cent, and the source is pasted inside the mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)  # as in the paper: often a full paste


def self_blend(
    image: np.ndarray, landmarks: Sequence[tuple[float, float]], rng: np.random.Generator
) -> np.ndarray:
    """A self-blended copy of ``image`` (H, W, 3 uint8) with its five landmarks ``(x, y)``."""
    target = image.astype(np.float32)
    source = target.copy()
    if rng.random() < 0.5:
        source = _alter(source, rng)
    else:
        target = _alter(target, rng)
    source = _shift_scale(source, rng)
    mask = blend_mask(image.shape[:2], np.asarray(landmarks, dtype=np.float32), rng)
    blended = source * mask[..., None] + target * (1.0 - mask[..., None])
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def blend_mask(
    shape: tuple[int, int], landmarks: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """A soft face mask in [0, 1]: hull or ellipse from the landmarks, deformed and blurred."""
    import cv2

    height, width = shape
    left_eye, right_eye, _, mouth_left, mouth_right = landmarks
    eyes = (left_eye + right_eye) / 2
    mouth = (mouth_left + mouth_right) / 2
    down = mouth - eyes  # eyes to mouth
    across = right_eye - left_eye  # left eye to right eye
    grow = rng.uniform(0.85, 1.15)
    centre = (eyes + mouth) / 2
    mask = np.zeros((height, width), np.uint8)
    if rng.random() < 0.5:
        hull = np.stack(
            [
                left_eye - 0.5 * across - 0.7 * down,
                right_eye + 0.5 * across - 0.7 * down,
                right_eye + 0.6 * across + 0.5 * down,
                mouth_right + 0.35 * across + 0.7 * down,
                mouth + 1.1 * down,
                mouth_left - 0.35 * across + 0.7 * down,
                left_eye - 0.6 * across + 0.5 * down,
                eyes - 1.0 * down,
            ]
        )
        hull = centre + (hull - centre) * grow
        cv2.fillConvexPoly(mask, np.round(hull).astype(np.int32), 1)
    else:
        axes = (
            grow * 1.0 * float(np.linalg.norm(across)) + 1,
            grow * 1.5 * float(np.linalg.norm(down)) + 1,
        )
        angle = float(np.degrees(np.arctan2(across[1], across[0])))
        cv2.ellipse(mask, (centre, axes, angle), 1, thickness=-1)
    mask = _deform(mask.astype(np.float32), rng)
    return mask * rng.choice(BLEND_RATIOS)


def _deform(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Erode or dilate by a few pixels, warp the border with smooth noise, blur twice."""
    import cv2

    size = max(mask.shape)
    radius = int(rng.integers(1, max(2, size // 40)))
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    mask = (cv2.erode if rng.random() < 0.5 else cv2.dilate)(mask, kernel)
    noise = rng.normal(size=(8, 8, 2)).astype(np.float32) * size * 0.015
    flow = cv2.resize(noise, mask.shape[::-1], interpolation=cv2.INTER_CUBIC)
    grid_y, grid_x = np.indices(mask.shape, dtype=np.float32)
    mask = cv2.remap(mask, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR)
    for _ in range(2):
        sigma = rng.uniform(0.01, 0.05) * size
        mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma)
    peak = float(mask.max())
    return mask / peak if peak > 0 else mask


def _alter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour (RGB and brightness/contrast shifts) and sharpness (blur, down-up or sharpen)."""
    import cv2

    out = image + rng.uniform(-20, 20, size=3).astype(np.float32)
    contrast, brightness = rng.uniform(0.9, 1.1), rng.uniform(-0.1, 0.1) * 255
    out = (out - 127.5) * contrast + 127.5 + brightness
    kind = rng.integers(3)
    if kind == 0:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=rng.uniform(0.5, 1.5))
    elif kind == 1:
        height, width = out.shape[:2]
        factor = rng.uniform(0.4, 0.9)
        small = cv2.resize(out, (max(1, round(width * factor)), max(1, round(height * factor))))
        out = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    else:
        blurred = cv2.GaussianBlur(out, (0, 0), sigmaX=1.0)
        out = out + rng.uniform(0.3, 1.0) * (out - blurred)
    return np.clip(out, 0, 255)


def _shift_scale(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``image`` rescaled by 0.95-1.05 about its centre and shifted by up to 3 % of its size."""
    import cv2

    height, width = image.shape[:2]
    scale = rng.uniform(0.95, 1.05)
    shift = rng.uniform(-0.03, 0.03, size=2) * (width, height)
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), 0.0, scale)
    matrix[:, 2] += shift
    return cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)


def torch_rng() -> np.random.Generator:
    """A NumPy generator seeded from torch's, so a seeded DataLoader repeats its blends."""
    return np.random.default_rng(int(torch.randint(2**31 - 1, ())))

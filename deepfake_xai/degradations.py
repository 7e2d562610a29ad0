"""Everyday image processing as a train-time augmentation: blur, rescaling, JPEG re-encoding.

A detector trained on pristine images learns traces that a messaging app wipes out (a 1 px blur
or half size + JPEG 70 put the first shipped detector at chance). Following Wang et al. (2020,
"CNN-generated images are surprisingly easy to spot... for now": blur sigma 0-3, JPEG 30-100,
each with a probability) plus a down-then-up rescale, each step is applied independently with
probability ``p``, to real and fake images alike, so none of them can stand in for the label.
The JPEG step comes last, as on the web. A messaging app does it in another order: it shrinks
the photo and encodes the small copy, and the viewer enlarges it, so its JPEG blocks are
enlarged too; ``chain`` is the probability of that chain in place of the separate steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .preprocessing import jpeg_roundtrip

# OpenCV's interpolations for the down-then-up rescale (one is drawn per image and direction).
_INTERPOLATIONS = ("nearest", "linear", "cubic", "area", "lanczos4")


@dataclass(frozen=True)
class Degradations:
    """Blur, rescale and JPEG, each applied with probability ``p`` (0 turns them all off).

    ``blur_sigma``: Gaussian sigma range in pixels; ``scale``: the down-scaling factor range of
    the down-then-up rescale (with a random interpolation each way); ``jpeg_quality``: the
    quality range, encoded by Pillow or OpenCV at random (their quantisation and chroma
    handling differ). ``chain``: the probability of a messaging app's chain instead of the
    separate rescale and JPEG steps: shrink, encode as JPEG at the small size, enlarge (the
    same ranges of factor and quality).
    """

    p: float = 0.3
    blur_sigma: tuple[float, float] = (0.0, 3.0)
    scale: tuple[float, float] = (0.25, 1.0)
    jpeg_quality: tuple[int, int] = (30, 100)
    chain: float = 0.0

    def __post_init__(self) -> None:
        for name in ("p", "chain"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name, (low, high), floor in (
            ("blur_sigma", self.blur_sigma, 0.0),
            ("scale", self.scale, 1e-3),
            ("jpeg_quality", self.jpeg_quality, 1),
        ):
            if not floor <= low <= high:
                raise ValueError(f"{name} must be a range (low, high) with {floor} <= low <= high")
        if self.scale[1] > 1.0 or self.jpeg_quality[1] > 100:
            raise ValueError("scale must stay within (0, 1] and jpeg_quality within [1, 100]")

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """Degrade one uint8 ``(3, H, W)`` tensor; size and dtype are kept. Random draws come
        from torch's generator, so a seeded DataLoader repeats them."""
        if self.p <= 0 and self.chain <= 0:
            return image
        array = image.permute(1, 2, 0).numpy()
        changed = False
        if _chance(self.p):
            array = gaussian_blur(array, _uniform(*self.blur_sigma))
            changed = True
        if self.chain and _chance(self.chain):  # no draw without a chain: old seeds still hold
            quality, encoder = self._quality(), _pick(("pillow", "opencv"))
            factor = _uniform(*self.scale)
            array = rescale(
                array,
                factor,
                _pick(_INTERPOLATIONS),
                _pick(_INTERPOLATIONS),
                between=lambda small: jpeg(small, quality, encoder),
            )
            changed = True
        else:
            if _chance(self.p):
                factor = _uniform(*self.scale)
                array = rescale(array, factor, _pick(_INTERPOLATIONS), _pick(_INTERPOLATIONS))
                changed = True
            if _chance(self.p):
                array = jpeg(array, self._quality(), encoder=_pick(("pillow", "opencv")))
                changed = True
        if not changed:
            return image
        return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()

    def _quality(self) -> int:
        return int(torch.randint(self.jpeg_quality[0], self.jpeg_quality[1] + 1, ()))

    def to_dict(self) -> dict:
        return {
            "p": self.p,
            "blur_sigma": list(self.blur_sigma),
            "scale": list(self.scale),
            "jpeg_quality": list(self.jpeg_quality),
            "chain": self.chain,
        }


def degradations_for(p: float, chain: float = 0.0) -> Degradations | None:
    """The degradations of a training run's ``degrade`` and ``degrade_chain``, or None when
    both are off."""
    return Degradations(p=p, chain=chain) if p or chain else None


def gaussian_blur(array: np.ndarray, sigma: float) -> np.ndarray:
    """``array`` (H, W, 3 uint8) blurred with a Gaussian of ``sigma`` pixels (0: unchanged)."""
    import cv2

    if sigma <= 0:
        return array
    return cv2.GaussianBlur(array, (0, 0), sigmaX=sigma, sigmaY=sigma)


def rescale(
    array: np.ndarray,
    factor: float,
    down: str = "area",
    up: str = "cubic",
    between: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """``array`` shrunk by ``factor`` and brought back to its size, with the named OpenCV
    interpolations (``nearest``, ``linear``, ``cubic``, ``area``, ``lanczos4``); ``between``
    processes the small copy (a JPEG encoding, as a messaging app does)."""
    import cv2

    height, width = array.shape[:2]
    small = (max(1, round(width * factor)), max(1, round(height * factor)))
    if small == (width, height):
        return between(array) if between else array
    flags = {name: getattr(cv2, f"INTER_{name.upper()}") for name in _INTERPOLATIONS}
    shrunk = cv2.resize(array, small, interpolation=flags[down])
    if between:
        shrunk = between(shrunk)
    return cv2.resize(shrunk, (width, height), interpolation=flags[up])


def jpeg(array: np.ndarray, quality: int, encoder: str = "pillow") -> np.ndarray:
    """``array`` encoded as JPEG at ``quality`` by Pillow or OpenCV, and decoded again."""
    if encoder == "opencv":
        import cv2

        ok, data = cv2.imencode(".jpg", array[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError("OpenCV could not encode the image as JPEG")
        return cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1]
    return np.array(jpeg_roundtrip(Image.fromarray(array), quality))


def _chance(p: float) -> bool:
    return bool(torch.rand(()) < p)


def _uniform(low: float, high: float) -> float:
    return float(low + (high - low) * torch.rand(()))


def _pick(options: tuple[str, ...]) -> str:
    return options[int(torch.randint(len(options), ()))]

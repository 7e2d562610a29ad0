"""Everyday image degradations, applied to whole uint8 batches on the device and seeded.

Photometric perturbations (:data:`KINDS`: JPEG, Gaussian blur, down-and-up resize, Gaussian
noise and the "social media" chain of downscale + JPEG) act on decoded images before any
detector's harmonisation, identically for every detector; they keep size and dtype. Geometric
ones (:data:`GEOMETRIC`: small shifts and a horizontal flip) act on a detector's harmonised input
and can be undone on a heatmap, so maps before and after can be compared pixel for pixel.

Randomness (the noise) comes from a counter-based hash of (seed, image key, pixel), so an image
gets the same noise whatever its batch, its position in the batch or the device.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..explainers.attribution import gaussian_blur
from .jpeg import jpeg_compress

KINDS = ("jpeg", "blur", "resize", "noise", "social")
GEOMETRIC = ("shift", "flip")
DEFAULT_LEVELS: dict[str, tuple[str, ...]] = {
    "jpeg": ("90", "70", "50", "30"),
    "blur": ("0.5", "1", "2"),
    "resize": ("0.5", "0.25"),
    "noise": ("2", "5", "10"),
    "social": ("0.75:85", "0.5:70"),
    "shift": ("4", "8"),
    "flip": ("horizontal",),
}
GRAMMAR = (
    "KIND=LEVEL[,LEVEL...] with KIND one of: jpeg=QUALITY (1-100), blur=SIGMA (pixels), "
    "resize=SCALE (0-1, down then back up), noise=STD (grey levels, 0-255), "
    "social=SCALE:QUALITY (downscale, JPEG, back up), shift=PIXELS, flip=horizontal"
)
_MASK32 = 0xFFFFFFFF
_HASH_MULTIPLIER = 0x45D9F3B


@dataclass(frozen=True)
class Perturbation:
    """One perturbation at one level, e.g. ``Perturbation("jpeg", "30")``.

    ``kind="clean"`` is the identity (the reference every other level is compared with).
    """

    kind: str
    level: str = ""

    def __post_init__(self) -> None:
        if self.kind == "clean":
            return
        if self.kind not in KINDS + GEOMETRIC:
            raise ValueError(
                f"unknown perturbation {self.kind!r}; use one of {', '.join(KINDS + GEOMETRIC)}"
            )
        self._values()

    @property
    def label(self) -> str:
        """``"jpeg=30"``, or ``"clean"``."""
        return self.kind if self.kind == "clean" else f"{self.kind}={self.level}"

    @property
    def geometric(self) -> bool:
        return self.kind in GEOMETRIC

    def describe(self) -> str:
        """The level in words, e.g. "JPEG quality 30"."""
        if self.kind == "clean":
            return "no perturbation"
        values = self._values()
        return {
            "jpeg": lambda: f"JPEG quality {values[0]:g}",
            "blur": lambda: f"Gaussian blur, sigma {values[0]:g} px",
            "resize": lambda: f"downscaled to {values[0]:.0%} and back",
            "noise": lambda: f"Gaussian noise, std {values[0]:g} grey levels",
            "social": lambda: f"downscaled to {values[0]:.0%}, JPEG quality {values[1]:g}, back",
            "shift": lambda: f"shifted {values[0]:g} px right and down",
            "flip": lambda: "mirrored left-right",
        }[self.kind]()

    def _values(self) -> tuple[float, ...]:
        """The level as numbers, validated (an error names the perturbation and the range)."""
        if self.kind == "flip":
            if self.level != "horizontal":
                raise ValueError(f"flip={self.level}: the only flip level is 'horizontal'")
            return ()
        parts = self.level.split(":")
        try:
            values = tuple(float(p) for p in parts)
        except ValueError:
            raise ValueError(f"{self.label}: levels are numbers; expected {GRAMMAR}") from None
        expected = 2 if self.kind == "social" else 1
        if len(values) != expected or not all(math.isfinite(v) for v in values):
            raise ValueError(f"{self.label}: expected {GRAMMAR}")
        ok = {
            "jpeg": lambda q: 1 <= q <= 100 and q == int(q),
            "blur": lambda s: 0 < s <= 50,
            "resize": lambda s: 0 < s < 1,
            "noise": lambda s: 0 < s <= 255,
            "social": lambda s, q: 0 < s <= 1 and 1 <= q <= 100 and q == int(q),
            "shift": lambda p: 0 < p <= 32 and p == int(p),
        }[self.kind](*values)
        if not ok:
            raise ValueError(f"{self.label}: out of range; expected {GRAMMAR}")
        return values

    # -- photometric ------------------------------------------------------------------------
    def apply(self, images: torch.Tensor, keys: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Perturb uint8 ``(B, 3, H, W)`` decoded images; ``keys`` (B,) identify each image
        for the noise. Returns uint8 of the same shape on the same device."""
        if self.kind == "clean":
            return images
        if self.geometric:
            raise ValueError(f"{self.label} is geometric: use transform() on a detector's input")
        values = self._values()
        if self.kind == "jpeg":
            return jpeg_compress(images, int(values[0]))
        if self.kind == "blur":
            return _to_uint8(gaussian_blur(images.float(), values[0]))
        if self.kind == "resize":
            return _down_up(images, values[0], lambda small: small)
        if self.kind == "noise":
            noise = gaussian_noise(keys, tuple(images.shape[1:]), seed, images.device)
            return _to_uint8(images.float() + values[0] * noise)
        scale, quality = values
        return _down_up(images, scale, lambda small: jpeg_compress(small, int(quality)))

    # -- geometric --------------------------------------------------------------------------
    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """A shifted or flipped copy of a float ``(B, C, H, W)`` batch (reflected borders)."""
        if self.kind == "flip":
            return x.flip(-1)
        if self.kind == "shift":
            p = int(self._values()[0])
            padded = F.pad(x, (p, 0, p, 0), mode="reflect")
            return padded[..., : x.shape[-2], : x.shape[-1]]
        raise ValueError(f"{self.label} is not geometric")

    def align(self, perturbed: torch.Tensor, clean: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Map ``(B, H, W)`` heatmaps of transformed inputs back onto the clean ones: returns
        ``(clean, perturbed)`` cropped to the region both show, pixel for pixel."""
        if self.kind == "flip":
            return clean, perturbed.flip(-1)
        if self.kind == "shift":
            p = int(self._values()[0])
            return clean[..., :-p, :-p], perturbed[..., p:, p:]
        return clean, perturbed


def parse_perturbations(specs: Iterable[str] | None) -> list[Perturbation]:
    """Perturbations from ``["jpeg=30,50", "blur=1"]`` (:data:`GRAMMAR`); a bare kind such as
    ``"jpeg"`` takes its default levels; ``None`` or ``[]`` gives every default."""
    specs = list(specs or [])
    if not specs:
        return [Perturbation(k, lvl) for k, levels in DEFAULT_LEVELS.items() for lvl in levels]
    out: list[Perturbation] = []
    for spec in specs:
        kind, _, levels = str(spec).strip().partition("=")
        kind = kind.strip().lower()
        if kind not in DEFAULT_LEVELS:
            raise ValueError(
                f"--perturb {spec!r}: unknown perturbation {kind!r}; expected {GRAMMAR}"
            )
        chosen = [lvl.strip() for lvl in levels.split(",") if lvl.strip()] if levels else None
        for level in chosen or DEFAULT_LEVELS[kind]:
            out.append(Perturbation(kind, _canonical(kind, level)))
    return list(dict.fromkeys(out))


def split_kinds(perturbations: Sequence[Perturbation]) -> tuple[list, list]:
    """(photometric, geometric) perturbations, in their given order."""
    return [p for p in perturbations if not p.geometric], [p for p in perturbations if p.geometric]


def gaussian_noise(
    keys: torch.Tensor, shape: tuple[int, ...], seed: int, device: torch.device
) -> torch.Tensor:
    """Standard normal noise ``(B, *shape)``, a pure function of (seed, key, position)."""
    first = uniform_noise(keys, shape, seed, device, salt=1)
    second = uniform_noise(keys, shape, seed, device, salt=2)
    return torch.sqrt(-2.0 * torch.log(first)) * torch.cos(2 * math.pi * second)


def uniform_noise(
    keys: torch.Tensor, shape: tuple[int, ...], seed: int, device: torch.device, salt: int = 0
) -> torch.Tensor:
    """Uniform noise in (0, 1), ``(B, *shape)``, a pure function of (seed, salt, key, position)."""
    keys = torch.as_tensor(keys, device=device).long().reshape(-1, *([1] * len(shape)))
    stream = _hash32(_hash32((keys & _MASK32) ^ (seed & _MASK32)) ^ (salt * 0x9E3779B9 & _MASK32))
    position = torch.arange(math.prod(shape), device=device, dtype=torch.int64).reshape(shape)
    bits = _hash32(_hash32(position) ^ stream)
    return (bits.float() + 0.5) / 2.0**32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mix (no multiplication overflows int64); bijective on [0, 2**32)."""
    x = (((x >> 16) ^ x) * _HASH_MULTIPLIER) & _MASK32
    x = (((x >> 16) ^ x) * _HASH_MULTIPLIER) & _MASK32
    return (x >> 16) ^ x


def _down_up(images: torch.Tensor, scale: float, middle) -> torch.Tensor:
    """Downscale by ``scale`` (antialiased bicubic), apply ``middle``, upscale back."""
    height, width = images.shape[-2:]
    small = (max(1, round(height * scale)), max(1, round(width * scale)))
    down = _to_uint8(F.interpolate(images.float(), size=small, mode="bicubic", antialias=True))
    return _to_uint8(
        F.interpolate(middle(down).float(), size=(height, width), mode="bicubic", antialias=True)
    )


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def _canonical(kind: str, level: str) -> str:
    """One spelling per level (``"1.0"`` and ``"1"`` are the same blur)."""
    if kind == "flip":
        return level.lower()
    try:
        return ":".join(f"{float(part):g}" for part in level.split(":"))
    except ValueError:
        return level

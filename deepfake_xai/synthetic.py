"""The built-in offline face set: procedurally drawn faces with ground-truth artifact masks.

Real faces are drawn from a seeded random generator (head, hair, eyes, brows, nose, mouth,
ears, lighting, pose, background, camera noise). Fakes are drawn by the same generator from
different seeds, then receive one localised generation artifact whose exact pixel mask is kept,
so explanations can be scored against the truth. Both classes are saved identically, so the
only signal is the artifact itself.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import pathlib
import re
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache, partial

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ARTIFACTS: tuple[str, ...] = ("checkerboard", "spectral", "seam", "blur_sharpen")
REGIONS: tuple[str, ...] = ("eyes", "mouth", "nose", "forehead", "cheek")
LABELS: tuple[str, ...] = ("real", "fake")

Box = tuple[int, int, int, int]

_SUPERSAMPLE = 2
_TRAIN, _VAL = 0.8, 0.1  # the rest is test
_FORMATS = {"png": "png", "jpeg": "jpg", "jpg": "jpg"}
_PNG_LEVEL = 1  # fast; camera noise makes the stronger levels gain little
_ID_FILE = re.compile(r"^\d{6,}\.(png|jpg)$")

_SKIN = np.array(
    [
        (250, 224, 204),
        (240, 200, 170),
        (222, 176, 138),
        (192, 138, 98),
        (150, 100, 66),
        (98, 64, 44),
    ],
    dtype=np.float64,
)
_HAIR = np.array(
    [
        (22, 18, 16),
        (52, 36, 26),
        (92, 60, 38),
        (140, 96, 56),
        (196, 164, 108),
        (128, 58, 30),
        (150, 146, 142),
        (222, 214, 200),
    ],
    dtype=np.float64,
)
_IRIS = np.array(
    [(62, 40, 22), (104, 70, 38), (58, 98, 146), (76, 114, 80), (118, 104, 66), (36, 28, 24)],
    dtype=np.float64,
)
_HAIR_STYLES = ("short", "long", "bangs", "bun", "bald")


@dataclass(frozen=True, eq=False)
class FaceSample:
    """One generated image with its label and, for fakes, where and what the artifact is."""

    image: Image.Image
    label: str
    mask: np.ndarray | None
    artifact: str | None
    region: str | None


@dataclass
class SyntheticSummary:
    """Where a generated set lives and how many images of each class it holds."""

    root: pathlib.Path
    n_real: int
    n_fake: int
    manifest: pathlib.Path


@dataclass(frozen=True)
class _Face:
    """Geometry of one face, in supersampled pixels, before the pose rotation."""

    cx: float
    cy: float
    a: float
    b: float
    angle: float


def _rgb(color: np.ndarray) -> tuple[int, int, int]:
    c = np.clip(np.round(color), 0, 255).astype(int)
    return int(c[0]), int(c[1]), int(c[2])


def _pick_color(rng: np.random.Generator, palette: np.ndarray, jitter: float) -> np.ndarray:
    """A colour interpolated between two neighbouring palette entries, with a little jitter."""
    t = rng.uniform(0, len(palette) - 1)
    i = min(int(t), len(palette) - 2)
    base = palette[i] + (t - i) * (palette[i + 1] - palette[i])
    return np.clip(base + rng.normal(0, jitter, 3), 0, 255)


@lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel row and column coordinates, cached and read-only."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


def _smooth_noise(
    rng: np.random.Generator, n: int, cells: tuple[int, int], channels: int
) -> np.ndarray:
    """Smooth noise of unit scale: a coarse (rows, cols) random grid upsampled bicubically."""
    coarse = np.clip(128 + 40 * rng.normal(size=(*cells, channels)), 0, 255).astype(np.uint8)
    img = Image.fromarray(coarse[..., 0] if channels == 1 else coarse)
    up = np.asarray(img.resize((n, n), Image.Resampling.BICUBIC), dtype=np.float32)
    return (up.reshape(n, n, channels) - 128.0) / 40.0


def _background(rng: np.random.Generator, n: int) -> np.ndarray:
    """A muted two-colour gradient with low-frequency blotches, as float RGB."""
    grey = rng.uniform(40, 220)
    c0 = grey + rng.uniform(0.1, 0.6) * (rng.uniform(20, 235, 3) - grey)
    c1 = c0 + rng.normal(0, 25, 3)
    theta = rng.uniform(0, 2 * math.pi)
    yy, xx = _grid(n, n)
    t = np.clip((xx / n - 0.5) * math.cos(theta) + (yy / n - 0.5) * math.sin(theta) + 0.5, 0, 1)
    bg = c0 + t[..., None] * (c1 - c0)
    bg += rng.uniform(8, 22) * _smooth_noise(rng, n, (4, 4), 3)
    bg += rng.uniform(3, 9) * _smooth_noise(rng, n, (11, 11), 1)
    return bg


def _hair_polygon(f: _Face, hairline: float, part: float) -> list[tuple[float, float]]:
    """Hair over the crown: the enlarged top of the head, closed by a curved hairline."""
    t0 = math.asin(0.15)
    outer = [
        (f.cx + 1.05 * f.a * math.cos(t), f.cy + 1.1 * f.b * math.sin(t))
        for t in np.linspace(math.pi + t0, 2 * math.pi - t0, 40)
    ]
    side_y = f.cy - 0.15 * f.b
    top_y = f.cy - hairline * f.b
    inner = []
    for x in np.linspace(0.97, -0.97, 30):
        u = abs(x - part) / (1 + abs(part))
        inner.append((f.cx + x * f.a, top_y + (side_y - top_y) * u**2.2))
    return outer + inner


def _face_outline(f: _Face, jaw: float) -> list[tuple[float, float]]:
    """An egg-shaped head outline: an ellipse whose lower half narrows towards the chin."""
    pts = []
    for t in np.linspace(0, 2 * math.pi, 72, endpoint=False):
        narrow = 1 - jaw * max(0.0, math.sin(t)) ** 2
        pts.append((f.cx + f.a * math.cos(t) * narrow, f.cy + f.b * math.sin(t)))
    return pts


def _draw_eyes(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    f: _Face,
    skin: np.ndarray,
    brow: np.ndarray,
) -> tuple[float, float, float, float]:
    """Both eyes and brows; returns (eye_y, eye_dx, eye_half_width, brow_top)."""
    a, b = f.a, f.b
    ey = f.cy - rng.uniform(0.02, 0.12) * b
    ex = rng.uniform(0.36, 0.44) * a
    ew = rng.uniform(0.16, 0.2) * a
    eh = ew * rng.uniform(0.42, 0.55)
    white = _rgb(np.array([244, 240, 234]) + rng.normal(0, 4, 3))
    iris = _rgb(_pick_color(rng, _IRIS, 8))
    ri = eh * rng.uniform(0.85, 1.0)
    gaze = rng.uniform(-0.2, 0.2) * ew
    lid = _rgb(np.minimum(skin, brow) * 0.45)
    bt = rng.uniform(0.08, 0.13) * a
    lift = rng.uniform(0.35, 0.6) * b
    brow_top = ey - lift
    for side in (-1, 1):
        x = f.cx + side * ex
        draw.ellipse((x - ew, ey - eh, x + ew, ey + eh), fill=white)
        ix = x + gaze
        draw.ellipse((ix - ri, ey - ri, ix + ri, ey + ri), fill=iris)
        rp = ri * 0.45
        draw.ellipse((ix - rp, ey - rp, ix + rp, ey + rp), fill=(14, 10, 10))
        hl = ri * 0.18
        hx, hy = ix - 0.35 * ri, ey - 0.35 * ri
        draw.ellipse((hx - hl, hy - hl, hx + hl, hy + hl), fill=(250, 250, 250))
        # Eyelids hide the top and bottom of the iris, as real lids do.
        draw.chord(
            (x - ew * 1.3, ey - eh * 3.2, x + ew * 1.3, ey - eh * 0.75), 0, 180, fill=_rgb(skin)
        )
        draw.chord(
            (x - ew * 1.3, ey + eh * 0.8, x + ew * 1.3, ey + eh * 3.0), 180, 360, fill=_rgb(skin)
        )
        draw.arc(
            (x - ew, ey - eh, x + ew, ey + eh), 185, 355, fill=lid, width=max(2, int(eh * 0.3))
        )
        draw.arc((x - ew, ey - eh, x + ew, ey + eh), 20, 160, fill=_rgb(skin * 0.78), width=1)
        arch = [
            (x + side * u * ew, ey - lift + 0.1 * lift * u * u) for u in np.linspace(-1, 1.3, 6)
        ]
        draw.line(arch, fill=_rgb(brow), width=int(bt), joint="curve")
    return ey, ex, ew, brow_top


def _draw_nose(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, f: _Face, skin: np.ndarray, ey: float
) -> float:
    """A shaded nose bridge, tip and nostrils; returns the nose tip's y."""
    a, b = f.a, f.b
    ny = f.cy + rng.uniform(0.22, 0.32) * b
    nw = rng.uniform(0.13, 0.18) * a
    side = rng.choice((-1, 1))
    draw.line(
        [(f.cx + side * 0.3 * nw, ey + 0.1 * b), (f.cx + side * 0.5 * nw, ny - 0.4 * nw)],
        fill=_rgb(skin * 0.84),
        width=max(2, int(0.07 * a)),
    )
    draw.ellipse((f.cx - nw, ny - 0.55 * nw, f.cx + nw, ny + 0.35 * nw), fill=_rgb(skin * 0.9))
    draw.ellipse(
        (f.cx - 0.45 * nw, ny - 0.6 * nw, f.cx + 0.45 * nw, ny + 0.1 * nw), fill=_rgb(skin * 1.04)
    )
    for s in (-1, 1):
        x = f.cx + s * 0.5 * nw
        draw.ellipse(
            (x - 0.24 * nw, ny - 0.02 * nw, x + 0.24 * nw, ny + 0.2 * nw), fill=_rgb(skin * 0.5)
        )
    return ny


def _draw_mouth(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, f: _Face, skin: np.ndarray
) -> tuple[float, float]:
    """Upper and lower lips with a smile curve; returns (mouth_y, half_width)."""
    a, b = f.a, f.b
    my = f.cy + rng.uniform(0.54, 0.62) * b
    mw = rng.uniform(0.28, 0.38) * a
    ut = rng.uniform(0.07, 0.1) * b
    lt = ut * rng.uniform(1.0, 1.4)
    smile = rng.uniform(-0.02, 0.06) * b
    lip = _rgb(skin + rng.uniform(0.35, 0.6) * (np.array([160, 60, 68]) - skin))
    upper = [
        (f.cx - mw, my - smile),
        (f.cx - 0.5 * mw, my - ut),
        (f.cx - 0.12 * mw, my - 0.85 * ut),
        (f.cx, my - 0.65 * ut),
        (f.cx + 0.12 * mw, my - 0.85 * ut),
        (f.cx + 0.5 * mw, my - ut),
        (f.cx + mw, my - smile),
        (f.cx, my + 0.1 * ut),
    ]
    draw.chord((f.cx - 0.88 * mw, my - lt, f.cx + 0.88 * mw, my + lt), 0, 180, fill=lip)
    draw.polygon(upper, fill=lip)
    draw.line(
        [(f.cx - mw, my - smile), (f.cx, my + 0.1 * ut), (f.cx + mw, my - smile)],
        fill=_rgb(np.array(lip) * 0.45),
        width=max(2, int(0.25 * ut)),
        joint="curve",
    )
    return my, mw


def _draw_hair_and_body(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, f: _Face, colors: dict, style: str
) -> None:
    """What lies behind the face: long hair, neck, shoulders, the back of the hair, the ears."""
    a, b = f.a, f.b
    hair, skin = _rgb(colors["hair"]), colors["skin"]
    drop = f.cy + rng.uniform(1.0, 1.6) * b
    if style == "long":
        box = (f.cx - 1.2 * a, f.cy - 0.6 * b, f.cx + 1.2 * a, drop)
        draw.rounded_rectangle(box, radius=0.4 * a, fill=hair)
    draw.rectangle(
        (f.cx - 0.42 * a, f.cy + 0.4 * b, f.cx + 0.42 * a, 4 * b + f.cy), fill=_rgb(skin * 0.8)
    )
    shoulders = (f.cx - 2.1 * a, f.cy + 1.22 * b, f.cx + 2.1 * a, f.cy + 1.22 * b + 2.4 * a)
    draw.ellipse(shoulders, fill=_rgb(colors["cloth"]))
    if style == "long":
        for x0 in (f.cx - 1.2 * a, f.cx + 0.7 * a):
            draw.rectangle((x0, f.cy + 0.9 * b, x0 + 0.5 * a, drop), fill=hair)
    if style != "bald":
        top = rng.uniform(1.1, 1.22)
        draw.ellipse((f.cx - 1.08 * a, f.cy - top * b, f.cx + 1.08 * a, f.cy + 0.3 * b), fill=hair)
    if style == "bun":
        r = rng.uniform(0.35, 0.5) * a
        draw.ellipse(
            (f.cx - r, f.cy - 1.1 * b - 1.6 * r, f.cx + r, f.cy - 1.1 * b + 0.4 * r), fill=hair
        )
    for s in (-1, 1):
        x, y = f.cx + s * 0.96 * a, f.cy + 0.02 * b
        draw.ellipse(
            (x - 0.17 * a, y - 0.2 * b, x + 0.17 * a, y + 0.16 * b), fill=_rgb(skin * 0.93)
        )
        draw.ellipse(
            (x - 0.08 * a, y - 0.12 * b, x + 0.08 * a, y + 0.08 * b), fill=_rgb(skin * 0.78)
        )


def _draw_head(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, f: _Face
) -> tuple[dict[str, tuple[float, float, float, float]], tuple[int, int, int]]:
    """Everything from the shoulders up; returns unrotated region boxes and the hair colour."""
    a, b = f.a, f.b
    colors = {
        "skin": _pick_color(rng, _SKIN, 6),
        "hair": _pick_color(rng, _HAIR, 8),
        "cloth": rng.uniform(15, 235, 3),
    }
    skin = colors["skin"]
    style = _HAIR_STYLES[rng.choice(len(_HAIR_STYLES), p=(0.3, 0.3, 0.17, 0.13, 0.1))]
    _draw_hair_and_body(draw, rng, f, colors, style)
    draw.polygon(_face_outline(f, rng.uniform(0.05, 0.2)), fill=_rgb(skin))
    hairline = rng.uniform(0.5, 0.68)
    if style != "bald":
        line = hairline - (0.2 if style == "bangs" else 0.0)
        draw.polygon(_hair_polygon(f, line, rng.uniform(-0.3, 0.3)), fill=_rgb(colors["hair"]))
    brow = colors["hair"] * 0.75 if style != "bald" else _HAIR[1]
    ey, ex, ew, brow_top = _draw_eyes(draw, rng, f, skin, brow)
    ny = _draw_nose(draw, rng, f, skin, ey)
    my, mw = _draw_mouth(draw, rng, f, skin)
    ccx = f.cx + rng.choice((-1, 1)) * 0.55 * a
    ccy = (ny + my) / 2 - 0.05 * b
    boxes = {
        "eyes": (f.cx - ex - 1.3 * ew, ey - 0.9 * ew, f.cx + ex + 1.3 * ew, ey + 0.9 * ew),
        "mouth": (f.cx - 1.15 * mw, my - 0.18 * b, f.cx + 1.15 * mw, my + 0.18 * b),
        "nose": (f.cx - 0.3 * a, ey + 0.12 * b, f.cx + 0.3 * a, ny + 0.12 * b),
        "forehead": (f.cx - 0.6 * a, f.cy - (hairline + 0.05) * b, f.cx + 0.6 * a, brow_top),
        "cheek": (ccx - 0.26 * a, ccy - 0.2 * b, ccx + 0.26 * a, ccy + 0.2 * b),
    }
    return boxes, _rgb(colors["hair"])


def _texture_hair(layer: Image.Image, rng: np.random.Generator, hair: tuple[int, int, int]) -> None:
    """Give the flat hair areas strands (noise stretched along the vertical), in place."""
    n = layer.width
    arr = np.asarray(layer)
    is_hair = (arr[..., 3] > 0) & (arr[..., 0] == hair[0])
    is_hair &= (arr[..., 1] == hair[1]) & (arr[..., 2] == hair[2])
    gain = 1 + rng.uniform(0.12, 0.22) * _smooth_noise(rng, n, (6, n // 3), 1)
    texture = np.clip(gain * np.asarray(hair, dtype=np.float32), 0, 255).astype(np.uint8)
    layer.paste(Image.fromarray(texture, "RGB"), mask=Image.fromarray(is_hair))


def _shade(rng: np.random.Generator, f: _Face, size: int) -> np.ndarray:
    """Light factors (H, W, 3) for the head as a rounded surface under a mostly frontal light."""
    yy, xx = _grid(size, size)
    t = math.radians(f.angle)
    px = xx + 0.5 - f.cx / _SUPERSAMPLE
    py = yy + 0.5 - f.cy / _SUPERSAMPLE
    dx = (px * math.cos(t) - py * math.sin(t)) * _SUPERSAMPLE / (1.2 * f.a)
    dy = (px * math.sin(t) + py * math.cos(t)) * _SUPERSAMPLE / (1.2 * f.b)
    d2 = dx * dx + dy * dy
    r2 = np.minimum(d2, 1.0)
    scale = np.sqrt(r2 / np.maximum(d2, 1e-6))
    light = np.array([rng.uniform(-0.7, 0.7), rng.uniform(-0.6, 0.2), 1.0])
    light /= np.linalg.norm(light)
    lambert = np.clip((dx * light[0] + dy * light[1]) * scale + np.sqrt(1 - r2) * light[2], 0, 1)
    ambient = rng.uniform(0.45, 0.65)
    tint = (1 + rng.normal(0, 0.03, 3)) * rng.uniform(0.95, 1.15)
    return (ambient + (1 - ambient) * lambert)[..., None] * tint.astype(np.float32)


def _rotate_box(box, f: _Face, ss: int, size: int) -> Box:
    """The pixel bounding box, at output size, of a box rotated with the face about its centre."""
    x0, y0, x1, y1 = box
    t = math.radians(f.angle)
    c, s = math.cos(t), math.sin(t)
    xs, ys = [], []
    for x, y in ((x0, y0), (x1, y0), (x0, y1), (x1, y1)):
        xs.append(f.cx + (x - f.cx) * c + (y - f.cy) * s)
        ys.append(f.cy - (x - f.cx) * s + (y - f.cy) * c)
    x0, x1 = min(xs) / ss, max(xs) / ss
    y0, y1 = min(ys) / ss, max(ys) / ss
    lo, hi = (
        (lambda v: min(max(math.floor(v), 0), size - 1)),
        (lambda v: min(max(math.ceil(v), 1), size)),
    )
    return lo(x0), lo(y0), hi(x1), hi(y1)


def draw_face(
    rng: np.random.Generator, size: int = 128
) -> tuple[Image.Image, dict[str, tuple[int, int, int, int]]]:
    """A random face and the bounding boxes (x0, y0, x1, y1) of its facial regions."""
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    n = size * _SUPERSAMPLE
    scale = rng.uniform(0.9, 1.1)
    a = 0.22 * n * scale * rng.uniform(0.93, 1.07)
    f = _Face(
        cx=n * (0.5 + rng.uniform(-0.05, 0.05)),
        cy=n * (0.47 + rng.uniform(-0.03, 0.03)),
        a=a,
        b=a * rng.uniform(1.25, 1.4),
        angle=rng.uniform(-8, 8),
    )
    layer = Image.new("RGBA", (n, n), (0, 0, 0, 0))
    boxes, hair = _draw_head(ImageDraw.Draw(layer), rng, f)
    _texture_hair(layer, rng, hair)
    layer = layer.convert("RGBa")  # premultiplied, so that resampling does not darken edges
    layer = layer.rotate(f.angle, resample=Image.Resampling.BILINEAR, center=(f.cx, f.cy))
    layer = layer.resize((size, size), Image.Resampling.LANCZOS).filter(
        ImageFilter.GaussianBlur(0.6)
    )
    premul = np.asarray(layer, dtype=np.float32)
    alpha = premul[..., 3:] / 255.0
    pixels = _background(rng, size) * (1 - alpha) + premul[..., :3] * _shade(rng, f, size)
    sigma = rng.uniform(1.0, 2.5)
    noise = rng.normal(0, sigma, (size, size, 1)) + rng.normal(0, 0.35 * sigma, (size, size, 3))
    out = np.clip(np.round(pixels + noise), 0, 255).astype(np.uint8)
    regions = {k: _rotate_box(v, f, _SUPERSAMPLE, size) for k, v in boxes.items()}
    return Image.fromarray(out, "RGB"), regions


def _patch_weight(
    rng: np.random.Generator, box: Box, shape: tuple[int, int], hard: bool
) -> np.ndarray:
    """A rounded patch 24-42 % of the image side, centred on the region, feathered inwards."""
    size = max(shape)
    x0, y0, x1, y1 = box
    hw = float(np.clip(0.5 * (x1 - x0) * rng.uniform(1.1, 1.4), 0.16 * size, 0.21 * size))
    hh = float(np.clip(0.5 * (y1 - y0) * rng.uniform(1.1, 1.4), 0.12 * size, 0.21 * size))
    px = (x0 + x1) / 2 + rng.uniform(-0.08, 0.08) * (x1 - x0)
    py = (y0 + y1) / 2 + rng.uniform(-0.08, 0.08) * (y1 - y0)
    p = rng.choice((2.0, 4.0))
    yy, xx = _grid(*shape)
    d = (np.abs((xx + 0.5 - px) / hw) ** p + np.abs((yy + 0.5 - py) / hh) ** p) ** (1 / p)
    if hard:
        return (d < 1).astype(np.float32)
    feather = 1.5 * max(1, size // 128)
    return np.clip((1 - d) * min(hw, hh) / feather, 0, 1).astype(np.float32)


def _channel_gains(rng: np.random.Generator) -> np.ndarray:
    """Slightly different strengths per colour channel, so artifacts are not pure grey."""
    return 1 + rng.uniform(-0.15, 0.15, 3)


def _checkerboard(arr: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    """Upsampling residue: a strong checkerboard of period ~8 px at 128 px, plus a kernel imprint.

    The period scales with the image, so the pattern survives a downscale, a resized crop and a
    small rotation; a weaker half-period checkerboard and an uneven kernel ride on top.
    """
    cell = max(1, round(2 * scale))
    steps = np.roll([1.0, 1.0, -1.0, -1.0], rng.integers(4))
    tile = rng.uniform(45, 55) * np.outer(steps, np.roll(steps, rng.integers(4)))
    tile += rng.uniform(10, 15) * (np.indices((4, 4)).sum(0) % 2 * 2 - 1)
    tile += rng.uniform(3, 6) * rng.normal(size=(4, 4))
    tile = np.kron(tile, np.ones((cell, cell)))
    h, w = arr.shape[:2]
    reps = (h // tile.shape[0] + 1, w // tile.shape[1] + 1)
    pattern = np.tile(tile, reps)[:h, :w]
    return pattern[..., None] * _channel_gains(rng)


def _spectral(arr: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    """Spectral peaks: a sum of 2-3 sinusoidal gratings of 0.11-0.2 cycles/px at 128 px."""
    yy, xx = _grid(*arr.shape[:2])
    total = np.zeros(arr.shape[:2], dtype=np.float32)
    for _ in range(rng.integers(2, 4)):
        freq = rng.uniform(0.11, 0.2) / scale
        phi = rng.uniform(0, math.pi)
        wave = xx * math.cos(phi) + yy * math.sin(phi)
        total += rng.uniform(32, 40) * np.sin(
            2 * math.pi * freq * wave + rng.uniform(0, 2 * math.pi)
        )
    return total[..., None] * _channel_gains(rng)


def _seam(arr: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    """A pasted patch: content shifted by a few pixels and its colour and brightness clearly off."""
    cell = max(1, round(scale))
    shift = rng.integers(3, 7, 2) * cell * rng.choice((-1, 1), 2)
    moved = np.roll(arr, tuple(int(s) for s in shift), axis=(0, 1))
    offset = rng.choice((-1, 1)) * rng.uniform(55, 75) + rng.normal(0, 20, 3)
    return moved + offset - arr


def _blur_sharpen(arr: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    """A local resolution mismatch: blocky low-resolution content, or over-sharpening."""
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.5:
        # Content pasted from a coarsely coded low-resolution render: 5-7 px blocks at 128 px,
        # each with its own quantisation error, so the blocks show on flat skin too.
        h, w = arr.shape[:2]
        block = max(2, round(rng.uniform(5, 7) * scale))
        cells = (max(1, h // block), max(1, w // block))
        small = np.asarray(img.resize(cells[::-1], Image.Resampling.BOX), dtype=np.float32)
        small = small + rng.uniform(18, 24) * rng.choice((-1.0, 1.0), (*cells, 1))
        small = np.clip(small, 0, 255).astype(np.uint8)
        blocky = Image.fromarray(small, "RGB").resize((w, h), Image.Resampling.NEAREST)
        return np.asarray(blocky, dtype=np.float32) - arr
    soft = np.asarray(img.filter(ImageFilter.GaussianBlur(1.5 * scale)), dtype=np.float32)
    return rng.uniform(7.0, 9.0) * (arr - soft)


_ARTIFACT_FNS = {
    "checkerboard": _checkerboard,
    "spectral": _spectral,
    "seam": _seam,
    "blur_sharpen": _blur_sharpen,
}


def add_artifact(
    image: Image.Image,
    regions: dict[str, Box],
    rng: np.random.Generator,
    artifact: str | None = None,
    region: str | None = None,
) -> tuple[Image.Image, np.ndarray]:
    """Apply one localised artifact; returns the new image and its bool mask."""
    artifact = artifact or ARTIFACTS[rng.integers(len(ARTIFACTS))]
    region = region or REGIONS[rng.integers(len(REGIONS))]
    if artifact not in _ARTIFACT_FNS:
        raise ValueError(f"unknown artifact {artifact!r}; choose one of {ARTIFACTS}")
    if region not in regions:
        raise ValueError(f"unknown region {region!r}; choose one of {tuple(regions)}")
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    scale = max(arr.shape[:2]) / 128
    weight = _patch_weight(rng, regions[region], arr.shape[:2], hard=artifact == "seam")
    delta = _ARTIFACT_FNS[artifact](arr, rng, scale)
    out = np.clip(np.round(arr + weight[..., None] * delta), 0, 255).astype(np.uint8)
    return Image.fromarray(out, "RGB"), weight > 0


def _rngs(index: int, label: str, seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent face and artifact streams; fakes use different face seeds from reals."""
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, got {label!r}")
    key = (LABELS.index(label), index)
    face = np.random.SeedSequence(seed, spawn_key=(*key, 0))
    art = np.random.SeedSequence(seed, spawn_key=(*key, 1))
    return np.random.default_rng(face), np.random.default_rng(art)


def make_sample(index: int, label: str, *, size: int = 128, seed: int = 0) -> FaceSample:
    """Deterministic: same (index, label, size, seed) -> same pixels."""
    face_rng, art_rng = _rngs(index, label, seed)
    image, regions = draw_face(face_rng, size)
    if label == "real":
        return FaceSample(image, label, None, None, None)
    artifact = ARTIFACTS[art_rng.integers(len(ARTIFACTS))]
    region = REGIONS[art_rng.integers(len(REGIONS))]
    fake, mask = add_artifact(image, regions, art_rng, artifact, region)
    return FaceSample(fake, label, mask, artifact, region)


@dataclass(frozen=True)
class _Item:
    index: int
    label: str
    file_id: int
    split: str | None


def _plan(n_per_class: int, seed: int, split: bool) -> list[_Item]:
    """Every image to write: class-blind shuffled file ids and a stratified 80/10/10 split."""
    ids = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, n_per_class)))
    perm = ids.permutation(2 * n_per_class)
    n_train = round(_TRAIN * n_per_class)
    n_val = round(_VAL * n_per_class)

    def split_of(i: int) -> str | None:
        if not split:
            return None
        return "train" if i < n_train else "val" if i < n_train + n_val else "test"

    return [
        _Item(i, label, int(perm[c * n_per_class + i]), split_of(i))
        for c, label in enumerate(LABELS)
        for i in range(n_per_class)
    ]


def _write_item(
    item: _Item, *, out: pathlib.Path, size: int, seed: int, ext: str, width: int
) -> dict[str, str]:
    """Generate and save one image (and its mask); returns its manifest row."""
    sample = make_sample(item.index, item.label, size=size, seed=seed)
    stem = f"{item.file_id:0{width}d}"
    folder = f"{item.split}/{item.label}" if item.split else item.label
    rel = f"{folder}/{stem}.{ext}"
    if ext == "png":
        sample.image.save(out / rel, format="PNG", compress_level=_PNG_LEVEL)
    else:
        sample.image.save(out / rel, format="JPEG", quality=95, subsampling=0)
    row = {"path": rel, "label": item.label, "artifact": "", "region": "", "mask": ""}
    if sample.mask is not None:
        mask_rel = f"masks/{stem}.png"
        mask = Image.fromarray(sample.mask.astype(np.uint8) * 255, "L")
        mask.save(out / mask_rel, format="PNG", compress_level=_PNG_LEVEL)
        row.update(artifact=sample.artifact, region=sample.region, mask=mask_rel)
    if item.split:
        row["split"] = item.split
    return row


def _generate_rows(
    fn: Callable[[_Item], dict[str, str]], items: list[_Item], workers: int, progress: bool
) -> list[dict[str, str]]:
    """Run fn over items, in worker processes when asked, with an optional progress bar."""
    parallel = workers > 1 and len(items) > 1
    with ProcessPoolExecutor(workers) if parallel else contextlib.nullcontext() as pool:
        chunk = max(1, len(items) // (8 * workers))
        rows = pool.map(fn, items, chunksize=chunk) if pool else map(fn, items)
        if progress:
            from tqdm.auto import tqdm

            rows = tqdm(rows, total=len(items), desc="synthetic faces", unit="img")
        return list(rows)


def _remove_stale(out: pathlib.Path, folders: set[str], keep: set[str]) -> None:
    """Delete numbered images left by an earlier, larger run, so folders match the manifest."""
    for folder in folders:
        for path in (out / folder).iterdir():
            rel = f"{folder}/{path.name}"
            if _ID_FILE.match(path.name) and rel not in keep:
                path.unlink()


def generate_dataset(
    out: str | os.PathLike,
    n_per_class: int = 200,
    *,
    size: int = 128,
    seed: int = 0,
    fmt: str = "png",
    split: bool = False,
    workers: int = 1,
    progress: bool = False,
) -> SyntheticSummary:
    """Write OUT/real/*.png, OUT/fake/*.png, OUT/masks/<fake file stem>.png and OUT/manifest.csv.

    Manifest columns are path,label,artifact,region,mask (paths relative to OUT). With
    split=True the images go to OUT/{train,val,test}/{real,fake} (80/10/10 per class) and a
    `split` column is added. Rerunning with the same arguments rewrites the same files.
    """
    if fmt.lower() not in _FORMATS:
        raise ValueError(f"fmt must be 'png' or 'jpeg', got {fmt!r}")
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class}")
    root = pathlib.Path(out)
    items = _plan(n_per_class, seed, split)
    folders = {"masks"} | {f"{i.split}/{i.label}" if i.split else i.label for i in items}
    for folder in folders:
        (root / folder).mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(2 * n_per_class - 1)))
    fn = partial(
        _write_item, out=root, size=size, seed=seed, ext=_FORMATS[fmt.lower()], width=width
    )
    rows = sorted(_generate_rows(fn, items, workers, progress), key=lambda r: r["path"])
    _remove_stale(root, folders, {r["path"] for r in rows} | {r["mask"] for r in rows})
    manifest = root / "manifest.csv"
    tmp = manifest.with_suffix(".csv.tmp")
    fields = ["path", "label", "artifact", "region", "mask"] + (["split"] if split else [])
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, manifest)
    return SyntheticSummary(root, n_per_class, n_per_class, manifest)


def load_mask(root: str | os.PathLike, image_path: str | os.PathLike) -> np.ndarray | None:
    """The bool mask for an image of a generated set, None for reals."""
    mask_path = pathlib.Path(root) / "masks" / f"{pathlib.Path(image_path).stem}.png"
    if not mask_path.is_file():
        return None
    with Image.open(mask_path) as img:
        return np.asarray(img.convert("L")) >= 128

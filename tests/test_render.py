import io
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from deepfake_xai.render import (
    COLORMAPS,
    blend,
    colorize,
    colormap_lut,
    heatmap_image,
    overlay,
    png_bytes,
)


@pytest.fixture
def image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))


@pytest.fixture
def heatmap() -> np.ndarray:
    return np.linspace(0, 1, 49, dtype=np.float32).reshape(7, 7)


@pytest.mark.parametrize("name", COLORMAPS)
def test_luts(name):
    lut = colormap_lut(name)
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert len(np.unique(lut, axis=0)) > 200
    assert colormap_lut(name) is lut


def test_jet_runs_from_blue_to_red():
    low, high = colorize(np.array([[0.0, 1.0]]))[0]
    assert low[2] > 100 and low[0] == 0
    assert high[0] > 100 and high[2] == 0


def test_colorize_shapes_and_inputs(heatmap):
    rgb = colorize(heatmap, "inferno")
    assert rgb.shape == (7, 7, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(colorize(torch.from_numpy(heatmap)[None], "inferno"), rgb)
    clipped = colorize(np.array([[-3.0, 7.0]]))
    np.testing.assert_array_equal(clipped, colorize(np.array([[0.0, 1.0]])))
    with pytest.raises(ValueError, match=r"2-D \(h, w\), got shape \(2, 7, 7\)"):
        colorize(np.stack([heatmap, heatmap]))
    with pytest.raises(ValueError, match="unknown colormap 'nope'"):
        colorize(heatmap, "nope")


def test_nan_heatmap_does_not_crash(image):
    nan = np.full((4, 4), np.nan, np.float32)
    np.testing.assert_array_equal(colorize(nan), colorize(np.zeros((4, 4))))
    assert overlay(image, nan).size == image.size
    assert heatmap_image(torch.full((3, 3), float("nan")), size=(9, 6)).size == (9, 6)


def test_overlay_size_alpha_and_inputs(image, heatmap):
    blended = overlay(image, heatmap, alpha=0.5)
    assert blended.mode == "RGB" and blended.size == image.size == (50, 30)
    np.testing.assert_array_equal(np.asarray(overlay(image, heatmap, alpha=0.0)), np.asarray(image))
    full = overlay(image, heatmap, alpha=1.0, colormap="turbo")
    np.testing.assert_array_equal(
        np.asarray(full), np.asarray(heatmap_image(heatmap, size=image.size, colormap="turbo"))
    )
    from_array = overlay(np.asarray(image), torch.from_numpy(heatmap).half(), alpha=0.5)
    np.testing.assert_allclose(np.asarray(from_array), np.asarray(blended), atol=2)
    assert overlay(image.convert("L"), heatmap).mode == "RGB"
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, heatmap, alpha=1.5)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        overlay(np.zeros((30, 50)), heatmap)


def test_blend_takes_a_map_coloured_once(image, heatmap):
    coloured = heatmap_image(heatmap, size=image.size)
    blended, expected = blend(image, coloured, alpha=0.3), overlay(image, heatmap, alpha=0.3)
    np.testing.assert_array_equal(np.asarray(blended), np.asarray(expected))
    with pytest.raises(ValueError, match=r"coloured map is \(7, 7\), the image \(50, 30\)"):
        blend(image, heatmap_image(heatmap), alpha=0.3)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_png_bytes_are_a_lossless_png(image, mode):
    picture = image.convert(mode)
    encoded = png_bytes(picture)
    assert encoded.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(encoded)) as decoded:
        assert decoded.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(decoded), np.asarray(picture.convert("RGB")))


def test_upsampling_is_bilinear_and_keeps_orientation(heatmap):
    hot_corner = np.zeros((4, 4), np.float32)
    hot_corner[0, -1] = 1.0
    picture = np.asarray(heatmap_image(hot_corner, size=(40, 20), colormap="gray"))
    assert picture.shape == (20, 40, 3)
    assert picture[0, -1, 0] == 255 and picture[-1, 0, 0] == 0
    assert 0 < picture[2, -8, 0] < 255
    assert heatmap_image(heatmap).size == (7, 7)


def test_import_is_light():
    code = (
        "import sys, deepfake_xai.render; "
        "print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]

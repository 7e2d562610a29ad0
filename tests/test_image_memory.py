"""Decoding memory per image is bounded: measured peaks stay within ``decode_cost``, the estimate
``load_image`` checks against ``max_decode_bytes`` before decoding, and a refusal decodes nothing.

Each measurement runs in a fresh subprocess (peak RSS from Linux's ``VmHWM``, reset through
``/proc/self/clear_refs``); files are 2000 x 2000 px, small on disk. The full-size figures are in
benchmarks/README.md (``benchmarks/decode_memory.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs"
)

SIDE = 2000
MIB = 2**20

MEASURE = """
import json, re, sys
from pathlib import Path
from deepfake_xai.images import ImageLoadError, decode_cost, load_image

def rss(field):
    status = Path("/proc/self/status").read_text()
    return int(re.search(field + r":\\s+(\\d+) kB", status)[1]) * 1024

path, budget = sys.argv[1], int(sys.argv[2])
estimate = decode_cost(path)
before = rss("VmRSS")
Path("/proc/self/clear_refs").write_text("5")
try:
    load_image(path, max_decode_bytes=budget)
    reason = None
except ImageLoadError as err:
    reason = err.reason
print(json.dumps({"peak": rss("VmHWM") - before, "estimate": estimate, "reason": reason}))
"""


def ramp(side: int) -> np.ndarray:
    line = np.linspace(0, 1, side, endpoint=False, dtype=np.float32)
    return (line[None, :] + line[:, None]) / 2


def rgb(side: int) -> Image.Image:
    r = (ramp(side) * 255).astype(np.uint8)
    return Image.fromarray(np.stack([r, r[::-1], r[:, ::-1]], axis=-1))


# The kinds that cost the most in the outside test (int32 TIFF, 16-bit PNG, RGBA PNG) and JPEG.
KINDS = {
    "int32.tif": lambda: Image.fromarray((ramp(SIDE) * 2**20).astype(np.int32)),
    "grey16.png": lambda: Image.fromarray((ramp(SIDE) * 65535).astype(np.uint16)),
    "rgba.png": lambda: rgb(SIDE).convert("RGBA"),
    "photo.jpg": lambda: rgb(SIDE),
}


def measure(path: Path, budget: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path), str(budget)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("decode-memory")
    paths = {}
    for name, build in KINDS.items():
        paths[name] = folder / name
        build().save(paths[name])
    return paths


@pytest.mark.parametrize("kind", KINDS)
def test_peak_decode_memory_stays_within_the_estimate(files, kind):
    result = measure(files[kind], budget=2**40)
    assert result["reason"] is None
    pixels = SIDE * SIDE
    assert result["estimate"] <= pixels * 13
    # within the estimate, give or take allocator slack and the 8-bit strips of wide modes
    assert result["peak"] <= result["estimate"] * 1.1 + 4 * MIB, result


@pytest.mark.parametrize("kind", ["int32.tif", "rgba.png"])
def test_over_budget_files_are_refused_before_decoding(files, kind):
    result = measure(files[kind], budget=16 * MIB)
    assert "above the budget of 16 MiB; pass max_decode_bytes= to raise it" in result["reason"]
    assert result["peak"] < 4 * MIB, result  # the header was read, no pixel was decoded

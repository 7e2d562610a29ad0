"""Image folders shared by the analysis tests (imported as ``analysis_data``, like ``models``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

import deepfake_xai as dx
from deepfake_xai.analysis.store import part_files, read_parts, write_parquet
from deepfake_xai.synthetic import make_sample

NON_UTF8_NAME = os.fsdecode(b"bad_\xff.png")


def save_builtins(folder: Path, size: int) -> list[str]:
    """Both built-in detectors saved once (seeded), so every process uses the same weights."""
    import torch

    torch.manual_seed(0)
    return [
        str(dx.load_detector(name, image_size=size, device="cpu").save(folder / name))
        for name in ("efficientnet_b0", "mobilenetv2_100")
    ]


def write_noise(folder: Path, n: int, seed: int, size: int = 40) -> list[Path]:
    """``n`` random RGB PNGs in ``folder`` (no face in any of them)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def write_faces(folder: Path, label: str, indices: range, size: int = 96) -> list[Path]:
    """Synthetic faces (the Haar cascade finds about half of them), as PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in indices:
        path = folder / f"face_{i:03d}.png"
        make_sample(i, label, size=size).image.save(path)
        paths.append(path)
    return paths


def write_two_faces(path: Path) -> Path:
    """A noisy 340 x 220 picture with a large and a small face (largest on the left)."""
    rng = np.random.default_rng(0)
    canvas = Image.fromarray(rng.integers(0, 256, (220, 340, 3), dtype=np.uint8))
    canvas.paste(make_sample(1, "real", size=120).image, (10, 50))
    canvas.paste(make_sample(9, "real", size=80).image, (220, 70))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def write_bad_entries(folder: Path, good: Path) -> dict[str, str]:
    """Entries named like images that are no image files, plus a good image under a name
    that is not UTF-8; file name -> the reason expected in its row (None: readable)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "folder.jpg").mkdir()
    os.mkfifo(folder / "pipe.jpg")
    (folder / "zero.png").symlink_to("/dev/zero")
    (folder / "gone.jpg").symlink_to(folder / "nowhere.jpg")
    (folder / "vector.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    (folder / "broken.png").write_bytes(b"this is not a png")
    (folder / NON_UTF8_NAME).write_bytes(good.read_bytes())
    return {
        "folder.jpg": "is a directory",
        "pipe.jpg": "not a regular file",
        "zero.png": "not a regular file",
        "gone.jpg": "file not found",
        "vector.svg": "not a recognised image format",
        "broken.png": "not a recognised image format",
        NON_UTF8_NAME: None,
    }


def split_parts(out: Path, images: int, per_part: int) -> list[Path]:
    """Rewrite run ``out``'s parts as parts of ``per_part`` images each (as a run committing
    more often would have written them); the new parts, in order."""
    rows = read_parts(out, pq.read_schema(part_files(out)[0]).names)
    for part in part_files(out):
        part.unlink()
    for first in range(0, images, per_part):
        inside = pc.and_(
            pc.greater_equal(rows["index"], first), pc.less(rows["index"], first + per_part)
        )
        write_parquet(
            out / "parts" / f"part-{first:010d}-{first:012x}.parquet", rows.filter(inside)
        )
    return part_files(out)

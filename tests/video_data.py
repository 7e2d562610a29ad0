"""Small video files for the video tests, written with OpenCV's ``mp4v`` encoder."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def write_clip(
    path: Path, frames: Sequence[np.ndarray], fps: float = 4.0, codec: str = "mp4v"
) -> Path:
    """A video of RGB ``frames`` (all of one size) at ``fps`` (``MJPG`` for an ``.avi``)."""
    import cv2

    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (width, height))
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()
    return path


def face_pixels(path: Path) -> np.ndarray:
    """A photo's RGB pixels, as a clip frame."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def numbered_frames(n: int, size: tuple[int, int] = (48, 64)) -> list[np.ndarray]:
    """``n`` (at most 256) frames showing their number in binary: 8 vertical stripes, stripe
    ``j`` white when bit ``j`` is set (see :func:`frame_number`)."""
    frames = []
    for k in range(n):
        frame = np.zeros((*size, 3), dtype=np.uint8)
        for bit in range(8):
            if k >> bit & 1:
                frame[:, bit * size[1] // 8 : (bit + 1) * size[1] // 8] = 255
        frames.append(frame)
    return frames


def frame_number(image) -> int:
    """The number a frame of :func:`numbered_frames` shows."""
    pixels = np.asarray(image, dtype=np.float32).mean(axis=(0, 2))
    width = len(pixels)
    stripes = [pixels[j * width // 8 + 2 : (j + 1) * width // 8 - 2].mean() for j in range(8)]
    return sum(1 << j for j, value in enumerate(stripes) if value > 128)


def rotate_90(path: Path, out: Path) -> Path:
    """A copy of an MP4 whose track matrix says "turn 90 degrees" (as phones write it)."""
    data = bytearray(path.read_bytes())
    matrix = data.index(b"tkhd") + 4 + 40  # version 0: 40 bytes of fields before the matrix
    data[matrix : matrix + 36] = struct.pack(">9i", 0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30)
    out.write_bytes(bytes(data))
    return out

"""Faces found once per dataset, so training frames every face exactly as ``analyze`` does.

At inference the largest face is found and framed like the FFHQ-aligned training photos
(:func:`deepfake_xai.faces.frame_face`) before a detector sees it. Training on other sources
(diffusion portraits, web photos) must go through the same step, or framing becomes a
shortcut. Face search costs tens of milliseconds per image, so it runs once per image, in
parallel, and the boxes with their five landmarks are kept in a CSV beside the run
(``faces.csv``); a rerun only searches the images it has not seen. The landmarks also place
the blending masks of self-blended pseudo-fakes (:mod:`deepfake_xai.pseudofakes.sbi`).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .faces import FaceBox, find_faces, framing_crop
from .images import ImageLoadError, load_image
from .paths import path_to_text, text_to_path
from .preprocessing import Harmonization

FIELDS = ("path", "x", "y", "width", "height", "score", "landmarks")
NO_FACE = ""  # the ``x`` cell of an image searched without finding a face
Log = Callable[[str], object]


@dataclass(frozen=True)
class FaceIndex:
    """Image path -> its largest face (None when the search found none)."""

    faces: dict[Path, FaceBox | None]

    @classmethod
    def build(
        cls,
        paths: Sequence[str | os.PathLike],
        csv_path: str | os.PathLike | None = None,
        *,
        workers: int = 1,
        log: Log = print,
    ) -> FaceIndex:
        """Search every image of ``paths`` not yet in ``csv_path`` and append what is found
        (``csv_path=None``: search them all and keep nothing on disk)."""
        from .audit._io import parallel_map

        csv_path = Path(csv_path) if csv_path is not None else None
        known = read_faces(csv_path) if csv_path is not None and csv_path.is_file() else {}
        todo = [Path(p) for p in dict.fromkeys(map(Path, paths)) if Path(p) not in known]
        if todo:
            log(f"finding faces in {len(todo)} images ({workers} process(es))")
            with _appender(csv_path) as write:
                for path, box in zip(todo, parallel_map(largest_face, todo, workers), strict=True):
                    known[path] = box
                    write(_row(path, box))
        missing = sum(box is None for box in known.values())
        if missing:
            log(f"{missing} of {len(known)} images have no face found (they are left out)")
        return cls(known)

    def __contains__(self, path: object) -> bool:
        return Path(path) in self.faces  # type: ignore[arg-type]

    def box(self, path: str | os.PathLike) -> FaceBox | None:
        """The largest face of ``path``; KeyError for an image that was never searched."""
        return self.faces[Path(path)]

    def with_copies(self, copies: dict[Path, Path]) -> FaceIndex:
        """Also answer for ``copies`` (new path -> source path), which share their source's
        geometry (pixel-aligned reconstructions, for example)."""
        extra = {new: self.faces.get(source) for new, source in copies.items()}
        return FaceIndex({**self.faces, **extra})


@contextmanager
def _appender(csv_path: Path | None) -> Iterator[Callable[[list], object]]:
    """A function that appends a row to ``csv_path`` (header first in a new file); a no-op
    for None."""
    if csv_path is None:
        yield lambda row: None
        return
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    new = not csv_path.is_file()
    with open(csv_path, "a", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(FIELDS)
        yield writer.writerow


def largest_face(path: Path) -> FaceBox | None:
    """The largest face of the image at ``path``; None when there is none or it is unreadable."""
    try:
        image = load_image(path)
    except ImageLoadError:
        return None
    faces = find_faces(image)
    return faces[0] if faces else None


@dataclass(frozen=True)
class Framing:
    """Where a face image came from: the square cut out of the decoded image (None: whole)."""

    square: tuple[int, int, int] | None

    def points(
        self, points: Sequence[tuple[float, float]], size: tuple[int, int], harm: Harmonization
    ) -> np.ndarray:
        """``points`` of the decoded image of ``size`` in the coordinates of the harmonised
        image (after this framing and ``harm``'s resize and centre crop)."""
        xy = np.asarray(points, dtype=np.float64)
        width, height = size
        if self.square is not None:
            left, top, side = self.square
            xy = xy - (left, top)
            width = height = side
        if harm.fit == "squash":
            return xy * (harm.image_size / width, harm.image_size / height)
        scale = harm.image_size / min(width, height)
        new_w, new_h = (
            max(harm.image_size, round(width * scale)),
            max(harm.image_size, round(height * scale)),
        )
        offset = ((new_w - harm.image_size) // 2, (new_h - harm.image_size) // 2)
        return xy * (new_w / width, new_h / height) - offset


def frame(image: Image.Image, box: FaceBox) -> tuple[Image.Image, Framing]:
    """:func:`deepfake_xai.faces.frame_face` that also says which square it cut."""
    square = framing_crop(image.size, box)
    if square is None:
        return image, Framing(None)
    left, top, side = square
    return image.crop((left, top, left + side, top + side)), Framing(square)


def read_faces(csv_path: str | os.PathLike) -> dict[Path, FaceBox | None]:
    """The boxes stored by :meth:`FaceIndex.build`."""
    faces: dict[Path, FaceBox | None] = {}
    with open(csv_path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            path = Path(text_to_path(row["path"]))
            if row["x"] == NO_FACE:
                faces[path] = None
                continue
            values = [float(v) for v in row["landmarks"].split()]
            points = tuple(zip(values[0::2], values[1::2], strict=True))
            faces[path] = FaceBox(
                int(row["x"]),
                int(row["y"]),
                int(row["width"]),
                int(row["height"]),
                points[:2],
                float(row["score"]),
                points,
            )
    return faces


def _row(path: Path, box: FaceBox | None) -> list[str]:
    if box is None:
        return [path_to_text(path), NO_FACE, "", "", "", "", ""]
    marks = " ".join(f"{v:.2f}" for point in box.landmarks or () for v in point)
    return [path_to_text(path), box.x, box.y, box.width, box.height, f"{box.score:.4f}", marks]

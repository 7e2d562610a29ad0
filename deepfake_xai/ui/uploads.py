"""Uploaded batch files: images as they are, zip archives extracted safely, the rest reported.

Only files Gradio saved from an upload reach this module, never a path a user typed. Archives
are checked before anything is written: no absolute paths, no ``..``, no links, bounded member
count and uncompressed size (a zip bomb is refused up front). A file in a ``real/`` or ``fake/``
folder of an archive takes that folder as its label.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".avif", ".heic"}
)
LABEL_FOLDERS = ("real", "fake")
MAX_FILES = 2000
MAX_TOTAL_BYTES = 1 << 30
_CHUNK = 1 << 20


class UploadError(ValueError):
    """An upload that cannot be used at all (an unsafe or oversized archive, no images)."""


@dataclass
class UploadedBatch:
    """Image files ready for analysis, their labels (None when unknown) and skipped files."""

    images: list[Path] = field(default_factory=list)
    labels: list[str | None] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    max_files: int = MAX_FILES

    @property
    def has_labels(self) -> bool:
        return any(label is not None for label in self.labels)

    def add(self, path: Path, label: str | None) -> None:
        if len(self.images) >= self.max_files:
            raise UploadError(f"too many images: at most {self.max_files} per batch")
        self.images.append(path)
        self.labels.append(label)


def collect_uploads(
    files: Sequence[str | os.PathLike], dest: str | os.PathLike, *, max_files: int = MAX_FILES
) -> UploadedBatch:
    """Sort uploaded ``files`` into images (archives extracted under ``dest``) and skipped ones."""
    batch = UploadedBatch(max_files=max_files)
    for number, file in enumerate(files):
        path = Path(file)
        if zipfile.is_zipfile(path):
            _extract_zip(path, Path(dest) / f"archive-{number}", batch)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            batch.add(path, None)
        else:
            batch.skipped.append(f"{path.name}: not an image or a .zip archive")
    if not batch.images:
        raise UploadError(
            "no images found in the upload; give image files or a .zip of images "
            f"({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return batch


def _extract_zip(archive: Path, dest: Path, batch: UploadedBatch) -> None:
    """Extract the image members of ``archive`` into ``dest``, after checking every member."""
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        _check_archive(archive.name, members, batch.max_files)
        for member in members:
            name = PurePosixPath(member.filename)
            if name.suffix.lower() not in IMAGE_SUFFIXES or name.name.startswith("."):
                batch.skipped.append(f"{archive.name}/{member.filename}: not an image")
                continue
            target = dest.joinpath(*name.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(target, "wb") as out:
                _copy_bounded(src, out, member.file_size, f"{archive.name}/{member.filename}")
            batch.add(target, _folder_label(name))


def _check_archive(name: str, members: Sequence[zipfile.ZipInfo], max_files: int) -> None:
    """Refuse unsafe member names, links, too many members or too many bytes, naming the cause."""
    if len(members) > max_files:
        raise UploadError(f"{name}: {len(members)} files, more than the limit of {max_files}")
    total = sum(m.file_size for m in members)
    if total > MAX_TOTAL_BYTES:
        raise UploadError(
            f"{name}: {total / 2**20:.0f} MiB uncompressed, more than the limit of "
            f"{MAX_TOTAL_BYTES / 2**20:.0f} MiB"
        )
    for member in members:
        path = PurePosixPath(member.filename.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or ":" in member.filename:
            raise UploadError(f"{name}: unsafe path {member.filename!r} in the archive")
        if stat.S_ISLNK(member.external_attr >> 16):
            raise UploadError(f"{name}: {member.filename!r} is a link; links are not extracted")


def _copy_bounded(src, out, declared: int, label: str) -> None:
    """Copy at most ``declared`` bytes; a member that inflates beyond its header is refused."""
    written = 0
    while chunk := src.read(_CHUNK):
        written += len(chunk)
        if written > declared:
            raise UploadError(f"{label}: inflates beyond its declared size")
        out.write(chunk)


def _folder_label(name: PurePosixPath) -> str | None:
    """``real`` or ``fake`` when exactly one of those folder names is on the member's path."""
    found = {part.lower() for part in name.parts[:-1]} & set(LABEL_FOLDERS)
    return found.pop() if len(found) == 1 else None


def prune_runs(root: str | os.PathLike, keep: int) -> None:
    """Delete all but the ``keep`` most recent run folders under ``root``."""
    runs = sorted((p for p in Path(root).iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in runs[: max(0, len(runs) - keep)]:
        shutil.rmtree(old, ignore_errors=True)

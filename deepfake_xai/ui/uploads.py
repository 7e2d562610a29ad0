"""Uploaded batch files: images as they are, zip archives extracted safely, the rest reported.

Only files Gradio saved from an upload reach this module, never a path a user typed. Archives
are checked before anything is written: no absolute paths, no ``..``, no links, bounded member
count, and a bound on the bytes one request may unpack across all its archives (a zip bomb, or
many small ones, is refused up front). A damaged archive or member is skipped with a reason that
names it; no server path is ever part of a message. A file in a ``real/`` or ``fake/`` folder of
an archive takes that folder as its label.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".avif", ".heic"}
)
LABEL_FOLDERS = ("real", "fake")
MAX_FILES = 2000
MAX_TOTAL_BYTES = 1 << 30  # unpacked per request, all archives together
_CHUNK = 1 << 20
PER_BATCH = "per batch (all archives together)"
_CLASHES = (errno.EEXIST, errno.ENOTDIR, errno.EISDIR)


class UploadError(ValueError):
    """An upload that cannot be used at all (an unsafe or oversized archive, no images)."""


@dataclass(frozen=True)
class UploadLimits:
    """What one request and one session may cost the server (bytes, files, seconds).

    ``request_bytes`` bounds what one batch unpacks from all its archives together;
    ``session_bytes`` what one session's batches still on disk (the one shown and the one
    being made) hold together. Each dropped file is checked in a child process with at most
    ``check_memory`` bytes of memory and ``check_seconds`` seconds; one drop's checks stop
    after ``check_total_seconds`` (the rest are judged when analysed).
    """

    max_files: int = MAX_FILES
    request_bytes: int = MAX_TOTAL_BYTES
    session_bytes: int = 2 * MAX_TOTAL_BYTES
    check_seconds: float = 10.0
    check_memory: int = 1 << 30
    check_total_seconds: float = 60.0


@dataclass
class UploadedBatch:
    """Image files ready for analysis, their labels (None when unknown) and skipped files;
    ``unpacked`` counts the bytes written by extracting archives."""

    images: list[Path] = field(default_factory=list)
    labels: list[str | None] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    max_files: int = MAX_FILES
    max_bytes: int = MAX_TOTAL_BYTES
    bound: str = PER_BATCH
    unpacked: int = 0

    @property
    def has_labels(self) -> bool:
        return any(label is not None for label in self.labels)

    def add(self, path: Path, label: str | None) -> None:
        if len(self.images) >= self.max_files:
            raise UploadError(f"too many images: at most {self.max_files} per batch")
        self.images.append(path)
        self.labels.append(label)


def collect_uploads(
    files: Sequence[str | os.PathLike],
    dest: str | os.PathLike,
    *,
    max_files: int = MAX_FILES,
    max_bytes: int = MAX_TOTAL_BYTES,
    bound: str = PER_BATCH,
) -> UploadedBatch:
    """Sort uploaded ``files`` into images (archives extracted under ``dest``, at most
    ``max_bytes`` from all of them together) and skipped ones; ``bound`` says in words what
    ``max_bytes`` is, for the error."""
    batch = UploadedBatch(max_files=max_files, max_bytes=max_bytes, bound=bound)
    for number, file in enumerate(files):
        path = Path(file)
        if zipfile.is_zipfile(path):
            _extract_zip(path, Path(dest) / f"archive-{number}", batch)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            batch.add(path, None)
        else:
            batch.skipped.append(f"{path.name}: not an image or a .zip archive")
    if not batch.images:
        why = "".join(f"; {reason}" for reason in batch.skipped[:5])
        raise UploadError(
            "no images found in the upload; give image files or a .zip of images "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}){why}"
        )
    return batch


def _extract_zip(archive: Path, dest: Path, batch: UploadedBatch) -> None:
    """Extract the image members of ``archive`` into ``dest``, after checking every member;
    a damaged archive or member is skipped with its reason."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        batch.skipped.append(f"{archive.name}: a damaged zip archive ({_zip_reason(exc)})")
        return
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        _check_archive(archive.name, members, batch)
        seen: set[str] = set()
        for member in members:
            label = f"{archive.name}/{member.filename}"
            name = PurePosixPath(member.filename)
            if name.suffix.lower() not in IMAGE_SUFFIXES or name.name.startswith("."):
                batch.skipped.append(f"{label}: not an image")
            elif member.filename in seen:
                batch.skipped.append(f"{label}: a second member with the same name")
            else:
                seen.add(member.filename)
                _extract_member(zf, member, dest.joinpath(*name.parts), label, batch)


def _extract_member(
    zf: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path, label: str, batch: UploadedBatch
) -> None:
    """Write one member to ``target`` and add it, or skip it naming why it cannot be read."""
    created = False
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(member) as src, open(target, "xb") as out:
            created = True
            batch.unpacked += _copy_bounded(src, out, member.file_size, label)
    except UploadError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError,
            OSError, ValueError) as exc:  # fmt: skip
        if created:
            target.unlink(missing_ok=True)
        batch.skipped.append(f"{label}: {_zip_reason(exc)}")
        return
    batch.add(target, _folder_label(PurePosixPath(member.filename)))


def _zip_reason(exc: BaseException) -> str:
    """Why an archive or member cannot be read, in words, without any server path."""
    text = str(exc)
    if isinstance(exc, OSError) and exc.errno in _CLASHES:
        return "its name clashes with another member (a file and a folder of the same name)"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"cannot be unpacked ({os.strerror(exc.errno).lower()})"
    if isinstance(exc, NotImplementedError):
        return "packed with a compression method this server cannot read"
    if isinstance(exc, RuntimeError) and "encrypted" in text:
        return "encrypted; give archives without a password"
    if "CRC" in text:
        return "damaged: its checksum does not match its data"
    if isinstance(exc, (zlib.error, EOFError)):
        return "damaged: its compressed data cannot be read"
    if isinstance(exc, zipfile.BadZipFile) and "differ" in text:
        return "damaged: its name differs between the archive's index and its header"
    if isinstance(exc, zipfile.BadZipFile):
        return f"damaged: {text.rstrip('.').lower()}"
    return "damaged: it cannot be read as a zip archive"


def _check_archive(name: str, members: Sequence[zipfile.ZipInfo], batch: UploadedBatch) -> None:
    """Refuse unsafe member names, links, too many members or too many bytes, naming the cause."""
    if len(members) > batch.max_files:
        raise UploadError(f"{name}: {len(members)} files, more than the limit of {batch.max_files}")
    total = sum(m.file_size for m in members)
    if batch.unpacked + total > batch.max_bytes:
        before = (
            f"; {size_text(batch.unpacked)} from the archives before it" if batch.unpacked else ""
        )
        raise UploadError(
            f"{name}: {size_text(total)} uncompressed{before}, more than the "
            f"{size_text(batch.max_bytes)} {batch.bound}"
        )
    for member in members:
        path = PurePosixPath(member.filename.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or ":" in member.filename:
            raise UploadError(f"{name}: unsafe path {member.filename!r} in the archive")
        if stat.S_ISLNK(member.external_attr >> 16):
            raise UploadError(f"{name}: {member.filename!r} is a link; links are not extracted")


def size_text(size: int) -> str:
    """A byte count in words: KiB below 1 MiB, else MiB."""
    return f"{size / 2**10:.0f} KiB" if size < 2**20 else f"{size / 2**20:.0f} MiB"


def _copy_bounded(src, out, declared: int, label: str) -> int:
    """Copy at most ``declared`` bytes and return how many; a member that inflates beyond its
    header is refused."""
    written = 0
    while chunk := src.read(_CHUNK):
        written += len(chunk)
        if written > declared:
            raise UploadError(f"{label}: inflates beyond its declared size")
        out.write(chunk)
    return written


def _folder_label(name: PurePosixPath) -> str | None:
    """``real`` or ``fake`` when exactly one of those folder names is on the member's path."""
    found = {part.lower() for part in name.parts[:-1]} & set(LABEL_FOLDERS)
    return found.pop() if len(found) == 1 else None


def prune_runs(root: str | os.PathLike, keep: int, pattern: str = "*") -> None:
    """Delete all but the ``keep`` most recent folders matching ``pattern`` under ``root``."""
    runs = sorted(
        (p for p in Path(root).glob(pattern) if p.is_dir()), key=lambda p: p.stat().st_mtime
    )
    for old in runs[: max(0, len(runs) - keep)]:
        shutil.rmtree(old, ignore_errors=True)

"""What ``analyze`` was given, as an ordered list of images with their labels (when known).

Paths, folders, globs and CSV manifests go through :func:`deepfake_xai.data.discover`; a torch
``Dataset`` yielding ``image`` or ``(image, label)`` is used as is, its labels read as it loads.
Entries that discovery leaves out because they are no image files (folders, FIFOs, devices or
dangling links named like images, and ``.svg`` files) are kept too, so that each gets a row with
the reason it cannot be read instead of vanishing; none of them is opened for reading here. So
are images whose path is longer than the system accepts (folders are listed through folder
descriptors, which have no such limit), and folders that cannot be listed at all: such a folder
is an input of its own, with the reason in :attr:`Inputs.problems` (its images are unknown).

Each image also gets its **source** (where it comes from, for the per-source breakdown): the
``group`` column of a CSV manifest given as input; else, for an image found in a folder given
as input, the first folder on its path below that folder that is not a class (real/fake or a
synonym) or split (train/val/test) name, skipping the folders that all its images share; else
none (``""``). So ``photos/press/real/a.jpg`` and ``photos/sd21/fake/b.jpg`` come from ``press``
and ``sd21``, ``photos/real/ffhq/c.jpg`` from ``ffhq``; images of ``ROOT/{real,fake}``, of a flat
folder, and files or glob matches given one by one have none. A folder holding only source
folders (``ROOT/{press,sd21}/...``, with no class or split folder and no loose image) is
discovered one source folder at a time.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data import (
    _IGNORED_DIRS,
    IMAGE_SUFFIXES,
    discover,
    normalise_label,
    normalise_split,
    read_manifest,
)
from ..paths import display_path
from ..video import is_video_path

VECTOR_SUFFIXES = (".svg", ".svgz")
InputSpec = str | os.PathLike | Sequence[str | os.PathLike] | Dataset
LabelSpec = str | os.PathLike | Mapping[str | os.PathLike, Any] | None


@dataclass(frozen=True)
class Inputs:
    """The images of one run in a fixed order: ``paths[i]`` is image ``i``.

    For a ``Dataset``, ``paths`` are ``dataset[i]`` placeholders, ``labels`` are None and the
    dataset's own labels come back with each decoded item. ``sources`` says where each image
    comes from (see the module docstring; ``""`` when unknown).
    """

    paths: list[str]
    labels: list[str | None]
    sources: list[str]
    dataset: Dataset | None = None
    problems: Mapping[str, str] = field(default_factory=dict)  # path -> why it gives no image

    def __len__(self) -> int:
        return len(self.paths)

    def source(self, index: int) -> tuple[Any, str | None]:
        """What to decode for image ``index``, and its label."""
        if self.dataset is None:
            return self.paths[index], self.labels[index]
        return split_item(self.dataset[index])

    @property
    def videos(self) -> list[int]:
        """The indices of the video files among the inputs."""
        if self.dataset is not None:
            return []
        return [i for i, path in enumerate(self.paths) if is_video_path(path)]

    def problem_indices(self) -> dict[int, str]:
        """Index -> reason of the inputs known to give no image before any is decoded."""
        return {i: self.problems[p] for i, p in enumerate(self.paths) if p in self.problems}

    def fingerprint(self) -> str:
        """SHA-256 over the paths, labels and sources, when any (a dataset: type and length)."""
        if self.dataset is not None:
            content: Any = [type(self.dataset).__qualname__, len(self.dataset)]
        else:
            content = [self.paths, self.labels] + ([self.sources] if any(self.sources) else [])
        return hashlib.sha256(json.dumps(content).encode()).hexdigest()


def resolve_inputs(inputs: InputSpec, labels: LabelSpec = None) -> Inputs:
    """The ordered images and labels of ``inputs`` (see :func:`deepfake_xai.analyze`)."""
    if isinstance(inputs, Dataset):
        if labels is not None:
            raise ValueError("labels= applies to files; a Dataset yields (image, label) itself")
        n = len(inputs)  # type: ignore[arg-type]
        if n == 0:
            raise ValueError("the dataset is empty")
        return Inputs([f"dataset[{i}]" for i in range(n)], [None] * n, [""] * n, inputs)
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    unusable: dict[str, str | None] = {}
    problems: dict[str, str] = {}
    videos: dict[str, str | None] = {}
    for item in items:
        unusable.update(unusable_entries(item, problems))
        videos.update(video_files(item))
    listed = [
        part
        for i in items
        if _key(i) not in unusable and not _only_videos(i)
        for part in _source_folders(i)
    ]
    samples = discover(listed) if listed else []
    found = {str(s.path): s.label for s in samples}
    found.update((p, label) for p, label in unusable.items() if p not in found)
    found.update((p, label) for p, label in videos.items() if p not in found)
    if not found:
        raise ValueError(f"no images found in {_describe(inputs)} (nor videos)")
    paths = sorted(found, key=Path)
    groups = {str(s.path): s.group for s in samples if s.group}
    sources = {**_folder_sources(items, paths), **groups}
    labelled = label_list(paths, [found[p] for p in paths], labels)
    return Inputs(paths, labelled, [sources.get(p, "") for p in paths], problems=problems)


def folder_sources(relative: Sequence[PurePath]) -> list[str]:
    """The source of each image from its path relative to the folder it was found in: the
    first folder below those that every image shares that is not a class or split name (shown
    as :func:`deepfake_xai.paths.display_path` writes it); ``""`` when there is none."""
    folders = [p.parent.parts for p in relative]
    shared = len(os.path.commonprefix(folders)) if folders else 0
    sources = []
    for parts in folders:
        named = [f for f in parts[shared:] if not (normalise_label(f) or normalise_split(f))]
        sources.append(display_path(named[0]) if named else "")
    return sources


def _folder_sources(items: Sequence[Any], paths: Sequence[str]) -> dict[str, str]:
    """Path -> source for the images under each folder among ``items`` (first folder wins)."""
    sources: dict[str, str] = {}
    for item in items:
        root = _key(item)
        if not os.path.isdir(root):
            continue
        inside = [p for p in paths if p not in sources and Path(p).is_relative_to(root)]
        relative = [Path(p).relative_to(root) for p in inside]
        sources.update(zip(inside, folder_sources(relative), strict=True))
    return sources


def _source_folders(item: str | os.PathLike) -> list[str | os.PathLike]:
    """``item``, or the folders to discover in its place when it holds only source folders
    (sub-folders with images, none a class or split folder, and no loose image), recursively."""
    path = _key(item)
    if not os.path.isdir(path):
        return [item]
    with os.scandir(path) as entries:
        entries = sorted(entries, key=lambda e: e.name)
    folders = [e for e in entries if e.is_dir() and _walked(e.name)]
    if any(normalise_label(f.name) or normalise_split(f.name) for f in folders) or any(
        e.is_file() and _looks_like_image(e.name) for e in entries
    ):
        return [item]
    holding = [f.path for f in folders if _holds_images(f.path)]
    return [part for f in holding for part in _source_folders(f)] or [item]


def _holds_images(folder: str) -> bool:
    """Whether an image file sits anywhere under ``folder`` (where discovery looks)."""
    for _, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if _walked(d)]
        if any(_looks_like_image(f) for f in filenames):
            return True
    return False


def unusable_entries(
    item: str | os.PathLike, problems: dict[str, str] | None = None
) -> dict[str, str | None]:
    """Entries named like images under ``item`` (a folder, or the entry itself) that are not
    regular files or whose path is too long to open, ``.svg`` files, and folders that cannot
    be listed: absolute path -> label from its class folder. The reason of each folder that
    cannot be listed goes into ``problems`` (path -> reason)."""
    path = _key(item)
    if os.path.isdir(path):
        found: dict[str, str | None] = {}
        unlisted: dict[str, str] = {}
        for dirpath, names in walk_folder(path, unlisted):
            for name in names:
                entry = os.path.join(dirpath, name)
                if _looks_like_image(name) and _unusable(entry):
                    found[entry] = _class_label(os.path.relpath(entry, path))
        for folder, reason in unlisted.items():
            found[folder] = _class_label(os.path.join(os.path.relpath(folder, path), "_"))
            if problems is not None:
                problems[folder] = reason
        return found
    if os.path.lexists(path) and _looks_like_image(path) and _unusable(path):
        return {path: _class_label(path)}
    return {}


def video_files(item: str | os.PathLike) -> dict[str, str | None]:
    """Video files under ``item`` (a folder, a video file or a glob): absolute path -> label
    from its class folder (the nearest one below a folder given, the parent otherwise)."""
    path = _key(item)
    if os.path.isdir(path):
        return {
            entry: _class_label(os.path.relpath(entry, path))
            for dirpath, names in walk_folder(path, {})
            for entry in (os.path.join(dirpath, n) for n in names if is_video_path(n))
        }
    text = os.fspath(item)
    if os.path.lexists(path):
        matches = [path]
    elif glob.has_magic(text):
        matches = glob.glob(os.path.expanduser(text))
    else:
        return {}
    return {
        _key(m): normalise_label(Path(m).parent.name)
        for m in matches
        if is_video_path(m) and not os.path.isdir(m)
    }


def _only_videos(item: str | os.PathLike) -> bool:
    """Whether ``item`` is a video file, or a glob that matches video files only."""
    text = os.fspath(item)
    if os.path.isdir(text):
        return False
    if os.path.lexists(text) or not glob.has_magic(text):
        return is_video_path(text)
    matches = glob.glob(os.path.expanduser(text))
    return bool(matches) and all(is_video_path(m) for m in matches)


def walk_folder(root: str, unlisted: dict[str, str]) -> Iterator[tuple[str, list[str]]]:
    """``(folder, names of its entries)`` for ``root`` and every folder below it that
    discovery enters (symbolic links are not followed). Each folder is opened relative to its
    parent's descriptor, so a path longer than the system's limit is still listed; a folder
    that cannot be opened or listed goes into ``unlisted`` with the reason."""
    stack: list[tuple[int, str, Iterator[os.DirEntry]]] = []
    pending: tuple[str, int | None, str] | None = (root, None, root)
    try:
        while pending or stack:
            if pending is not None:
                name, parent, path = pending
                pending = None
                listed = _list_folder(name, parent, path, unlisted)
                if listed is not None:
                    stack.append((listed[0], path, iter(listed[1])))
                    yield path, [e.name for e in listed[1]]
                continue
            fd, path, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                os.close(stack.pop()[0])
            elif _walked(entry.name) and _is_folder(entry):
                pending = (entry.name, fd, os.path.join(path, entry.name))
    finally:
        for fd, _, _ in stack:
            os.close(fd)


def _list_folder(
    name: str, parent: int | None, path: str, unlisted: dict[str, str]
) -> tuple[int, list[os.DirEntry]] | None:
    """The open folder ``name`` (relative to the folder descriptor ``parent``; a link is
    followed only for the root) and its entries by name; None, with the reason in
    ``unlisted[path]``, when it cannot be read."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    if parent is not None:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(name, flags, dir_fd=parent)
    except OSError as exc:
        unlisted[path] = _unlisted_reason(exc)
        return None
    try:
        with os.scandir(fd) as scan:
            return fd, sorted(scan, key=lambda e: e.name)
    except OSError as exc:
        os.close(fd)
        unlisted[path] = _unlisted_reason(exc)
        return None


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _unlisted_reason(exc: OSError) -> str:
    detail = exc.strerror or type(exc).__name__
    return f"a folder that cannot be read ({detail}): the images in it were not analysed"


def _looks_like_image(name: str) -> bool:
    base = os.path.basename(name)
    suffix = os.path.splitext(base)[1].lower()
    return not base.startswith(".") and suffix in (*IMAGE_SUFFIXES, *VECTOR_SUFFIXES)


def _walked(folder: str) -> bool:
    """Whether discovery descends into ``folder`` (not hidden, not a masks folder)."""
    return not folder.startswith(".") and folder.lower() not in _IGNORED_DIRS


def _unusable(path: str) -> bool:
    """Not a regular file (or a link to one), or a vector image; ``path`` is not opened."""
    if os.path.splitext(path)[1].lower() in VECTOR_SUFFIXES:
        return True
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True


def _class_label(relative: str) -> str | None:
    """The label of the nearest class folder (real/fake or a synonym) on the path."""
    for part in reversed(Path(relative).parts[:-1]):
        label = normalise_label(part)
        if label:
            return label
    return None


def label_list(
    paths: Sequence[str], discovered: Sequence[str | None], labels: LabelSpec
) -> list[str | None]:
    """Labels per path: as discovered, from folder names, a CSV manifest or a mapping."""
    if labels is None:
        return list(discovered)
    if isinstance(labels, str) and labels == "folders":
        found = [normalise_label(Path(p).parent.name) for p in paths]
        if not any(found):
            raise ValueError("labels='folders': no image sits in a real/ or fake/ folder")
        return found
    if isinstance(labels, Mapping):
        mapping = {_key(p): _label(v, f"labels[{p!r}]") for p, v in labels.items()}
        origin = "the labels mapping"
    else:
        mapping = {_key(s.path): s.label for s in read_manifest(labels)}
        origin = os.fspath(labels)
    found = [mapping.get(_key(p)) for p in paths]
    if not any(found):
        raise ValueError(f"{origin} gives a label to none of the {len(paths)} input images")
    return found


def split_item(item: Any) -> tuple[Any, str | None]:
    """``(image, label)`` from a dataset item: an image, or a tuple/list ``(image, label, ...)``."""
    if isinstance(item, (tuple, list)):
        if not item:
            raise ValueError("a dataset item is an empty tuple")
        label = _label(item[1], "dataset label") if len(item) > 1 else None
        return _image(item[0]), label
    return _image(item), None


def _image(value: Any) -> Any:
    """A torch image tensor ``(C, H, W)`` or ``(H, W, C)`` as an ``(H, W, C)`` array."""
    if not isinstance(value, torch.Tensor):
        return value
    array = value.detach().cpu().numpy()
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    return array


def _label(value: Any, what: str) -> str | None:
    """``"real"``/``"fake"`` for a name, a synonym, 0/1 or a 0-d tensor; None for None/NaN."""
    if value is None:
        return None
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        value = value.item()
    if isinstance(value, float):
        if np.isnan(value):
            return None
        if value.is_integer():
            value = int(value)
    label = normalise_label(str(int(value)) if isinstance(value, (bool, int)) else str(value))
    if label is None:
        raise ValueError(f"{what}: unknown label {value!r}; expected real/fake, 0/1 or a synonym")
    return label


def _key(path: str | os.PathLike) -> str:
    return os.path.abspath(os.fspath(path))


def _describe(inputs: InputSpec) -> str:
    if isinstance(inputs, (str, os.PathLike)):
        return os.fspath(inputs)
    return f"{len(inputs)} inputs"  # type: ignore[arg-type]

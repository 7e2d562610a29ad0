"""Datasets: discovery of labelled images, leak-free splits, and a DataLoader that never crashes.

:func:`discover` turns a folder, a CSV manifest, a glob pattern or a list of them into sorted
:class:`Sample` records; :func:`stratified_split` assigns train/val/test per label (and group),
keeping exact duplicates together so no image leaks across splits; :class:`ImageDataset` decodes
through :func:`deepfake_xai.images.load_image` and the detector's :class:`Harmonization`, and
:func:`make_loader` drops unreadable files from their batch and records why.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import os
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache, total_ordering
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from .degradations import Degradations
from .face_index import FaceIndex, frame
from .images import ImageLoadError, load_image
from .preprocessing import Harmonization, to_uint8_tensor
from .pseudofakes.sbi import self_blend, torch_rng

LABELS = ("real", "fake")
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    [
        ".jpg",
        ".jpeg",
        ".png",
        ".webp",
        ".bmp",
        ".gif",
        ".tif",
        ".tiff",
        ".ppm",
        ".avif",
        ".heic",
        ".heif",
    ]
)

_REAL_NAMES = ["real", "reals", "authentic", "genuine", "original", "pristine", "0", "0_real"]
_FAKE_NAMES = [
    "fake",
    "fakes",
    "synthetic",
    "generated",
    "ai_generated",
    "deepfake",
    "deepfakes",
    "manipulated",
    "ai",
    "1",
    "1_fake",
]
_LABEL_SYNONYMS = {**dict.fromkeys(_REAL_NAMES, "real"), **dict.fromkeys(_FAKE_NAMES, "fake")}
_SPLIT_SYNONYMS = {
    **dict.fromkeys(("train", "training"), "train"),
    **dict.fromkeys(("val", "valid", "validation", "dev"), "val"),
    **dict.fromkeys(("test", "testing"), "test"),
}
_IGNORED_DIRS = frozenset({"masks", "mask", "__macosx"})
_MANIFEST_FIELDS = ("path", "label", "split", "group")
_HASH_CHUNK = 1 << 20
SELF_BLEND = "self_blend"


@total_ordering
@dataclass(frozen=True)
class Sample:
    """One image file with what is known about it (``label`` None when unknown)."""

    path: Path
    label: str | None = None
    split: str | None = None
    group: str | None = None
    make: str | None = None  # None: the file as it is; "self_blend": a pseudo-fake made from it

    def __post_init__(self) -> None:
        if self.label is not None and self.label not in LABELS:
            raise ValueError(
                f"{self.path}: label must be one of {LABELS} or None, not {self.label!r}"
            )
        if self.split is not None and self.split not in SPLITS:
            raise ValueError(
                f"{self.path}: split must be one of {SPLITS} or None, not {self.split!r}"
            )

    def __lt__(self, other: Sample) -> bool:
        return self._key() < other._key()

    def _key(self) -> tuple[Path, str, str, str]:
        return self.path, self.label or "", self.split or "", self.group or ""

    @property
    def target(self) -> int | None:
        """1 for fake, 0 for real, None when the label is unknown."""
        return None if self.label is None else LABELS.index(self.label)


def normalise_label(name: str) -> str | None:
    """``"real"`` or ``"fake"`` for a class name or synonym (case-insensitive), else None."""
    return _LABEL_SYNONYMS.get(_canonical(name))


def normalise_split(name: str) -> str | None:
    """``"train"``, ``"val"`` or ``"test"`` for a split name or synonym, else None."""
    return _SPLIT_SYNONYMS.get(_canonical(name))


def _canonical(name: str) -> str:
    return str(name).strip().lower().replace("-", "_").replace(" ", "_")


# -- discovery ---------------------------------------------------------------------------------
def discover(
    source: str | os.PathLike | Sequence[str | os.PathLike], *, recursive: bool = True
) -> list[Sample]:
    """Every image under ``source`` as a sorted list of samples.

    ``source`` is a folder laid out as ``ROOT/{real,fake}`` or ``ROOT/{train,val,test}/{real,fake}``
    (synonyms accepted, wrapper folders such as Kaggle's ``real_vs_fake/real-vs-fake`` are
    descended), a CSV manifest (``path,label[,split][,group]``), a plain folder of unlabelled
    images, a single image, a glob pattern, or a list of these. Folders named ``masks`` and hidden
    entries are skipped. A folder whose sub-folders look like classes but are not real/fake
    raises ValueError listing what was found.
    """
    if isinstance(source, (list, tuple)):
        found = [s for item in source for s in discover(item, recursive=recursive)]
    else:
        found = _discover_one(source, recursive)
    return _unique(found)


def _discover_one(source: str | os.PathLike, recursive: bool) -> list[Sample]:
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_dir():
        return _discover_dir(_absolute(path), recursive)
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return read_manifest(path)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return [_sample_from_path(_absolute(path))]
        raise ValueError(f"{path}: not a folder, a CSV manifest or an image file")
    if glob.has_magic(text):
        return _discover_glob(text, recursive)
    raise FileNotFoundError(f"{path}: no such file or folder")


def _discover_glob(pattern: str, recursive: bool) -> list[Sample]:
    matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
    samples = []
    for match in map(Path, matches):
        if match.is_dir():
            samples += _discover_dir(_absolute(match), recursive)
        elif match.suffix.lower() in IMAGE_SUFFIXES:
            samples.append(_sample_from_path(_absolute(match)))
    if not samples:
        raise FileNotFoundError(f"{pattern}: the pattern matches no images")
    return samples


def _sample_from_path(path: Path) -> Sample:
    """A loose image: labelled by its parent folder, split by the grandparent, when they say so."""
    label = normalise_label(path.parent.name)
    split = normalise_split(path.parent.parent.name) if label else None
    return Sample(path, label, split)


def _discover_dir(root: Path, recursive: bool) -> list[Sample]:
    root = _unwrap(root)
    subdirs = _subdirs(root)
    split_dirs = [d for d in subdirs if normalise_split(d.name)]
    label_dirs = [d for d in subdirs if normalise_label(d.name)]
    if split_dirs and label_dirs:
        raise ValueError(
            f"{root}: mixes split folders {_names(split_dirs)} with class folders "
            f"{_names(label_dirs)}; put the class folders inside the split folders"
        )
    if split_dirs:
        _reject_unknown(root, subdirs, split_dirs, "a split (train/val/test)")
        loose = _images_in(root, recursive=False)
        return [Sample(p) for p in loose] + [
            s for d in split_dirs for s in _labelled(d, recursive, normalise_split(d.name))
        ]
    if label_dirs:
        return _labelled(root, recursive, None)
    unknown = [d for d in subdirs if _has_images(d)]
    if len(unknown) >= 2 and not _images_in(root, recursive=False):
        raise ValueError(
            f"{root}: found folders {_names(unknown)} but none is a class name; expected "
            f"{'/'.join(LABELS)} (or a synonym: {', '.join(sorted(_LABEL_SYNONYMS))}), "
            "optionally inside train/val/test folders. Rename them, pass a CSV manifest "
            f"(path,label), or a glob such as '{root}/**/*.jpg' for unlabelled images"
        )
    return [Sample(p) for p in _images_in(root, recursive)]


def _labelled(folder: Path, recursive: bool, split: str | None) -> list[Sample]:
    """Samples from ``folder/{real,fake}``; loose images there are unlabelled."""
    subdirs = _subdirs(folder)
    label_dirs = [d for d in subdirs if normalise_label(d.name)]
    _reject_unknown(folder, subdirs, label_dirs, "a class (real/fake)")
    samples = [Sample(p, None, split) for p in _images_in(folder, recursive=False)]
    for d in label_dirs:
        label = normalise_label(d.name)
        samples += [Sample(p, label, split) for p in _images_in(d, recursive)]
    return samples


def _reject_unknown(root: Path, subdirs: list[Path], known: list[Path], what: str) -> None:
    unknown = [d for d in subdirs if d not in known]
    if unknown:
        raise ValueError(
            f"{root}: folders {_names(unknown)} are not {what}; found {_names(subdirs)}. "
            "Rename or remove them, or pass a CSV manifest (path,label[,split][,group])"
        )


def _unwrap(root: Path) -> Path:
    """Descend wrapper folders (one sub-folder, no images), e.g. Kaggle's real_vs_fake/."""
    while True:
        subdirs = _subdirs(root)
        if len(subdirs) != 1 or _images_in(root, recursive=False):
            return root
        only = subdirs[0]
        if normalise_label(only.name) or normalise_split(only.name):
            return root
        root = only


def _subdirs(folder: Path) -> list[Path]:
    return sorted(
        d
        for d in folder.iterdir()
        if d.is_dir() and not d.name.startswith(".") and d.name.lower() not in _IGNORED_DIRS
    )


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    if not recursive:
        return sorted(p for p in folder.iterdir() if _is_image(p))
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [
            d for d in dirnames if not d.startswith(".") and d.lower() not in _IGNORED_DIRS
        ]
        found += [Path(dirpath, f) for f in filenames if _is_image(Path(dirpath, f))]
    return sorted(found)


def _has_images(folder: Path) -> bool:
    return any(
        Path(dirpath, f).suffix.lower() in IMAGE_SUFFIXES
        for dirpath, _, filenames in os.walk(folder)
        for f in filenames
    )


def _is_image(path: Path) -> bool:
    return (
        path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()
    )


def _names(folders: Iterable[Path]) -> list[str]:
    return [d.name for d in folders]


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _unique(samples: Iterable[Sample]) -> list[Sample]:
    """Sorted by path, one sample per path; the same path with different labels is an error."""
    by_path: dict[Path, Sample] = {}
    for sample in samples:
        seen = by_path.setdefault(sample.path, sample)
        if seen != sample:
            raise ValueError(
                f"{sample.path}: listed twice with different details: {seen} / {sample}"
            )
    return [by_path[p] for p in sorted(by_path)]


def as_samples(
    data: str | os.PathLike | Sequence[str | os.PathLike] | Sequence[Sample],
) -> list[Sample]:
    """``data`` itself when it is a list of samples, else :func:`discover` of it."""
    if isinstance(data, (list, tuple)) and data and all(isinstance(s, Sample) for s in data):
        return list(data)
    return discover(data)


def describe_data(data: str | os.PathLike | Sequence[str | os.PathLike] | Sequence[Sample]) -> str:
    """A short name for ``data`` in messages and checkpoint metadata."""
    if isinstance(data, (list, tuple)):
        if data and isinstance(data[0], Sample):
            return f"{len(data)} samples"
        return ", ".join(map(os.fspath, data))
    return os.fspath(data)


# -- manifests ---------------------------------------------------------------------------------
def read_manifest(path: str | os.PathLike) -> list[Sample]:
    """Samples from a CSV with columns ``path,label[,split][,group]`` (paths relative to it)."""
    path = Path(path)
    base = _absolute(path).parent
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = {(c or "").strip().lower(): c for c in reader.fieldnames or ()}
        if "path" not in columns:
            raise ValueError(f"{path}: a manifest needs a 'path' column; found {list(columns)}")
        samples = [_manifest_row(path, base, columns, row, n) for n, row in enumerate(reader, 2)]
    return _unique(samples)


def _manifest_row(csv_path: Path, base: Path, columns: dict, row: dict, line: int) -> Sample:
    def cell(name: str) -> str:
        return (row.get(columns[name]) or "").strip() if name in columns else ""

    if not cell("path"):
        raise ValueError(f"{csv_path}, line {line}: empty path")
    label, split = cell("label"), cell("split")
    if label and normalise_label(label) is None:
        raise ValueError(
            f"{csv_path}, line {line}: unknown label {label!r}; expected real/fake or a synonym"
        )
    if split and normalise_split(split) is None:
        raise ValueError(
            f"{csv_path}, line {line}: unknown split {split!r}; expected train/val/test"
        )
    return Sample(
        _absolute(base / cell("path")),
        normalise_label(label) if label else None,
        normalise_split(split) if split else None,
        cell("group") or None,
    )


def write_manifest(samples: Iterable[Sample], path: str | os.PathLike) -> Path:
    """Write ``samples`` as a CSV manifest (paths relative to it when possible), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = _absolute(path).parent
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(_MANIFEST_FIELDS)
        for s in samples:
            writer.writerow([_relative(s.path, base), s.label or "", s.split or "", s.group or ""])
    os.replace(tmp, path)
    return path


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:  # another drive on Windows
        return str(path)


# -- duplicates, splits, subsets ---------------------------------------------------------------
def file_sha1(path: str | os.PathLike) -> str:
    """SHA-1 of a file's bytes."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def duplicate_groups(samples: Sequence[Sample]) -> list[list[Sample]]:
    """Sets of samples whose files are byte-identical (only same-size files are hashed)."""
    by_size: dict[int, list[Sample]] = defaultdict(list)
    for sample in samples:
        try:
            by_size[sample.path.stat().st_size].append(sample)
        except OSError:
            continue
    by_hash: dict[str, list[Sample]] = defaultdict(list)
    for same_size in by_size.values():
        if len(same_size) < 2:
            continue
        for sample in same_size:
            try:
                by_hash[file_sha1(sample.path)].append(sample)
            except OSError:
                continue
    return sorted(sorted(g) for g in by_hash.values() if len(g) > 1)


def find_duplicates(samples: Sequence[Sample]) -> list[tuple[Sample, Sample]]:
    """Pairs of byte-identical files: the first of each set paired with every other one."""
    return [(group[0], other) for group in duplicate_groups(samples) for other in group[1:]]


def leaks(samples: Sequence[Sample]) -> list[tuple[Sample, Sample]]:
    """Duplicate pairs that sit in different splits (the same image seen in training and test)."""
    return [(a, b) for a, b in find_duplicates(samples) if a.split != b.split]


def stratified_split(
    samples: Sequence[Sample], ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> list[Sample]:
    """Assign train/val/test to samples without a split, per (label, group) stratum.

    Samples that already have a split keep it; byte-identical files always land in the same
    split (joining an existing split of any of them). Deterministic for a given seed, whatever the
    input order. Returns the samples in input order.
    """
    return _assign(samples, SPLITS, _ratios(ratios, 3), seed, eligible=lambda s: s.split is None)


def carve_split(
    samples: Sequence[Sample], target: str, *, source: str = "train", fraction: float, seed: int = 0
) -> list[Sample]:
    """Move ``fraction`` of the ``source`` split into a new ``target`` split, stratified.

    Used when a dataset ships train and val but no test: the held-out test images then come
    out of train, and val stays the validation set.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    if normalise_split(target) != target or target == source:
        raise ValueError(f"target must be a split name other than {source!r}, got {target!r}")
    return _assign(
        samples,
        (source, target),
        (1 - fraction, fraction),
        seed,
        eligible=lambda s: s.split == source,
    )


def complete_splits(
    samples: Sequence[Sample],
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    log: Callable[[str], object] = print,
) -> list[Sample]:
    """Samples with train/val/test assigned: unsplit ones by :func:`stratified_split`; a
    missing val or test split is carved out of train, so val stays the validation set and test
    is never seen in training."""
    train_r, val_r, test_r = _ratios(ratios, 3)
    samples = list(samples)
    if any(s.split is None for s in samples):
        samples = stratified_split(samples, ratios, seed=seed)
    present = {s.split for s in samples}
    for name, ratio in (("val", val_r), ("test", test_r)):
        if name not in present and ratio > 0 and "train" in present:
            fraction = ratio / (ratio + train_r)
            samples = carve_split(samples, name, fraction=fraction, seed=seed)
            log(f"no {name} split in the data: {fraction:.1%} of train (stratified) became {name}")
    return samples


def _ratios(ratios: Sequence[float], n: int) -> tuple[float, ...]:
    values = tuple(float(r) for r in ratios)
    if len(values) != n or any(r < 0 for r in values) or sum(values) <= 0:
        raise ValueError(
            f"ratios must be {n} non-negative numbers with a positive sum, got {ratios}"
        )
    total = sum(values)
    return tuple(r / total for r in values)


def _assign(samples, names, ratios, seed, *, eligible) -> list[Sample]:
    """Give each eligible sample one of ``names`` in ``ratios`` per stratum, duplicates together."""
    assigned: dict[Sample, str] = {}
    strata: dict[tuple[str, str], list[list[Sample]]] = defaultdict(list)
    for unit in _units(sorted(set(samples))):
        free = [s for s in unit if eligible(s)]
        fixed = next((s.split for s in unit if not eligible(s) and s.split in names), None)
        if fixed is not None:
            assigned.update(dict.fromkeys(free, fixed))
        elif free:
            strata[(free[0].label or "", free[0].group or "")].append(free)
    rng = np.random.default_rng(seed)
    for key in sorted(strata):
        units = strata[key]
        cuts = np.cumsum(_split_sizes(ratios, sum(map(len, units))))
        offset = 0
        for u in rng.permutation(len(units)):
            k = next(k for k, cut in enumerate(cuts) if offset < cut or k == len(cuts) - 1)
            assigned.update(dict.fromkeys(units[u], names[k]))
            offset += len(units[u])
    return [replace(s, split=assigned[s]) if s in assigned else s for s in samples]


def _units(samples: list[Sample]) -> list[list[Sample]]:
    """Sorted samples grouped so that byte-identical files form one unit; singletons otherwise."""
    groups = duplicate_groups(samples)
    grouped = {s for g in groups for s in g}
    return sorted(groups + [[s] for s in samples if s not in grouped])


def subsample(samples: Sequence[Sample], per_class: int, seed: int = 0) -> list[Sample]:
    """At most ``per_class`` images of each label, drawn at random, each split keeping its share.

    Sorted by path; unlabelled samples are dropped.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    rng = np.random.default_rng(seed)
    kept: list[Sample] = []
    for label in LABELS:
        by_split: dict[str, list[Sample]] = defaultdict(list)
        for s in sorted(samples):
            if s.label == label:
                by_split[s.split or ""].append(s)
        splits = sorted(by_split)
        sizes = [len(by_split[k]) for k in splits]
        quotas = _apportion(sizes, min(per_class, sum(sizes)))
        for split, quota in zip(splits, quotas, strict=True):
            members = by_split[split]
            picks = rng.choice(len(members), size=quota, replace=False)
            kept += [members[i] for i in sorted(picks)]
    return sorted(kept)


def _apportion(weights: Sequence[float], n: int) -> list[int]:
    """``n`` split in proportion to ``weights`` (largest remainder; ties to the earlier one)."""
    total = sum(weights)
    if total <= 0:
        return [0] * len(weights)
    exact = [n * w / total for w in weights]
    quotas = [int(x) for x in exact]
    order = sorted(range(len(exact)), key=lambda k: (quotas[k] - exact[k], k))
    for k in order[: n - sum(quotas)]:
        quotas[k] += 1
    return quotas


def _split_sizes(ratios: Sequence[float], n: int) -> list[int]:
    """:func:`_apportion`, but every split with a positive ratio gets one sample if n allows."""
    sizes = _apportion(ratios, n)
    wanted = [k for k, r in enumerate(ratios) if r > 0]
    if n >= len(wanted):
        for k in wanted:
            if sizes[k] == 0:
                sizes[max(range(len(sizes)), key=sizes.__getitem__)] -= 1
                sizes[k] = 1
    return sizes


def split_counts(samples: Iterable[Sample]) -> dict[str, dict[str, int]]:
    """``{split: {label: count}}`` with ``"none"`` for a missing split or label."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for s in samples:
        counts[s.split or "none"][s.label or "none"] += 1
    return {k: dict(v) for k, v in sorted(counts.items())}


def fingerprint(samples: Iterable[Sample]) -> str:
    """SHA-256 over the sorted (relative path, label, split, file size) of every sample.

    Identifies the exact data a model saw, independent of where the dataset folder lives.
    """
    # absolute first: a run may add pseudo-fakes under a relative folder to an absolute dataset
    samples = sorted(replace(s, path=Path(os.path.abspath(s.path))) for s in samples)
    if not samples:
        return hashlib.sha256(b"").hexdigest()
    root = Path(os.path.commonpath([s.path.parent for s in samples]))
    digest = hashlib.sha256()
    for s in samples:
        try:
            size = s.path.stat().st_size
        except OSError:
            size = -1
        line = f"{s.path.relative_to(root).as_posix()}\t{s.label}\t{s.split}\t{size}\n"
        digest.update(line.encode())
    return digest.hexdigest()


# -- torch dataset and loader ------------------------------------------------------------------
@dataclass(frozen=True)
class Augmentation:
    """Train-time augmentations on uint8 tensors (the research notebook's set, plus options).

    Random resized crop (``crop_scale`` of the area), horizontal flip, rotation by up to
    ``rotation`` degrees, colour jitter of strength ``color_jitter``; then, last, everyday
    ``degradations`` (blur, rescale, JPEG; :mod:`deepfake_xai.degradations`), which make a
    detector less reliant on fine detail that compression and resizing wipe out.
    """

    crop_scale: tuple[float, float] = (0.8, 1.0)
    hflip: bool = True
    rotation: float = 10.0
    color_jitter: float = 0.2
    degradations: Degradations | None = None

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """Augment one uint8 ``(3, H, W)`` tensor; the output keeps its size and dtype."""
        image = _transform(self, image.shape[-1])(image)
        return self.degradations(image) if self.degradations else image


@lru_cache(maxsize=16)
def _transform(aug: Augmentation, size: int):
    from torchvision.transforms import v2

    steps = [v2.RandomResizedCrop(size, scale=aug.crop_scale, antialias=True)]
    if aug.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if aug.rotation:
        steps.append(v2.RandomRotation(aug.rotation))
    if aug.color_jitter:
        j = aug.color_jitter
        steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j, hue=min(0.5, j / 4)))
    return v2.Compose(steps)


@dataclass(frozen=True)
class LoadFailure:
    """An item that could not be decoded: which file and why."""

    index: int
    path: Path
    reason: str


class ImageDataset(Dataset):
    """Decoded, harmonised images as ``(uint8 (3, S, S), target float, index)``.

    The target is 1.0 for fake, 0.0 for real and NaN when unknown. An unreadable file yields a
    :class:`LoadFailure` instead (and is kept in :attr:`errors`); :func:`collate` drops it.
    With ``faces`` (a :class:`~deepfake_xai.face_index.FaceIndex` holding every sample), each
    image's largest face is framed as ``analyze`` frames it before harmonisation; samples with
    ``make="self_blend"`` become self-blended pseudo-fakes, masked by that face's landmarks.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        harmonization: Harmonization,
        *,
        augment: Augmentation | None = None,
        faces: FaceIndex | None = None,
    ):
        self.samples = list(samples)
        self.harmonization = harmonization
        self.augment = augment
        self.faces = faces
        self.errors: dict[Path, str] = {}
        side = 2 * harmonization.image_size
        self._draft = None if harmonization.face_crop or faces else (side, side)
        if any(s.make not in (None, SELF_BLEND) for s in self.samples):
            raise ValueError(f"Sample.make must be None or {SELF_BLEND!r}")
        if faces is None and any(s.make == SELF_BLEND for s in self.samples):
            raise ValueError("self-blended samples need faces= (their landmarks place the mask)")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, float, int] | LoadFailure:
        sample = self.samples[index]
        try:
            tensor = self._decode(sample)
        except ImageLoadError as exc:
            self.errors[sample.path] = exc.reason
            return LoadFailure(index, sample.path, exc.reason)
        if self.augment is not None:
            tensor = self.augment(tensor)
        target = float("nan") if sample.target is None else float(sample.target)
        return tensor, target, index

    def _decode(self, sample: Sample) -> torch.Tensor:
        image = load_image(sample.path, draft_size=self._draft)
        box = self.faces.box(sample.path) if self.faces is not None else None
        if self.faces is not None and box is None:
            raise ImageLoadError(str(sample.path), "no face found")
        if box is None:
            return to_uint8_tensor(self.harmonization.apply(image))
        framed, framing = frame(image, box)
        tensor = to_uint8_tensor(self.harmonization.apply(framed))
        if sample.make != SELF_BLEND:
            return tensor
        points = framing.points(box.landmarks, image.size, self.harmonization)
        blended = self_blend(tensor.permute(1, 2, 0).numpy(), points, torch_rng())
        return torch.from_numpy(blended).permute(2, 0, 1).contiguous()


class Batch(NamedTuple):
    """A collated batch: images uint8 ``(B, 3, S, S)``, targets ``(B,)``, dataset indices."""

    images: torch.Tensor
    targets: torch.Tensor
    indices: torch.Tensor
    failures: tuple[LoadFailure, ...] = ()


def collate(items: Sequence[tuple[torch.Tensor, float, int] | LoadFailure]) -> Batch:
    """Stack the decoded items of a batch; failed ones travel along in ``failures``."""
    good = [item for item in items if not isinstance(item, LoadFailure)]
    failures = tuple(item for item in items if isinstance(item, LoadFailure))
    if not good:
        empty = torch.zeros(0, dtype=torch.long)
        return Batch(torch.zeros(0, 3, 0, 0, dtype=torch.uint8), empty.float(), empty, failures)
    images, targets, indices = zip(*good, strict=True)
    return Batch(
        torch.stack(images),
        torch.tensor(targets, dtype=torch.float32),
        torch.tensor(indices, dtype=torch.long),
        failures,
    )


class SafeLoader:
    """A DataLoader that yields ``(images, targets, indices)`` and records unreadable files.

    ``errors`` lists ``(path, reason)`` for every file that failed, across epochs and workers.
    """

    def __init__(self, loader: DataLoader, seed: int = 0):
        self.loader = loader
        self.seed = seed
        self._errors: dict[Path, str] = {}

    @property
    def dataset(self) -> ImageDataset:
        return self.loader.dataset

    @property
    def errors(self) -> list[tuple[Path, str]]:
        return sorted(self._errors.items())

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        """Reseed the shuffle so epoch ``epoch`` has the same order in a resumed run."""
        self.loader.generator.manual_seed(self.seed + epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for batch in self.loader:
            for failure in batch.failures:
                self._errors[failure.path] = failure.reason
            if len(batch.indices):
                yield batch.images, batch.targets, batch.indices


def make_loader(
    dataset: ImageDataset,
    batch_size: int = 32,
    shuffle: bool = False,
    num_workers: int = 0,
    seed: int = 0,
    pin_memory: bool | None = None,
    drop_last: bool = False,
    balance: bool = False,
) -> SafeLoader:
    """A seeded loader (same seed, same order and augmentations) that never fails on a bad file.

    ``pin_memory=None`` pins when CUDA is available. Workers are persistent and each seeds
    Python's and NumPy's generators from its torch seed. ``balance`` draws each epoch's images
    (as many as the dataset holds, with replacement) so that real and fake are equally likely,
    whatever their counts.
    """
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if balance:
        sampler = WeightedRandomSampler(
            class_weights(dataset.samples), len(dataset), generator=generator
        )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        drop_last=drop_last,
        generator=generator,
        worker_init_fn=_seed_worker if num_workers else None,
        persistent_workers=num_workers > 0,
    )
    return SafeLoader(loader, seed)


def class_weights(samples: Sequence[Sample]) -> list[float]:
    """A sampling weight per sample that gives each label the same total weight."""
    counts = defaultdict(int)
    for s in samples:
        counts[s.label] += 1
    return [1.0 / counts[s.label] for s in samples]


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)

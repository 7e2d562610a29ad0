"""A harmonised copy of a dataset: both classes decoded, cropped, resized and encoded alike.

Shortcuts in encoding (format, JPEG quality, subsampling, metadata) and in size disappear when
every image goes through the same :class:`~deepfake_xai.preprocessing.Harmonization` and is
written in one format. Splits and labels are kept; unreadable files are recorded, not fatal.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections import Counter
from functools import partial
from pathlib import Path

from ..data import Sample, write_manifest
from ..images import ImageLoadError, load_image
from ..preprocessing import Harmonization
from ._io import SampleSource, parallel_map, resolve_samples, write_errors, write_text

log = logging.getLogger(__name__)

SETTINGS = "harmonization.json"
MANIFEST = "manifest.csv"
ERRORS = "errors.csv"


def harmonize_dataset(
    source: SampleSource,
    out: str | os.PathLike,
    harmonization: Harmonization | None = None,
    *,
    anonymize_names: bool = False,
    workers: int = 1,
) -> list[Sample]:
    """Write every image through ``harmonization`` into ``out/<split>/<label>/``.

    The output is JPEG at ``harmonization.jpeg_quality`` (encoded once), or PNG when it is None.
    ``anonymize_names`` replaces file names with a hash of the source path, so naming schemes
    that differ by class do not carry over. Returns the written samples (labels, splits and
    groups kept) and writes ``manifest.csv``; unreadable files go to ``errors.csv``. Rerunning
    into the same folder resumes: finished files are kept, and a folder written with other
    settings is refused.
    """
    harmonization = harmonization or Harmonization(image_size=256, jpeg_quality=95)
    _check_faces(harmonization)
    root = Path(out)
    samples = resolve_samples(source)
    if not samples:
        raise ValueError(f"{source}: no images found to harmonise")
    _claim(root, {**harmonization.to_dict(), "anonymize_names": anonymize_names})
    targets = _targets(samples, root, harmonization, anonymize_names)
    jobs = [(str(s.path), t) for s, t in zip(samples, targets, strict=True)]
    results = parallel_map(partial(_write_one, harmonization=harmonization), jobs, workers)
    written, errors = [], []
    for sample, target, error in zip(samples, targets, results, strict=True):
        if error is None:
            written.append(dataclasses.replace(sample, path=target))
        else:
            log.warning("skipping %s: %s", sample.path, error)
            errors.append((str(sample.path), error))
    write_manifest(written, root / MANIFEST)
    write_errors(root / ERRORS, errors)
    return written


def _check_faces(harmonization: Harmonization) -> None:
    """Fail before writing anything when face crops are asked for without OpenCV."""
    from ..faces import EXTRA_HINT, faces_available

    if harmonization.face_crop and not faces_available():
        raise ValueError(f"face_crop=True: {EXTRA_HINT}")


def _claim(root: Path, settings: dict) -> None:
    """Record the settings in ``root``; refuse a folder already written with other settings."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / SETTINGS
    if path.is_file():
        found = json.loads(path.read_text(encoding="utf-8"))
        if found != settings:
            raise ValueError(
                f"{root} holds a harmonised copy made with other settings ({found}); "
                f"choose another folder or delete it"
            )
    write_text(path, json.dumps(settings, indent=2) + "\n")


def _targets(
    samples: list[Sample], root: Path, harmonization: Harmonization, anonymize: bool
) -> list[Path]:
    """One output path per sample; names that clash in one folder get a short hash suffix."""
    suffix = ".png" if harmonization.jpeg_quality is None else ".jpg"
    names = [
        root.joinpath(
            *(p for p in (s.split, s.label) if p),
            (_path_hash(s.path) if anonymize else s.path.stem) + suffix,
        )
        for s in samples
    ]
    seen = Counter(names)
    return [
        n.with_stem(f"{n.stem}-{_path_hash(s.path)[:8]}") if seen[n] > 1 else n
        for n, s in zip(names, samples, strict=True)
    ]


def _path_hash(path: Path) -> str:
    """16 hex digits derived from the full source path: unique, and blind to the class."""
    return hashlib.sha1(str(path).encode()).hexdigest()[:16]


def _write_one(job: tuple[str, Path], harmonization: Harmonization) -> str | None:
    """Harmonise and save one image atomically; the reason on failure, None on success.

    The JPEG re-encode of :meth:`Harmonization.apply` happens here, as the one save, so each
    output is compressed exactly once and decodes to what ``apply`` would return.
    """
    source, target = job
    if target.is_file():
        return None
    quality = harmonization.jpeg_quality
    try:
        image = dataclasses.replace(harmonization, jpeg_quality=None).apply(load_image(source))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        if quality is None:
            image.save(tmp, format="PNG")
        else:
            image.save(tmp, format="JPEG", quality=quality)
        os.replace(tmp, target)
    except (ImageLoadError, OSError) as exc:
        return getattr(exc, "reason", None) or str(exc)
    return None

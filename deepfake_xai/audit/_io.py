"""Shared plumbing for the audit and the harmonised copy: samples in, parallel map, safe writes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..data import Sample, discover

T = TypeVar("T")
R = TypeVar("R")

SampleSource = str | os.PathLike | Sequence[str | os.PathLike] | Sequence[Sample]


def resolve_samples(source: SampleSource) -> list[Sample]:
    """Samples as given, or discovered from a folder / manifest / glob / list of them."""
    given = isinstance(source, Sequence) and not isinstance(source, str) and bool(source)
    if given and all(isinstance(s, Sample) for s in source):
        return list(source)
    return discover(source)


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int) -> Iterator[R]:
    """``map(fn, items)`` in order, over ``workers`` processes when more than one."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1 or len(items) < 2:
        yield from map(fn, items)
        return
    chunk = max(1, len(items) // (8 * workers))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(fn, items, chunksize=chunk)


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` atomically (temporary file, then rename), so readers never see half."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_errors(path: Path, errors: Iterable[tuple[str, str]]) -> Path:
    """A two-column CSV (path, reason) of the files that could not be used."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "reason"])
    writer.writerows(errors)
    return write_text(path, buffer.getvalue())


def jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars unwrapped, NaN/inf as None, tuples as lists."""
    import math

    import numpy as np

    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

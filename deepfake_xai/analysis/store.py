"""The on-disk layout of an analysis run, written so that a killed run resumes cleanly.

``predictions.csv`` is the commit record. Each batch's rows go into the memmapped arrays
(embeddings, CAMs) at once; at a commit the arrays are flushed first, then the CSV rows since the
last commit are appended with one write, a flush and an fsync. A run killed at any moment
therefore leaves, at worst, a torn last line (truncated on resume) or array rows without CSV
rows (recomputed on resume); never a row without its data. Commits happen after a batch once
``commit_interval`` seconds have passed since the previous one (every batch with the default
when batches are slower than that), which bounds the cost of the syncs (each is a disk round
trip per file) on fast devices to a few percent while losing at most that much work to a kill.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "deepfake-xai-analysis/1"
RUN_JSON = "run.json"
PREDICTIONS = "predictions.csv"
PREDICTIONS_PARQUET = "predictions.parquet"
ERRORS = "errors.csv"
REPORT = "report.html"
CAMS = "cams"
CAM_INDEX = "index.json"
EMBEDDINGS = "embeddings"
PREDICTION_FIELDS = ("index", "path", "detector", "p_fake", "verdict", "label", "error")
ERROR_FIELDS = ("index", "path", "reason")
ARRAY_DTYPE = np.float16
COMMIT_INTERVAL = 0.5

_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")
_OWNED_FILES = (RUN_JSON, PREDICTIONS, PREDICTIONS_PARQUET, ERRORS, REPORT)
_OWNED_DIRS = (CAMS, EMBEDDINGS)
_OWNED_PATTERNS = ("projection_*.csv", "projection_*.png")
_FINGERPRINT_PARTS = {
    "inputs": "images or labels",
    "detectors": "detectors (names, weights or preprocessing)",
    "explanation": "explainers, layers or target",
}


def safe_name(name: str) -> str:
    """``name`` usable as a file name: runs of other characters become ``_``."""
    return _UNSAFE.sub("_", name).strip("._") or "_"


def cam_filename(detector: str, explainer: str, layer: str) -> str:
    """``<detector>__<explainer>__<layer>.npy``, with unsafe characters replaced."""
    return f"{safe_name(detector)}__{safe_name(explainer)}__{safe_name(layer)}.npy"


def embedding_filename(detector: str) -> str:
    return f"{safe_name(detector)}.npy"


def projection_stem(detector: str) -> str:
    return f"projection_{safe_name(detector)}"


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON atomically: a temporary file, fsync, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def complete_text(path: Path) -> str:
    """The text of ``path`` up to its last newline (a line being written is left out)."""
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1].decode("utf-8")


def read_rows(path: Path) -> list[dict[str, str]]:
    """The complete rows of a CSV log as dicts; a missing file has none."""
    if not path.exists():
        return []
    return list(csv.DictReader(io.StringIO(complete_text(path), newline="")))


def format_rows(rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


class CsvLog:
    """An append-only CSV file: each :meth:`append` is one write, a flush and an fsync."""

    def __init__(self, path: Path, fields: Sequence[str]):
        self.path = path
        self.fields = tuple(fields)
        self._fd: int | None = None

    def open(self) -> CsvLog:
        """Open for appending; a missing or empty file gets the header, a torn tail is cut."""
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        text = complete_text(self.path)
        size = len(text.encode("utf-8"))
        if os.fstat(self._fd).st_size != size:
            os.ftruncate(self._fd, size)
        if not text:
            self._write(format_rows([self.fields]))
        elif next(csv.reader([text.split("\n", 1)[0]])) != list(self.fields):
            raise ValueError(f"{self.path}: unexpected header; expected {','.join(self.fields)}")
        return self

    def append(self, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._write(format_rows(rows))

    def rewrite(self, rows: Iterable[Sequence[Any]]) -> None:
        """Replace the content atomically with the header and ``rows``."""
        self.close()
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(format_rows([self.fields, *rows]))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self.open()

    def _write(self, text: str) -> None:
        if self._fd is None:
            raise RuntimeError(f"{self.path} is not open")
        data = memoryview(text.encode("utf-8"))
        while data:
            data = data[os.write(self._fd, data) :]
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ArrayFiles:
    """``(N, ...)`` float16 ``.npy`` memmaps in one folder, created when first written."""

    def __init__(self, folder: Path, n: int):
        self.folder = folder
        self.n = n
        self._open: dict[str, np.memmap] = {}

    def write(self, name: str, indices: np.ndarray, values: np.ndarray) -> bool:
        """Store ``values[k]`` at row ``indices[k]``; True when the file was just created."""
        created = False
        array = self._open.get(name)
        if array is None:
            array, created = self._open_or_create(name, values.shape[1:])
            self._open[name] = array
        if array.shape[1:] != values.shape[1:]:
            raise ValueError(
                f"{self.folder / name}: rows of shape {array.shape[1:]} expected, "
                f"got {values.shape[1:]}"
            )
        array[indices] = values.astype(ARRAY_DTYPE, copy=False)
        return created

    def _open_or_create(self, name: str, row_shape: tuple[int, ...]) -> tuple[np.memmap, bool]:
        path = self.folder / name
        if path.exists():
            array = np.lib.format.open_memmap(path, mode="r+")
            if array.shape[0] != self.n:
                raise ValueError(f"{path}: holds {array.shape[0]} rows, expected {self.n}")
            return array, False
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.tmp")
        array = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=ARRAY_DTYPE, shape=(self.n, *row_shape)
        )
        array.flush()
        os.replace(tmp, path)
        return array, True

    def flush(self) -> None:
        for array in self._open.values():
            array.flush()

    def close(self) -> None:
        self.flush()
        self._open.clear()


def fingerprint_differences(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """Human descriptions of the fingerprint parts that differ."""
    return [desc for part, desc in _FINGERPRINT_PARTS.items() if old.get(part) != new.get(part)]


def clear_outputs(out: Path) -> None:
    """Remove the files an analysis writes into ``out`` (nothing else)."""
    for name in _OWNED_FILES:
        (out / name).unlink(missing_ok=True)
    for name in _OWNED_DIRS:
        shutil.rmtree(out / name, ignore_errors=True)
    for pattern in _OWNED_PATTERNS:
        for path in out.glob(pattern):
            path.unlink()


class RunStore:
    """The output folder of one run: run.json, the CSV logs, embeddings and CAM memmaps.

    ``info`` is run.json's content and must hold a ``fingerprint`` dict; ``paths`` is the image
    order and ``detectors`` the detector names (an image is done once it has a row for each).
    """

    def __init__(
        self,
        out: str | os.PathLike,
        info: Mapping[str, Any],
        paths: Sequence[str],
        detectors: Sequence[str],
        *,
        resume: bool = True,
        commit_interval: float = COMMIT_INTERVAL,
    ):
        self.out = Path(out)
        self.commit_interval = commit_interval
        self._rows: list[Sequence[Any]] = []
        self._error_rows: list[Sequence[Any]] = []
        self._committed = time.monotonic()
        self.info = dict(info)
        self.paths = list(paths)
        self.detectors = list(detectors)
        self.out.mkdir(parents=True, exist_ok=True)
        self._check_existing(resume)
        self.predictions = CsvLog(self.out / PREDICTIONS, PREDICTION_FIELDS).open()
        self.errors = CsvLog(self.out / ERRORS, ERROR_FIELDS).open()
        self.done = self._recover()
        self.embeddings = ArrayFiles(self.out / EMBEDDINGS, len(self.paths))
        self.cams = ArrayFiles(self.out / CAMS, len(self.paths))
        self._cam_index = self._load_cam_index()
        write_json(self.out / RUN_JSON, self.info)

    def _check_existing(self, resume: bool) -> None:
        run_json = self.out / RUN_JSON
        if not resume:
            clear_outputs(self.out)
            return
        if not run_json.exists():
            if (self.out / PREDICTIONS).exists():
                raise ValueError(
                    f"{self.out}: holds {PREDICTIONS} but no {RUN_JSON}; "
                    "use another output folder, or resume=False (--no-resume) to overwrite"
                )
            return
        old = read_json(run_json)
        if old.get("format") != FORMAT:
            raise ValueError(
                f"{run_json}: not a deepfake-xai analysis (format {old.get('format')!r})"
            )
        differences = fingerprint_differences(old.get("fingerprint", {}), self.info["fingerprint"])
        if differences:
            raise ValueError(
                f"{self.out} holds an analysis of different {' and '.join(differences)}; "
                "use another output folder, or resume=False (--no-resume) to overwrite it"
            )
        self.info["created"] = old.get("created", self.info.get("created"))

    def _recover(self) -> set[int]:
        """Indices with a row for every detector; rows of partly written images are dropped.

        errors.csv is rebuilt from the kept rows, since it is appended after the commit.
        """
        rows = read_rows(self.predictions.path)
        by_index: dict[int, dict[str, dict[str, str]]] = defaultdict(dict)
        for row in rows:
            by_index[int(row["index"])].setdefault(row["detector"], row)
        wanted = set(self.detectors)
        done = {i for i, found in by_index.items() if set(found) == wanted}
        kept = [row for i in sorted(done) for row in by_index[i].values()]
        if len(kept) != len(rows):
            self.predictions.rewrite([row[f] for f in PREDICTION_FIELDS] for row in kept)
        errors = {int(r["index"]): (r["path"], r["error"]) for r in kept if r["error"]}
        self.errors.rewrite((i, path, reason) for i, (path, reason) in sorted(errors.items()))
        return done

    def _load_cam_index(self) -> dict[str, Any]:
        path = self.out / CAMS / CAM_INDEX
        index = read_json(path) if path.exists() else {"images": self.paths, "files": {}}
        if index["images"] != self.paths:
            raise ValueError(f"{path}: image order differs from this run's inputs")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, index)
        return index

    def write_embeddings(self, detector: str, indices: np.ndarray, values: np.ndarray) -> None:
        """Rows of ``embeddings/<detector>.npy`` (committed by the next :meth:`commit`)."""
        self.embeddings.write(embedding_filename(detector), indices, values)

    def write_cams(
        self, detector: str, explainer: str, layer: str, indices: np.ndarray, maps: np.ndarray
    ) -> None:
        """Rows of ``cams/<detector>__<explainer>__<layer>.npy``, listed in ``cams/index.json``."""
        name = cam_filename(detector, explainer, layer)
        if self.cams.write(name, indices, maps) or name not in self._cam_index["files"]:
            self._cam_index["files"][name] = {
                "detector": detector,
                "explainer": explainer,
                "layer": layer,
                "shape": [len(self.paths), *maps.shape[1:]],
                "dtype": np.dtype(ARRAY_DTYPE).name,
            }
            write_json(self.out / CAMS / CAM_INDEX, self._cam_index)

    def add(self, predictions: Sequence[Sequence[Any]], errors: Sequence[Sequence[Any]]) -> None:
        """Queue a batch's rows (its arrays already written); commit when the interval is up."""
        self._rows.extend(predictions)
        self._error_rows.extend(errors)
        self.done.update(int(row[0]) for row in predictions)
        if time.monotonic() - self._committed >= self.commit_interval:
            self.commit()

    def commit(self) -> None:
        """Flush the arrays, then append the queued prediction rows (the commit) and errors."""
        rows, errors = self._rows, self._error_rows
        self._rows, self._error_rows = [], []
        if rows:
            self.embeddings.flush()
            self.cams.flush()
            self.predictions.append(rows)
            self.errors.append(errors)
        self._committed = time.monotonic()

    def update_info(self, **fields: Any) -> None:
        """Merge ``fields`` into run.json (written atomically)."""
        self.info.update(fields)
        write_json(self.out / RUN_JSON, self.info)

    def close(self) -> None:
        """Commit what is queued and close every file."""
        self.commit()
        self.embeddings.close()
        self.cams.close()
        self.predictions.close()
        self.errors.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

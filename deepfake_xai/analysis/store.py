"""The on-disk layout of an analysis run: Parquet parts that any number of writers can add.

A run folder holds ``run.json`` (parameters, fingerprint, status, summary), ``inputs.parquet``
(index, path, label, source) and ``parts/``, where each committed block of results is one
Parquet file: one row per image and detector with its P(fake), verdict (``fake``, ``real`` or
``uncertain``), distance score and reasons, status, face box, JPEG quality, model version,
embedding and heatmaps. Parts written before a row column existed read back with it null. A
part is written under a temporary name, synced, then renamed into place, so it is either whole
or absent; the rename is the commit, and the folder listing is the manifest. Writers therefore
share no file: the local loop and a Ray driver write parts the same way, and a writer killed at
any moment leaves only complete parts (plus a temporary file that the next run removes). Every
block holds whole images, so an image is done once a part holds its rows; should a retried
writer commit an image twice, readers keep the first part's rows (parts sort by name), so no
row is ever read twice. ``predictions.csv``, ``predictions.parquet`` and ``errors.csv`` are flat
exports written at the end of a run.

One writer at a time: :class:`RunStore` takes an exclusive lock on the folder's ``.lock`` file
(released by the operating system when the process ends, however it ends), so a
second run on the same folder stops at once with "in use by process N" instead of deleting the
first one's temporary files. Every temporary file name is unique to its writer as well.

Paths are stored as text by :func:`deepfake_xai.paths.path_to_text`, so any file name (even one
that is not UTF-8) round-trips through every file here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..paths import path_to_text, text_to_path

FORMAT = "deepfake-xai-analysis/2"
RUN_JSON = "run.json"
INPUTS = "inputs.parquet"
PARTS = "parts"
PREDICTIONS = "predictions.csv"
PREDICTIONS_PARQUET = "predictions.parquet"
ERRORS = "errors.csv"
VIDEOS = "videos.csv"
REPORT = "report.html"
LOCK = ".lock"

RELIABILITY_FIELDS = ("ood_score", "reliable", "reasons")
FACE_FIELDS = ("faces", "face_left", "face_top", "face_width", "face_height")
JPEG_QUALITY = "jpeg_quality"  # read from the file's header; null for other formats
MODEL_VERSION = "model_version"  # the checkpoint file's fingerprint; "" when not from a file
# a frame of a video: whether the row is one, the face's track, frame number, time (s) and the
# video's duration (s); null (video False) for photos, track null for a frame without a face
VIDEO_FIELDS = ("video", "track", "frame", "time", "duration")
ROW_FIELDS = (
    "index",
    "path",
    "detector",
    "p_fake",
    "verdict",
    *RELIABILITY_FIELDS,
    "label",
    "error",
    "status",
    *FACE_FIELDS,
    JPEG_QUALITY,
    MODEL_VERSION,
    *VIDEO_FIELDS,
)
SOURCE = "source"  # per image, in inputs.parquet: where it comes from ("" when unknown)
ERROR_FIELDS = ("index", "path", "reason")
EMBEDDING = "embedding"
ARRAY_DTYPE = np.float16
COMMIT_INTERVAL = 1.0

OK = "ok"
UNREADABLE = "unreadable"
NO_FACE = "no_face"
INVALID_SCORE = "invalid_score"
STATUSES = (OK, UNREADABLE, NO_FACE, INVALID_SCORE)

ROW_SCHEMA = pa.schema(
    [
        ("index", pa.int64()),
        ("path", pa.string()),
        ("detector", pa.string()),
        ("p_fake", pa.float64()),
        ("verdict", pa.string()),
        ("ood_score", pa.float64()),
        ("reliable", pa.bool_()),
        ("reasons", pa.string()),
        ("label", pa.string()),
        ("error", pa.string()),
        ("status", pa.string()),
        *((name, pa.int32()) for name in FACE_FIELDS),
        (JPEG_QUALITY, pa.int32()),
        (MODEL_VERSION, pa.string()),
        ("video", pa.bool_()),
        ("track", pa.int32()),
        ("frame", pa.int32()),
        ("time", pa.float64()),
        ("duration", pa.float64()),
    ]
)
FILLED_TEXT = ("reasons", MODEL_VERSION)  # "" in rows of runs written before these columns
REASONS_SEPARATOR = "; "

_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")
_PART_NAME = re.compile(r"part-\d+-[0-9a-f]+\.parquet")
_OWNED_FILES = (RUN_JSON, INPUTS, PREDICTIONS, PREDICTIONS_PARQUET, ERRORS, VIDEOS, REPORT)
_OWNED_DIRS = (PARTS, "cams", "embeddings")  # the last two: format 1 runs
_OWNED_PATTERNS = ("projection_*.csv", "projection_*.png")
# what writers killed mid-write leave behind (temporary names of every file a run writes)
_TEMPORARY = (
    *(f".{name}*.tmp" for name in _OWNED_FILES),
    ".projection_*.tmp",
    f"{PARTS}/.part-*.tmp",
)
_FINGERPRINT_PARTS = {
    "inputs": "images, labels or sources",
    "detectors": "detectors (names, weights, preprocessing or reliability statistics)",
    "explanation": "explainers, layers or target",
    "faces": "face check (faces=)",
}


def safe_name(name: str) -> str:
    """``name`` usable as a file name: runs of other characters become ``_``."""
    return _UNSAFE.sub("_", name).strip("._") or "_"


def cam_column(explainer: str, layer: str) -> str:
    """The parts' column of one explainer's heatmaps at one layer."""
    return f"cam:{explainer}:{layer}"


def projection_stem(detector: str) -> str:
    return f"projection_{safe_name(detector)}"


class RunFolderInUseError(RuntimeError):
    """Another process is writing into the run folder."""


class FolderLock:
    """An exclusive lock on ``folder`` (its ``.lock`` file holds the owner's process id).

    A POSIX record lock (``lockf``): the kernel drops it when the owner exits, even on
    SIGKILL, so a crashed run never leaves a stale lock, and forked children (DataLoader
    workers) do not hold it, so a killed run's lingering workers never block the next run.
    Record locks do not exclude threads of one process from each other, so the folders this
    process holds are also kept in a set. Where ``fcntl`` is missing (Windows) only that set
    is checked. A lock that is never released is released when the object is collected.
    """

    def __init__(self, folder: Path):
        self.path = folder / LOCK
        self._release: weakref.finalize | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`RunFolderInUseError` naming the owner's pid."""
        key = os.path.realpath(self.path)
        with _HELD_GUARD:
            if key in _HELD:
                raise self._in_use(str(os.getpid()))
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                _lock_file(fd)
            except OSError:
                owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise self._in_use(owner) from None
            _HELD.add(key)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._release = weakref.finalize(self, _unlock, fd, key)

    def release(self) -> None:
        """Give the lock up (the file stays: removing it would race with a new owner)."""
        if self._release is not None:
            self._release()

    def _in_use(self, owner: str) -> RunFolderInUseError:
        return RunFolderInUseError(
            f"{self.path.parent}: this folder is in use by process {owner} (another "
            "analysis is writing into it); wait for that run to end, or use another "
            "output folder"
        )


_HELD: set[str] = set()  # the lock files this process holds
_HELD_GUARD = threading.Lock()


def _lock_file(fd: int) -> None:
    """Lock the whole file ``fd`` without waiting (OSError when another process holds it)."""
    if sys.platform != "win32":
        import fcntl

        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlock(fd: int, key: str) -> None:
    os.ftruncate(fd, 0)
    os.close(fd)  # closing drops the record lock
    with _HELD_GUARD:
        _HELD.discard(key)


# -- small atomic files ---------------------------------------------------------------------------
def temporary_path(path: Path) -> Path:
    """A hidden name beside ``path`` that no other writer (process or thread) uses."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp")


def remove_temporary_files(out: Path) -> None:
    """Remove what writers killed mid-write left in ``out`` (call with its lock held)."""
    for pattern in _TEMPORARY:
        for stale in out.glob(pattern):
            stale.unlink(missing_ok=True)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON atomically: a temporary file, fsync, then rename over ``path``."""
    tmp = temporary_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_parquet(path: Path, table: pa.Table) -> None:
    """Write ``table`` to ``path`` atomically (temporary file, fsync, rename, folder fsync)."""
    tmp = temporary_path(path)
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _sync_folder(path.parent)


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    """Write ``frame`` as UTF-8 CSV atomically, with RFC 4180 line ends: a field holding a
    carriage return or a line feed (a file name may) is quoted, so the CSV reads back with as
    many rows as it was written with."""
    tmp = temporary_path(path)
    try:
        frame.to_csv(tmp, index=False, encoding="utf-8", lineterminator="\r\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- arrays in Parquet ----------------------------------------------------------------------------
def array_type(depth: int) -> pa.DataType:
    """float16 nested in ``depth`` lists: 1 for embeddings, 2 for heatmaps."""
    kind: pa.DataType = pa.float16()
    for _ in range(depth):
        kind = pa.list_(kind)
    return kind


def array_column(values: np.ndarray, valid: np.ndarray) -> pa.Array:
    """Nested lists (depth ``values.ndim - 1``) of float16 for the rows where ``valid`` is
    True, and nulls elsewhere; ``values`` holds the valid rows only, in order."""
    valid = np.asarray(valid, dtype=bool)
    values = np.ascontiguousarray(values, dtype=ARRAY_DTYPE)
    if not valid.any():
        return pa.nulls(len(valid), type=array_type(values.ndim - 1))
    inner: pa.Array = pa.array(values.reshape(-1), type=pa.float16())
    for size in reversed(values.shape[2:]):
        inner = pa.ListArray.from_arrays(np.arange(0, len(inner) + 1, size, dtype=np.int32), inner)
    offsets = np.zeros(len(valid) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum(valid.astype(np.int32) * values.shape[1])
    return pa.ListArray.from_arrays(pa.array(offsets), inner, mask=pa.array(~valid))


def column_values(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The non-null rows of a nested list column as one ``(n, ...)`` float32 array."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    array = array.drop_null()
    shape = [len(array)]
    while pa.types.is_list(array.type):
        lengths = pc.list_value_length(array)
        shape.append(int(lengths[0].as_py()) if len(array) else 0)
        array = array.flatten()
    return array.to_numpy(zero_copy_only=False).astype(np.float32).reshape(shape)


# -- parts ----------------------------------------------------------------------------------------
def part_files(out: Path) -> list[Path]:
    """The committed parts of run folder ``out``, in commit-name order."""
    folder = out / PARTS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _PART_NAME.fullmatch(p.name))


def read_parts(out: Path, columns: Sequence[str], detector: str | None = None) -> pa.Table:
    """``columns`` of every committed row (the first copy of each image, or of each face of a
    video's frame, and detector), optionally of one detector only; ``index`` and ``detector``
    are always included. A row column that a part lacks (written before it existed) is null
    there."""
    wanted = list(dict.fromkeys(["index", "detector", *columns]))
    keyed = list(dict.fromkeys([*wanted, "frame", "track"]))  # a video has a row per face
    tables = []
    for part in part_files(out):
        table = _read_rows(part, keyed)
        if detector is not None:
            table = table.filter(pc.equal(table["detector"], detector))
        tables.append(table)
    if not tables:
        return _empty(wanted)
    table = pa.concat_tables(tables, promote_options="permissive")
    keys = pd.DataFrame(
        {
            "i": table["index"].to_numpy(),
            "d": table["detector"].to_pylist(),
            "f": table["frame"].fill_null(-1).to_numpy(),
            "t": table["track"].fill_null(-1).to_numpy(),
        }
    )
    duplicated = keys.duplicated(["i", "d", "f", "t"]).to_numpy()
    table = table.filter(pa.array(~duplicated)) if duplicated.any() else table
    return table.select(wanted)


def _read_rows(part: Path, columns: Sequence[str]) -> pa.Table:
    """``columns`` of one part, in order; a row column the part lacks is all null."""
    with pq.ParquetFile(part) as file:
        names = set(file.schema_arrow.names)
        table = file.read(columns=[c for c in columns if c in names or c not in ROW_SCHEMA.names])
    for name in columns:
        if name not in table.column_names:
            kind = ROW_SCHEMA.field(name).type
            table = table.append_column(pa.field(name, kind), pa.nulls(table.num_rows, kind))
    return table.select(list(columns))


def _empty(columns: Sequence[str]) -> pa.Table:
    types = {field.name: field.type for field in ROW_SCHEMA}
    return pa.table({c: pa.array([], type=types.get(c, pa.null())) for c in columns})


def read_inputs(out: Path) -> pd.DataFrame:
    """inputs.parquet: ``index``, ``path`` (as ``open()`` accepts it), ``label`` and
    ``source`` (``""`` in runs written before sources were recorded)."""
    frame = pq.read_table(out / INPUTS).to_pandas(types_mapper=pandas_type)
    frame["path"] = pd.Series([text_to_path(p) for p in frame["path"]], dtype=object)
    if SOURCE not in frame:
        frame[SOURCE] = ""
    return frame


def pandas_type(arrow_type: pa.DataType) -> Any:
    """int32 columns (faces, box, JPEG quality) as pandas' nullable Int64, booleans (reliable)
    as its nullable boolean."""
    if pa.types.is_int32(arrow_type):
        return pd.Int64Dtype()
    return pd.BooleanDtype() if pa.types.is_boolean(arrow_type) else None


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
    """The output folder of one run, opened by the process that drives it.

    ``info`` is run.json's content and must hold a ``fingerprint`` dict; ``paths`` and
    ``labels`` (and ``sources``, where each comes from; default none) are the images in run
    order, ``detectors`` the detector names. An existing run of the same fingerprint is
    resumed: :attr:`done` holds the images it already committed and :attr:`previous` its
    run.json. Blocks given to :meth:`add` are committed as one part once ``commit_interval``
    seconds have passed since the last commit (and by :meth:`close`).
    """

    def __init__(
        self,
        out: str | os.PathLike,
        info: Mapping[str, Any],
        paths: Sequence[str],
        labels: Sequence[str | None],
        detectors: Sequence[str],
        *,
        sources: Sequence[str] | None = None,
        resume: bool = True,
        commit_interval: float = COMMIT_INTERVAL,
    ):
        self.out = Path(out)
        self.commit_interval = commit_interval
        self.info = dict(info)
        self.detectors = list(detectors)
        self.previous: dict[str, Any] | None = None
        self._pending: list[pa.Table] = []
        self._committed = time.monotonic()
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock = FolderLock(self.out)
        self._lock.acquire()
        try:
            self._open(resume, inputs_table(paths, labels, sources))
        except BaseException:
            self._lock.release()
            raise

    def _open(self, resume: bool, inputs: pa.Table) -> None:
        """With the lock held: check or clear what is there, then start run.json."""
        self._check_existing(resume)
        remove_temporary_files(self.out)
        (self.out / PARTS).mkdir(exist_ok=True)
        if not (self.out / INPUTS).exists():
            write_parquet(self.out / INPUTS, inputs)
        self.done = self._done()
        write_json(self.out / RUN_JSON, self.info)

    def _check_existing(self, resume: bool) -> None:
        run_json = self.out / RUN_JSON
        if not resume:
            clear_outputs(self.out)
            return
        if not run_json.exists():
            if (self.out / PARTS).exists() or (self.out / PREDICTIONS).exists():
                raise ValueError(
                    f"{self.out}: holds analysis outputs but no {RUN_JSON}; "
                    "use another output folder, or resume=False (--no-resume) to overwrite"
                )
            return
        old = read_json(run_json)
        if old.get("format") != FORMAT:
            raise ValueError(
                f"{run_json}: an analysis in format {old.get('format')!r}, not {FORMAT!r} "
                "(made by another version?); use another output folder, or resume=False "
                "(--no-resume) to overwrite it"
            )
        differences = fingerprint_differences(old.get("fingerprint", {}), self.info["fingerprint"])
        if differences:
            raise ValueError(
                f"{self.out} holds an analysis of different {' and '.join(differences)}; "
                "use another output folder, or resume=False (--no-resume) to overwrite it"
            )
        self.previous = old
        self.info["created"] = old.get("created", self.info.get("created"))

    def _done(self) -> set[int]:
        """Images with a committed row for every detector."""
        rows = read_parts(self.out, [])
        found = pd.DataFrame({"index": rows["index"].to_numpy(), "d": rows["detector"].to_pylist()})
        counts = found[found["d"].isin(self.detectors)].groupby("index")["d"].nunique()
        return {int(i) for i in counts[counts == len(self.detectors)].index}

    def add(self, block: pa.Table) -> None:
        """Queue one block's rows (whole images); commit when the interval is up."""
        self._pending.append(block)
        self.done.update(int(i) for i in np.unique(block["index"].to_numpy()))
        if time.monotonic() - self._committed >= self.commit_interval:
            self.commit()

    def commit(self) -> None:
        """Write the queued blocks as one part (atomically)."""
        blocks, self._pending = self._pending, []
        if blocks:
            table = pa.concat_tables(blocks, promote_options="permissive")
            first = int(pc.min(table["index"]).as_py())
            name = f"part-{first:010d}-{uuid.uuid4().hex[:12]}.parquet"
            write_parquet(self.out / PARTS / name, table)
        self._committed = time.monotonic()

    def update_info(self, **fields: Any) -> None:
        """Merge ``fields`` into run.json (written atomically)."""
        self.info.update(fields)
        write_json(self.out / RUN_JSON, self.info)

    def close(self) -> None:
        """Commit what is queued and give the folder's lock up."""
        try:
            self.commit()
        finally:
            self._lock.release()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def unreadable_rows(
    images: Mapping[int, tuple[str, str | None, str]],
    detectors: Mapping[str, str],
    arrays: Mapping[str, int],
) -> pa.Table:
    """Rows of status ``unreadable`` for inputs that give no image before any decoding
    (``images``: index -> (path as text, label, reason)), one per image and detector
    (``detectors``: name -> model version), with null ``arrays`` (column -> list depth)."""
    keys = sorted(images)
    n = len(keys) * len(detectors)
    columns: dict[str, Any] = {field.name: pa.nulls(n, field.type) for field in ROW_SCHEMA}
    columns["index"] = pa.array(keys * len(detectors), type=pa.int64())
    for name, values in (
        ("path", [images[k][0] for k in keys]),
        ("label", [images[k][1] for k in keys]),
        ("error", [images[k][2] for k in keys]),
        ("status", [UNREADABLE] * len(keys)),
        ("verdict", [""] * len(keys)),
        ("reasons", [""] * len(keys)),
    ):
        columns[name] = pa.array(values * len(detectors), type=pa.string())
    columns["detector"] = pa.array([d for d in detectors for _ in keys], type=pa.string())
    columns[MODEL_VERSION] = pa.array([v for v in detectors.values() for _ in keys], pa.string())
    table = pa.table(columns, schema=ROW_SCHEMA)
    for column, depth in arrays.items():
        table = table.append_column(column, pa.nulls(n, array_type(depth)))
    return table


def inputs_table(
    paths: Sequence[str], labels: Sequence[str | None], sources: Sequence[str] | None = None
) -> pa.Table:
    return pa.table(
        {
            "index": pa.array(np.arange(len(paths), dtype=np.int64)),
            "path": pa.array([path_to_text(p) for p in paths], type=pa.string()),
            "label": pa.array(list(labels), type=pa.string()),
            SOURCE: pa.array(list(sources or [""] * len(paths)), type=pa.string()),
        }
    )


def export_tables(out: Path, predictions: pd.DataFrame, errors: pd.DataFrame) -> None:
    """predictions.parquet, predictions.csv and errors.csv, with paths as text."""
    flat = predictions.assign(path=[path_to_text(p) for p in predictions["path"]])
    write_parquet(out / PREDICTIONS_PARQUET, pa.Table.from_pandas(flat, preserve_index=False))
    write_csv(out / PREDICTIONS, flat)
    write_csv(out / ERRORS, errors.assign(path=[path_to_text(p) for p in errors["path"]]))

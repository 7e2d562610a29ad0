"""``audit_dataset``: features for every image, per-class statistics and the shortcut score."""

from __future__ import annotations

import logging
import os
from functools import partial
from typing import Any

import pandas as pd

from ..data import Sample, subsample
from ..images import ImageLoadError
from ._io import SampleSource, parallel_map, resolve_samples
from .features import FEATURES, GROUPS, extract_features
from .report import AuditReport
from .shortcut import as_text, shortcut_score

log = logging.getLogger(__name__)


def audit_dataset(
    source: SampleSource,
    *,
    out: str | os.PathLike | None = None,
    max_per_class: int | None = None,
    workers: int = 1,
    seed: int = 0,
) -> AuditReport:
    """Audit a labelled real/fake dataset for shortcuts; save the report to ``out`` if given.

    ``source`` is anything :func:`deepfake_xai.data.discover` accepts, or a list of samples.
    ``max_per_class`` audits a seeded random subset of each class. Unreadable files are listed
    in ``report.errors`` and do not stop the audit.
    """
    samples, notes = _labelled(resolve_samples(source), str(source))
    if max_per_class is not None:
        samples = subsample(samples, max_per_class, seed)
        notes.append(
            f"audited a random subset of at most {max_per_class} images per class (seed {seed})"
        )
    faces = _faces_enabled(notes)
    rows, errors = _extract_all(samples, faces, workers)
    if not rows:
        raise ValueError(f"{source}: none of the {len(samples)} images could be read")
    table = pd.DataFrame(rows)
    image, filename = _feature_columns(table)
    labels = table["label"].tolist()
    groups = {g: [c for c in image if FEATURES[c].group == g] for g in GROUPS if g != "filename"}
    report = AuditReport(
        source=str(source),
        features=table,
        shortcut=shortcut_score(table[image], labels, groups=groups, seed=seed),
        filename=shortcut_score(table[filename], labels, seed=seed),
        per_class=class_summary(table, image + filename),
        errors=errors,
        notes=notes,
    )
    if out is not None:
        report.save(out)
    return report


def _labelled(samples: list[Sample], source: str) -> tuple[list[Sample], list[str]]:
    """Only real and fake samples; an error when a class is missing."""
    labelled = [s for s in samples if s.label in ("real", "fake")]
    counts = {c: sum(s.label == c for s in labelled) for c in ("real", "fake")}
    if min(counts.values()) < 2:
        raise ValueError(
            f"{source}: an audit needs at least 2 labelled real and 2 labelled fake images; "
            f"found {counts['real']} real, {counts['fake']} fake and "
            f"{len(samples) - len(labelled)} unlabelled"
        )
    notes = []
    if len(labelled) < len(samples):
        notes.append(f"{len(samples) - len(labelled)} unlabelled images were left out")
    return labelled, notes


def _faces_enabled(notes: list[str]) -> bool:
    """Whether framing features can be computed; a note naming the extra when not."""
    from .. import faces

    if faces.faces_available():
        return True
    notes.append(f"face framing features skipped: {faces.EXTRA_HINT}")
    return False


def _features_or_error(path: str, faces: bool) -> tuple[dict[str, Any] | None, str | None]:
    try:
        return extract_features(path, faces=faces), None
    except (ImageLoadError, OSError) as exc:
        return None, getattr(exc, "reason", None) or str(exc)


def _extract_all(
    samples: list[Sample], faces: bool, workers: int
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Feature rows (with path, label and split) and (path, reason) for unreadable files."""
    paths = [str(s.path) for s in samples]
    rows, errors = [], []
    results = parallel_map(partial(_features_or_error, faces=faces), paths, workers)
    for sample, (features, error) in zip(samples, results, strict=True):
        if error is not None:
            log.warning("skipping %s: %s", sample.path, error)
            errors.append((str(sample.path), error))
            continue
        rows.append(
            {"path": str(sample.path), "label": sample.label, "split": sample.split, **features}
        )
    return rows, errors


def _feature_columns(table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Present feature columns: those a pixel model can see, and the file name's."""
    present = [name for name in FEATURES if name in table.columns]
    filename = [n for n in present if FEATURES[n].group == "filename"]
    return [n for n in present if n not in filename], filename


def class_summary(table: pd.DataFrame, features: list[str]) -> dict[str, dict[str, Any]]:
    """Per feature and class: count, mean, std, quartiles and missing (numeric) or the share of
    the most common values (categorical)."""
    summary: dict[str, dict[str, Any]] = {}
    for name in features:
        summary[name] = {}
        for label, column in table.groupby("label")[name]:
            summary[name][str(label)] = _column_stats(column, FEATURES[name].kind)
    return summary


def _column_stats(column: pd.Series, kind: str) -> dict[str, Any]:
    if kind == "categorical":
        shares = as_text(column).value_counts(normalize=True).head(5)
        return {"n": int(column.size), "top": {str(k): float(v) for k, v in shares.items()}}
    values = column.astype(float)
    q = values.quantile([0.25, 0.5, 0.75])
    return {
        "n": int(values.notna().sum()),
        "missing": int(values.isna().sum()),
        "mean": float(values.mean()),
        "std": float(values.std(ddof=0)),
        "min": float(values.min()),
        "q25": float(q[0.25]),
        "median": float(q[0.5]),
        "q75": float(q[0.75]),
        "max": float(values.max()),
    }

"""Side-by-side evaluation of detectors: metrics, per-group metrics, speed, tables and figures.

Detectors that share a :class:`Harmonization` share one decoded batch. Speed is measured on the
chosen device from uint8 input (normalisation included, decoding excluded): latency at batch 1
as the median of repeated runs after a warm-up, throughput at batch 32, each reported with the
number of torch threads it ran on. Predictions go through the engine, so a detector with
reliability statistics also gives each image's distance score in the same pass: the table then
says which share of the images it flags ``uncertain`` and its accuracy on the others. With
``robustness`` or ``explainers`` the same images also go through :mod:`deepfake_xai.trust`
(robustness curves, with the share flagged at each level, and explanation checks); with
``regions``, where each detector looks by facial region and how its features separate the
classes (:mod:`deepfake_xai.trust.regions`).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .data import (
    ImageDataset,
    SafeLoader,
    Sample,
    as_samples,
    describe_data,
    make_loader,
    read_manifest,
)
from .detectors import Detector, autocast_dtype, resolve_device
from .detectors.checkpoint import update_metadata
from .images import ImageLoadError, image_size, jpeg_quality
from .metrics import classification_metrics, per_group_metrics, reliability_curve, roc_curve
from .reliability import UNCERTAIN, assess, input_problems

if TYPE_CHECKING:
    import pandas as pd

    from .trust import TrustReport
    from .trust.regions import RegionStudy


TABLE_COLUMNS = {
    "accuracy": "accuracy",
    "precision": "precision",
    "recall": "recall",
    "f1": "f1",
    "roc_auc": "roc_auc",
    "ap": "average_precision",
    "eer": "eer",
    "ece": "ece",
}
SPEED_COLUMNS = ("ms_per_image", "images_per_s")
RELIABILITY_COLUMNS = ("flagged_uncertain", "accuracy_unflagged")  # NaN without statistics
InputFacts = tuple[tuple[int, int], int | None]  # an image's (width, height) and JPEG quality
FIGURES = ("confusion_matrices.png", "roc_curves.png", "reliability.png")
AUTO_SPLIT = "auto"


@dataclass
class Comparison:
    """Evaluation results for several detectors on one set of labelled images.

    ``table`` has one row per detector (metrics, the share of images flagged ``uncertain`` and
    the accuracy on the others for a detector with reliability statistics, speed with its torch
    thread count, parameters); ``metrics`` and ``per_group`` hold the full metric dicts;
    ``predictions`` one row per (detector, image) with its three-way verdict and distance score;
    ``split_note`` says how the split was chosen when it was not asked for by name; ``trust``
    holds the robustness and explanation checks when run.
    """

    table: pd.DataFrame
    metrics: dict[str, dict[str, Any]]
    per_group: dict[str, dict[str, dict[str, Any]]]
    predictions: pd.DataFrame
    split: str | None
    device: str
    errors: list[tuple[str, str]] = field(default_factory=list)
    split_source: str | None = None
    split_note: str | None = None
    threads: int = field(default_factory=torch.get_num_threads)
    trust: TrustReport | None = None
    regions: RegionStudy | None = None

    def to_markdown(self, digits: int = 3) -> str:
        """The table as GitHub Markdown (metrics rounded to ``digits``)."""
        header = ["detector", *self.table.columns]
        rows = [
            [str(name), *(_cell(col, row[col], digits) for col in self.table.columns)]
            for name, row in self.table.iterrows()
        ]
        lines = [header, ["---"] + ["---:"] * (len(header) - 1), *rows]
        parts = ["\n".join("| " + " | ".join(line) + " |" for line in lines) + "\n"]
        parts += [p.to_markdown(digits) for p in (self.trust, self.regions) if p is not None]
        return "\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the per-image predictions, JSON-ready (NaN becomes None)."""
        return _jsonable(
            {
                "split": self.split,
                "split_source": self.split_source,
                "split_note": self.split_note,
                "device": self.device,
                "threads": self.threads,
                "n_images": int(self.predictions["path"].nunique()) if len(self.predictions) else 0,
                "table": self.table.reset_index().to_dict(orient="records"),
                "metrics": self.metrics,
                "per_group": self.per_group,
                "errors": [{"path": p, "reason": r} for p, r in self.errors],
                **({"trust": self.trust.to_dict()} if self.trust is not None else {}),
                **({"regions": self.regions.to_dict()} if self.regions is not None else {}),
            }
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, out: str | os.PathLike) -> dict[str, Path]:
        """Write comparison.md, comparison.json, predictions.csv and the PNG figures to ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "markdown": _write_text(out / "comparison.md", self.to_markdown()),
            "json": _write_text(out / "comparison.json", self.to_json()),
            "predictions": _write_text(
                out / "predictions.csv", self.predictions.to_csv(index=False)
            ),
        }
        figures = dict(zip(FIGURES, self.figures(), strict=True))
        if self.trust is not None:
            figures.update({f"{k}.png": f for k, f in self.trust.figures().items()})
        for name, figure in figures.items():
            paths[name.removesuffix(".png")] = out / name
            figure.savefig(out / name, dpi=110, bbox_inches="tight")
        if self.trust is not None:
            _refresh_analysis_report(out)
        return paths

    def figures(self) -> list:
        """Matplotlib figures: confusion matrices, ROC curves and the reliability diagram."""
        groups = dict(tuple(self.predictions.groupby("detector", sort=False)))
        data = {n: (g["target"].to_numpy(), g["p_fake"].to_numpy()) for n, g in groups.items()}
        return [_confusion_figure(self.metrics), _roc_figure(data), _reliability_figure(data)]


def evaluate(
    detectors: Sequence[str | os.PathLike | Detector],
    data: str | os.PathLike | Sequence[Sample],
    *,
    split: str | None = AUTO_SPLIT,
    batch_size: int = 32,
    device: str | torch.device = "auto",
    latency: bool = True,
    out: str | os.PathLike | None = None,
    num_workers: int = 0,
    threshold: float = 0.5,
    robustness: bool = False,
    perturb: Sequence[str] | None = None,
    explainers: Sequence[str] = (),
    layers: Sequence[str] = ("final",),
    explain_images: int = 64,
    seed: int = 0,
    write_card: bool = False,
    regions: bool = False,
    projections: Sequence[str] | None = None,
    progress: bool = False,
) -> Comparison:
    """Predict ``split`` of ``data`` with each detector, side by side.

    ``split="auto"`` takes the test split, else the images the detectors' training runs held
    out, else the val split, else every labelled image of a folder without splits (the choice
    is in ``Comparison.split_note``); ``None`` takes every labelled image. ``detectors`` are
    checkpoint paths, ``hf-hub:`` ids, registry names (untrained: a warning says so) or
    Detector objects. Unreadable images are skipped and listed in ``Comparison.errors``.

    ``robustness`` adds accuracy, ROC AUC and ECE under the ``perturb`` levels (grammar in
    :data:`deepfake_xai.trust.GRAMMAR`; default: every perturbation at its default levels);
    ``explainers`` adds heatmap stability under the same levels, faithfulness and the sanity
    check, on ``explain_images`` images (see ``docs/evaluate.md``). ``regions`` adds where each
    detector looks (its final-layer Grad-CAM mass per facial region, per class, and how
    concentrated it is) and how well its penultimate features separate the classes, in the full
    embedding and in each of ``projections`` (default t-SNE and UMAP; see
    :mod:`deepfake_xai.trust.regions`).
    ``write_card`` stores each detector's robustness summary in its checkpoint's metadata.
    With ``out`` the results are also saved there (see :meth:`Comparison.save`).
    """
    import pandas as pd

    from .api import load_detector

    if isinstance(detectors, (str, os.PathLike, Detector)):
        detectors = [detectors]
    if not detectors:
        raise ValueError("evaluate needs at least one detector")
    if write_card:
        _check_writable_cards(detectors, robustness)
    if projections and not regions:
        raise ValueError("projections need regions=True (they measure the features' separation)")
    settings = _trust_settings(robustness, perturb, explainers, layers, explain_images, seed)
    device = resolve_device(device)
    loaded = [load_detector(d, device=device) for d in detectors]
    samples, chosen, note, split_source = _evaluation_samples(data, split, loaded, detectors)
    scores, errors = _predict_all(loaded, samples, batch_size, num_workers, progress)
    names = _unique_names(loaded, detectors)
    facts = _input_facts(samples) if any(d.reliability for d in loaded) else None
    scored = [
        _score(name, det, samples, *scores[id(det)], facts, threshold=threshold, latency=latency)
        for name, det in zip(names, loaded, strict=True)
    ]
    comparison = Comparison(
        table=pd.DataFrame([row for row, *_ in scored]).set_index("detector"),
        metrics={row["detector"]: m for row, m, _, _ in scored},
        per_group={row["detector"]: g for row, _, g, _ in scored if g},
        predictions=pd.concat([frame for *_, frame in scored], ignore_index=True),
        split=chosen,
        device=str(device),
        errors=errors,
        split_source=split_source,
        split_note=note,
    )
    if settings is not None:
        settings.batch_size, settings.num_workers = batch_size, num_workers
        settings.progress = progress
        # The folder's name, not its path: the card travels with the checkpoint to the app.
        name = Path(data).name if isinstance(data, (str, os.PathLike)) else describe_data(data)
        dataset = f"{name} (split {chosen or 'all'})"
        comparison.trust = _check_trust(loaded, names, samples, settings, dataset)
    if regions:
        from .trust.regions import study_regions

        comparison.regions = study_regions(
            loaded,
            names,
            samples,
            projections=projections,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            progress=progress,
        )
    if write_card:
        for source, name in zip(detectors, names, strict=True):
            write_robustness_card(source, comparison.trust.card(name))
    if out is not None:
        comparison.save(out)
    return comparison


def _refresh_analysis_report(out: Path) -> None:
    """Rewrite the report of the analysis run ``out`` belongs to (``RUN/trust`` or ``RUN``), so
    it links these results."""
    from .analysis.report import write_report
    from .analysis.result import AnalysisResult
    from .analysis.store import RUN_JSON

    run = out.parent if out.name == "trust" else out
    if (run / RUN_JSON).is_file():
        write_report(AnalysisResult(run))


def write_robustness_card(checkpoint: str | os.PathLike, card: dict[str, Any]) -> Path:
    """Store ``card`` as ``metadata["robustness"]`` of a local checkpoint, rewritten atomically.

    ``card`` follows the schema the app's About tab reads: ``{"dataset": str, "rows":
    [{"perturbation", "level", "accuracy", "roc_auc", "ece", "n"}, ...]}`` (see
    :meth:`deepfake_xai.trust.TrustReport.card`).
    """
    return update_metadata(checkpoint, robustness=card)


def _check_writable_cards(detectors: Sequence[Any], robustness: bool) -> None:
    if not robustness:
        raise ValueError("write_card needs robustness=True (the card holds the robustness rows)")
    for source in detectors:
        if isinstance(source, Detector) or not os.fspath(source).endswith(".safetensors"):
            raise ValueError(
                f"{source}: write_card needs local .safetensors checkpoints to write into"
            )


def _trust_settings(robustness, perturb, explainers, layers, explain_images, seed):
    """TrustSettings for the asked checks, or None when none was asked for."""
    if not robustness and not explainers:
        if perturb:
            raise ValueError("perturb needs robustness=True or explainers to measure with")
        return None
    from .trust import TrustSettings, parse_perturbations

    return TrustSettings(
        perturbations=parse_perturbations(perturb),
        robustness=bool(robustness),
        explainers=list(explainers),
        layers=tuple(layers),
        explain_images=explain_images,
        seed=seed,
    )


def _check_trust(detectors, names, samples, settings, dataset: str) -> TrustReport:
    from .trust import TrustReport, assess

    return TrustReport.build(assess(detectors, names, samples, settings), settings, dataset)


def _evaluation_samples(
    data: Any, split: str | None, loaded: list[Detector], sources: Sequence[Any]
) -> tuple[list[Sample], str | None, str | None, str | None]:
    """(samples, the split used, how it was chosen, the split files that chose them).

    When ``data`` has no test images but the detectors' training runs left split.csv files,
    the images every run held out as test are used.
    """
    samples, name = as_samples(data), describe_data(data)
    split_files = [f for d, s in zip(loaded, sources, strict=True) if (f := run_split_file(d, s))]
    has_test = any(s.split == "test" for s in samples)
    if split in ("test", AUTO_SPLIT) and split_files and not has_test:
        held = held_out(samples, split_files, "test")
        if held or split == "test":
            source = ", ".join(dict.fromkeys(map(str, split_files)))
            note = f"the images every training run held out as test ({source})"
            return select_split(held, "test", name=name), "test", note, source
    if split != AUTO_SPLIT:
        return select_split(samples, split, name=name), split, None, None
    labelled = select_split(samples, None, name=name)
    found = {s.split for s in labelled}
    if "test" in found:
        return select_split(labelled, "test", name=name), "test", None, None
    if "val" in found:
        note = f"{name} has no test split: evaluating on its val split"
        return select_split(labelled, "val", name=name), "val", note, None
    if found == {None}:
        note = (
            f"{name} has no train/val/test folders: evaluating all {len(labelled)} labelled "
            "images (if a detector was trained on some of them, pass the split.csv its "
            "training run wrote instead)"
        )
        return labelled, None, note, None
    raise ValueError(
        f"{name}: only training images (splits found: {sorted(s or 'none' for s in found)}); "
        "scores on them say little about new images. Pass --split train (or 'all') to "
        "evaluate on them anyway"
    )


def _score(
    name: str,
    detector: Detector,
    samples: list[Sample],
    kept: np.ndarray,
    logits: np.ndarray,
    ood: np.ndarray | None,
    facts: list[InputFacts | None] | None,
    *,
    threshold: float,
    latency: bool,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None, pd.DataFrame]:
    """(table row, metrics, per-group metrics or None, predictions) for one detector."""
    chosen = [samples[i] for i in kept]
    y = np.array([s.target for s in chosen], dtype=np.int64)
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    metrics = classification_metrics(y, p, threshold)
    groups = [s.group for s in chosen]
    per_group = (
        per_group_metrics(y, p, groups, threshold) if any(g is not None for g in groups) else None
    )
    distances = [None] * len(p) if ood is None else ood.tolist()
    verdicts = [
        assess(float(pk), dk, _problems(detector, facts, int(i))).verdict
        for i, pk, dk in zip(kept, p, distances, strict=True)
    ]
    speed = measure_speed(detector) if latency else dict.fromkeys(SPEED_COLUMNS, math.nan)
    speed.setdefault("threads", torch.get_num_threads())
    reliability = _reliability_figures(y, p >= threshold, verdicts, ood is not None)
    row = _table_row(name, metrics, reliability, speed, detector)
    frame = _prediction_frame(name, chosen, y, p, threshold)
    frame["verdict"] = verdicts
    frame["ood_score"] = np.full(len(chosen), np.nan) if ood is None else ood.astype(np.float64)
    return row, metrics, per_group, frame


def _input_facts(samples: Sequence[Sample]) -> list[InputFacts | None]:
    """Each image's size and JPEG quality from its header (None when unreadable), for the
    detectors' input checks; the whole image counts as the face, as ``analyze`` with
    ``faces=False`` takes it."""
    facts: list[InputFacts | None] = []
    for sample in samples:
        try:
            facts.append((image_size(sample.path), jpeg_quality(sample.path)))
        except ImageLoadError:
            facts.append(None)
    return facts


def _problems(detector: Detector, facts: list[InputFacts | None] | None, index: int) -> list[str]:
    """The input checks of ``detector`` on sample ``index`` (none without facts)."""
    fact = facts[index] if facts is not None else None
    if fact is None:
        return []
    return input_problems(detector, fact[0], None, fact[1])


def _reliability_figures(
    y: np.ndarray, said_fake: np.ndarray, verdicts: Sequence[str], measured: bool
) -> dict[str, float]:
    """:data:`RELIABILITY_COLUMNS`: the share flagged uncertain and the accuracy on the rest
    (NaN for a detector without reliability statistics, or with every image flagged)."""
    if not measured or not len(y):
        return dict.fromkeys(RELIABILITY_COLUMNS, math.nan)
    flagged = np.array([v == UNCERTAIN for v in verdicts], dtype=bool)
    kept = ~flagged
    accuracy = float((said_fake[kept] == (y[kept] == 1)).mean()) if kept.any() else math.nan
    return {"flagged_uncertain": float(flagged.mean()), "accuracy_unflagged": accuracy}


def select_split(
    data: str | os.PathLike | Sequence[Sample], split: str | None, *, name: str | None = None
) -> list[Sample]:
    """The labelled samples of ``split`` (all labelled samples for None), or a clear error."""
    samples = as_samples(data)
    name = name or describe_data(data)
    labelled = [s for s in samples if s.label is not None]
    if not labelled:
        raise ValueError(f"{name}: no labelled images (real/fake) to evaluate on")
    if split is None:
        return labelled
    chosen = [s for s in labelled if s.split == split]
    if not chosen:
        found = sorted({s.split or "none" for s in labelled})
        hint = (
            "it has no train/val/test folders, so pass split 'all' (every labelled image)"
            if found == ["none"]
            else "pass another split"
        )
        raise ValueError(
            f"{name}: no images in split {split!r} (splits found: {found}); {hint}, or as "
            "data the split.csv that `deepfake-xai train` wrote in its --out"
        )
    return chosen


def run_split_file(detector: Detector, source: Any = None) -> Path | None:
    """The split.csv of the training run that produced ``detector``, when it can be found.

    Looked up in the checkpoint's training metadata, then next to the run folder of a local
    checkpoint (``RUN/<detector>/best.safetensors`` -> ``RUN/split.csv``).
    """
    candidates = [(detector.metadata.get("training") or {}).get("split_file")]
    if source is not None and not isinstance(source, Detector):
        candidates.append(Path(os.fspath(source)).parent.parent / "split.csv")
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def held_out(samples: Sequence[Sample], split_files: Sequence[Path], split: str) -> list[Sample]:
    """The samples that every training run's split.csv puts in ``split`` (so none saw them)."""
    runs = [{s.path: s.split for s in read_manifest(f)} for f in split_files]
    return [
        replace(s, split=split) for s in samples if all(run.get(s.path) == split for run in runs)
    ]


def predict_logits(
    detectors: Sequence[Detector],
    loader: SafeLoader,
    *,
    amp: bool = False,
    channels_last: bool = False,
) -> tuple[dict[int, np.ndarray], np.ndarray, np.ndarray]:
    """Logits of every detector over one pass of ``loader`` (the batch is shared).

    Returns ``({id(detector): logits (N,)}, targets (N,), dataset indices (N,))``.
    """
    out: dict[int, list[torch.Tensor]] = {id(d): [] for d in detectors}
    targets, indices = [], []
    for d in detectors:
        d.model.eval()
    with torch.inference_mode():
        for images, batch_targets, batch_indices in loader:
            for d in detectors:
                x = d.normalize(images)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast(d.device, amp):
                    out[id(d)].append(d(x).float().cpu())
            targets.append(batch_targets)
            indices.append(batch_indices)
    cat = (lambda ts: torch.cat(ts).numpy()) if targets else (lambda ts: np.zeros(0))
    return {k: cat(v) for k, v in out.items()}, cat(targets), cat(indices).astype(np.int64)


def autocast(device: torch.device, enabled: bool) -> AbstractContextManager:
    """CUDA autocast (bf16 where supported, else fp16) when enabled; a no-op otherwise."""
    if not enabled or device.type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=autocast_dtype(device))


def measure_speed(
    detector: Detector, *, runs: int = 20, warmup: int = 3, batch_size: int = 32, batches: int = 3
) -> dict[str, float]:
    """``ms_per_image`` at batch 1 (median of ``runs``), ``images_per_s`` at ``batch_size`` and
    the torch ``threads`` they ran on.

    Timed from a uint8 batch on the host to the logits on the detector's device.
    """
    size = detector.input_size
    generator = torch.Generator().manual_seed(0)
    one = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8, generator=generator)
    many = torch.randint(
        0, 256, (batch_size, 3, size, size), dtype=torch.uint8, generator=generator
    )
    single = _timings(detector, one, warmup, runs)
    bulk = _timings(detector, many, 1, batches)
    return {
        "ms_per_image": 1000.0 * float(np.median(single)),
        "images_per_s": batch_size * len(bulk) / float(np.sum(bulk)),
        "threads": torch.get_num_threads(),
    }


def _timings(detector: Detector, batch: torch.Tensor, warmup: int, runs: int) -> list[float]:
    detector.model.eval()
    sync = torch.cuda.synchronize if detector.device.type == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            sync()
            start = time.perf_counter()
            detector(detector.normalize(batch)).cpu()
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return times


def _predict_all(
    detectors: list[Detector],
    samples: list[Sample],
    batch_size: int,
    num_workers: int,
    progress: bool = False,
) -> tuple[dict[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]], list[tuple[str, str]]]:
    """Per detector id: (sample indices kept, logits, distance scores or None), from one engine
    pass per batch; one decode per distinct harmonization."""
    from .engine import Engine

    by_harmonization: dict[Any, list[Detector]] = {}
    for d in detectors:
        by_harmonization.setdefault(d.harmonization, []).append(d)
    results, errors = {}, {}
    for harmonization, group in by_harmonization.items():
        loader = make_loader(
            ImageDataset(samples, harmonization), batch_size, num_workers=num_workers
        )
        device = group[0].device
        # One engine each: two detectors of one name (from two runs) may be compared.
        engines = [
            Engine([d], method=None, device=device, amp=device.type == "cuda", channels_last=False)
            for d in group
        ]
        batches = loader
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(loader, desc="predicting", unit="batch")
        parts: dict[int, list] = {id(d): [] for d in group}
        indices = []
        for images, _, batch_indices in batches:
            images = images.to(device)
            for detector, engine in zip(group, engines, strict=True):
                parts[id(detector)].append(engine.run(images, check_finite=False)[detector.name])
            indices.append(batch_indices.numpy())
        kept = np.concatenate(indices).astype(np.int64) if indices else np.zeros(0, np.int64)
        for detector in group:
            outputs = parts[id(detector)]
            logits = np.concatenate([o.logits for o in outputs]) if outputs else np.zeros(0)
            ood = None
            if detector.reliability is not None:
                ood = np.concatenate([o.ood_scores for o in outputs]) if outputs else np.zeros(0)
            results[id(detector)] = (kept, logits, ood)
        errors.update({str(p): r for p, r in loader.errors})
    return results, sorted(errors.items())


def _unique_names(detectors: list[Detector], sources: Sequence[Any]) -> list[str]:
    """Detector names; two of one name get their checkpoint paths (or #1, #2) appended."""
    names = [d.name for d in detectors]
    files = [None if isinstance(s, Detector) else os.path.abspath(os.fspath(s)) for s in sources]
    out = list(names)
    for name in {n for n in names if names.count(n) > 1}:
        same = [i for i, n in enumerate(names) if n == name]
        paths = [files[i] for i in same]
        if None in paths or len(set(paths)) < len(paths):
            for k, i in enumerate(same, 1):
                out[i] = f"{name} #{k}"
            continue
        root = os.path.commonpath(paths)
        for i, path in zip(same, paths, strict=True):
            out[i] = f"{name} ({os.path.relpath(path, root)})"
    return out


def _table_row(
    name: str, metrics: dict, reliability: dict, speed: dict, detector: Detector
) -> dict[str, Any]:
    row: dict[str, Any] = {"detector": name}
    row.update({col: _nan(metrics[key]) for col, key in TABLE_COLUMNS.items()})
    row.update(reliability)
    row.update(speed)
    row["params"] = detector.num_parameters
    row["n"] = metrics["n"]
    return row


def _prediction_frame(
    name: str, samples: list[Sample], y: np.ndarray, p: np.ndarray, threshold: float
) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(
        {
            "detector": name,
            "path": [str(s.path) for s in samples],
            "label": [s.label for s in samples],
            "split": [s.split for s in samples],
            "group": [s.group for s in samples],
            "target": y,
            "p_fake": p,
            "predicted": np.where(p >= threshold, "fake", "real"),
        }
    )


def _confusion_figure(metrics: dict[str, dict[str, Any]]):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * len(metrics), 3.2), layout="constrained")
    for ax, (name, m) in zip(
        fig.subplots(1, len(metrics), squeeze=False)[0], metrics.items(), strict=True
    ):
        matrix = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
        ax.imshow(matrix, cmap="Blues", vmin=0)
        for (r, c), value in np.ndenumerate(matrix):
            dark = value > matrix.max() / 2
            ax.text(c, r, str(value), ha="center", va="center", color="white" if dark else "black")
        ax.set(
            xticks=[0, 1],
            yticks=[0, 1],
            xticklabels=["real", "fake"],
            yticklabels=["real", "fake"],
            xlabel="predicted",
            ylabel="true",
            title=name,
        )
    return fig


def _diagonal_axes():
    """A figure with one axes and the grey dotted diagonal (chance / perfect calibration)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    return fig, ax


def _roc_figure(data: dict[str, tuple[np.ndarray, np.ndarray]]):
    fig, ax = _diagonal_axes()
    for name, (y, p) in data.items():
        if 0 < y.sum() < y.size:
            fpr, tpr, _ = roc_curve(y, p)
            ax.plot(fpr, tpr, label=name)
    ax.set(
        xlabel="false positive rate (real called fake)",
        ylabel="true positive rate",
        title="ROC (positive = fake)",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    return fig


def _reliability_figure(data: dict[str, tuple[np.ndarray, np.ndarray]]):
    fig, ax = _diagonal_axes()
    for name, (y, p) in data.items():
        curve = reliability_curve(y, p)
        filled = curve["count"] > 0
        ax.plot(curve["mean_predicted"][filled], curve["fraction_fake"][filled], "o-", label=name)
    ax.set(
        xlabel="predicted P(fake)",
        ylabel="observed fraction fake",
        title="reliability",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="upper left")
    return fig


def _cell(column: str, value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if column == "params":
        return f"{value / 1e6:.2f} M"
    if column in ("n", "threads"):
        return str(int(value))
    if column in SPEED_COLUMNS:
        return f"{value:.1f}"
    return f"{value:.{digits}f}"


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return value


def _write_text(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path

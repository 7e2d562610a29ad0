"""``analyze`` and ``Analyzer``: stream images through the engine into a resumable folder.

Workers decode each image once; the detectors share each decoded batch through
:meth:`Engine.run`; results are appended to disk batch by batch (see :mod:`.store`), so memory
stays flat however many images there are. Projections and the report are made at the end from
what is on disk, which also makes them work for resumed runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..detectors import Detector, resolve_device
from ..engine import DetectorOutput, Engine
from ..explainers.base import TARGETS
from ..registry import EXPLAINERS
from .inputs import Inputs, InputSpec, LabelSpec, resolve_inputs
from .loader import Batch, DecodedImages, default_workers, make_loader
from .result import AnalysisResult, read_predictions
from .store import FORMAT, PREDICTIONS, PREDICTIONS_PARQUET, RunStore

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_DETECTORS = ("efficientnet_b0", "mobilenetv2_100")
log = logging.getLogger(__name__)
DetectorSpec = Detector | str | os.PathLike


@dataclass
class Timing:
    """Seconds spent in each phase of one :meth:`Analyzer.run` call."""

    waiting_for_images: float = 0.0
    engine: float = 0.0
    writing: float = 0.0
    projection: float = 0.0
    report: float = 0.0
    total: float = 0.0


class Analyzer:
    """Fixed detectors and explainers, run on any number of inputs with :meth:`run`.

    Detectors are loaded and their engines built once, so repeated runs (the app's batch tab)
    pay that cost once. Parameters are those of :func:`analyze`.
    """

    def __init__(
        self,
        detectors: Sequence[DetectorSpec] | DetectorSpec = DEFAULT_DETECTORS,
        explainers: Sequence[str] = ("gradcam",),
        layers: Sequence[str] = ("final",),
        projection: str | None = "tsne",
        batch_size: int = 32,
        device: str | torch.device = "auto",
        num_workers: int | None = None,
        amp: bool | None = None,
        labels: LabelSpec = None,
        target: str = "fake",
        resume: bool = True,
        progress: bool = True,
        report: bool = True,
    ):
        if isinstance(explainers, str):
            explainers = [explainers]
        if isinstance(layers, str):
            layers = [layers]
        _check_parameters(batch_size, num_workers, target, layers, explainers)
        self.explainers = list(dict.fromkeys(explainers))
        self.layers = list(dict.fromkeys(layers))
        self.projection = _projection_name(projection)
        self.batch_size = batch_size
        self.num_workers = default_workers() if num_workers is None else num_workers
        self.labels = labels
        self.target = target
        self.resume = resume
        self.progress = progress
        self.report = report
        self.engines = self._build_engines(detectors, resolve_device(device), amp)
        self.detectors = self.engines[0].detectors
        self.names = [d.name for d in self.detectors]
        self._harmonizations, self._slot = _distinct_harmonizations(self.engines[0])
        self._configs = {d.name: detector_config(d) for d in self.detectors}

    def _build_engines(
        self, specs: Sequence[DetectorSpec] | DetectorSpec, device: torch.device, amp: bool | None
    ) -> list[Engine]:
        """One engine per explainer over the same detectors (predictions only without any)."""
        detectors = load_detectors(specs, device)
        methods: list[str | None] = list(self.explainers) or [None]
        options = {"layers": self.layers, "target": self.target, "device": device, "amp": amp}
        first = Engine(detectors, method=methods[0], **options)
        return [first] + [Engine(first.detectors, method=m, **options) for m in methods[1:]]

    # -- running ----------------------------------------------------------------------------
    def run(self, inputs: InputSpec, out: str | os.PathLike = "runs/analysis") -> AnalysisResult:
        """Analyse ``inputs`` into folder ``out`` (resuming it when it holds the same run)."""
        start = time.perf_counter()
        resolved = resolve_inputs(inputs, self.labels)
        store = RunStore(out, self._info(resolved), resolved.paths, self.names, resume=self.resume)
        timing = Timing()
        try:
            processed, resumed = self._stream(resolved, store, timing)
            self._finish(store, processed, resumed, timing, start)
            if self.report:
                self._write_report(store, timing, start)
        except KeyboardInterrupt:
            store.update_info(status="interrupted")
            raise
        except BaseException as exc:
            store.update_info(status="failed", failure=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            store.close()
        return AnalysisResult(store.out)

    def _stream(self, inputs: Inputs, store: RunStore, timing: Timing) -> tuple[int, int]:
        """Process every image not yet done; returns (processed now, done before)."""
        from tqdm.auto import tqdm

        pending = [i for i in range(len(inputs)) if i not in store.done]
        if not pending:
            return 0, len(inputs)
        dataset = DecodedImages(inputs, pending, self._harmonizations)
        workers = min(self.num_workers, math.ceil(len(pending) / self.batch_size))
        pin = self.engines[0].device.type == "cuda"
        loader = make_loader(dataset, self.batch_size, workers, pin)
        with tqdm(total=len(pending), unit="img", desc="analyze", disable=not self.progress) as bar:
            waited = time.perf_counter()
            for batch in loader:
                timing.waiting_for_images += time.perf_counter() - waited
                self._process(batch, inputs, store, timing)
                bar.update(len(batch))
                waited = time.perf_counter()
        store.commit()
        return len(pending), len(inputs) - len(pending)

    def _process(self, batch: Batch, inputs: Inputs, store: RunStore, timing: Timing) -> None:
        """Run the engines on one batch and commit its rows."""
        probs: dict[str, np.ndarray] = {}
        if len(batch.indices):
            start = time.perf_counter()
            feed = self._feed(batch)
            outputs = [engine.run(feed) for engine in self.engines]
            timing.engine += time.perf_counter() - start
            self._write_arrays(store, batch.indices, outputs)
            probs = {name: outputs[0][name].probs for name in self.names}
        start = time.perf_counter()
        rows, errors = self._rows(batch, inputs, probs)
        store.add(rows, errors)
        timing.writing += time.perf_counter() - start

    def _feed(self, batch: Batch) -> torch.Tensor | dict[str, torch.Tensor]:
        """The shared batch, or each detector's own when their harmonizations differ."""
        if len(batch.images) == 1:
            return batch.images[0]
        return {name: batch.images[self._slot[name]] for name in self.names}

    def _write_arrays(
        self, store: RunStore, indices: np.ndarray, outputs: list[dict[str, DetectorOutput]]
    ) -> None:
        """Embeddings from the first engine; the heatmaps of every engine."""
        for name in self.names:
            store.write_embeddings(name, indices, outputs[0][name].embeddings)
            for explainer, output in zip(self.explainers, outputs, strict=False):
                for layer, maps in output[name].heatmaps.items():
                    store.write_cams(name, explainer, layer, indices, maps)

    def _rows(
        self, batch: Batch, inputs: Inputs, probs: Mapping[str, np.ndarray]
    ) -> tuple[list[tuple], list[tuple]]:
        """predictions.csv rows (by index, then detector) and errors.csv rows of one batch."""
        position = {int(i): k for k, i in enumerate(batch.indices)}
        reasons = dict(batch.failures)
        rows, errors = [], []
        for index in sorted([*position, *reasons]):
            path = inputs.paths[index]
            label = inputs.labels[index] or batch.labels.get(index) or ""
            if index in reasons:
                errors.append((index, path, reasons[index]))
                rows += [(index, path, n, "", "", label, reasons[index]) for n in self.names]
                continue
            for name in self.names:
                p = float(probs[name][position[index]])
                verdict = "fake" if p >= 0.5 else "real"
                rows.append((index, path, name, f"{p:.7g}", verdict, label, ""))
        return rows, errors

    # -- the end of a run -------------------------------------------------------------------
    def _finish(
        self, store: RunStore, processed: int, resumed: int, timing: Timing, start: float
    ) -> None:
        """Projections, parquet and the summary in run.json."""
        result = AnalysisResult(store.out)
        began = time.perf_counter()
        if self.projection:
            from .projection import write_projection

            for name in self.names:
                write_projection(result, name, self.projection)
        timing.projection = time.perf_counter() - began
        _write_parquet(store.out)
        streamed = timing.waiting_for_images + timing.engine + timing.writing
        timing.total = time.perf_counter() - start
        summary = summarise(result, processed, resumed, streamed)
        store.update_info(status="complete", summary=summary, timing=asdict(timing))

    def _write_report(self, store: RunStore, timing: Timing, start: float) -> None:
        from .report import write_report

        began = time.perf_counter()
        write_report(AnalysisResult(store.out))
        timing.report = time.perf_counter() - began
        timing.total = time.perf_counter() - start
        store.update_info(timing=asdict(timing))

    def _info(self, inputs: Inputs) -> dict[str, Any]:
        """run.json at the start of a run: parameters, detectors, fingerprint, versions."""
        engine = self.engines[0]
        explanation = {"explainers": self.explainers, "layers": self.layers, "target": self.target}
        return {
            "format": FORMAT,
            "status": "running",
            "created": _now(),
            "n_images": len(inputs),
            "dataset": inputs.dataset is not None,
            "parameters": {
                "detectors": self.names,
                **explanation,
                "projection": self.projection,
                "batch_size": self.batch_size,
                "device": str(engine.device),
                "num_workers": self.num_workers,
                "amp": engine.amp,
                "channels_last": engine.channels_last,
                "labels": _describe_labels(self.labels),
                "report": self.report,
            },
            "detectors": self._configs,
            "fingerprint": {
                "inputs": inputs.fingerprint(),
                "detectors": _digest(self._configs),
                "explanation": _digest(explanation),
            },
            "versions": versions(),
        }


def analyze(
    inputs: InputSpec,
    detectors: Sequence[DetectorSpec] | DetectorSpec = DEFAULT_DETECTORS,
    explainers: Sequence[str] = ("gradcam",),
    layers: Sequence[str] = ("final",),
    projection: str | None = "tsne",
    out: str | os.PathLike = "runs/analysis",
    batch_size: int = 32,
    device: str | torch.device = "auto",
    num_workers: int | None = None,
    amp: bool | None = None,
    labels: LabelSpec = None,
    target: str = "fake",
    resume: bool = True,
    progress: bool = True,
    report: bool = True,
) -> AnalysisResult:
    """Predict, explain and project a batch of images; results stream into folder ``out``.

    ``inputs``: a folder (``real/``/``fake/`` sub-folders give labels), a list of paths, a glob,
    a CSV manifest (``path,label``) or a torch ``Dataset`` yielding ``image`` or
    ``(image, label)``. ``detectors``: registry names, checkpoint paths, ``hf-hub:`` ids or
    :class:`Detector` objects. ``explainers``: attribution methods, each stored per detector
    and layer. ``projection``: ``"tsne"``, ``"umap"``, ``"pca"`` or None. ``labels``: None
    (from folder names or the CSV), ``"folders"``, a CSV manifest or a mapping path -> label.
    An existing ``out`` with the same inputs and parameters is resumed (``resume=False``
    overwrites it). Unreadable images are recorded in ``errors.csv`` and the run goes on.
    """
    options = dict(locals())  # this function's parameters, forwarded as they are
    inputs, out = options.pop("inputs"), options.pop("out")
    return Analyzer(**options).run(inputs, out)


# -- helpers ------------------------------------------------------------------------------------
def load_detectors(
    specs: Sequence[DetectorSpec] | DetectorSpec, device: torch.device
) -> list[Detector]:
    """Detectors from names, checkpoints or objects; same-named checkpoints get ``@<file>``."""
    from ..api import is_checkpoint_reference, load_detector

    if isinstance(specs, (str, os.PathLike, Detector)):
        specs = [specs]
    if not specs:
        raise ValueError("analyze needs at least one detector")
    detectors = [
        load_detector(s if isinstance(s, Detector) else os.fspath(s), device=device) for s in specs
    ]
    names = [d.name for d in detectors]
    for spec, detector in zip(specs, detectors, strict=True):
        if isinstance(spec, Detector):
            continue
        if not is_checkpoint_reference(spec):
            log.warning(
                "%s: built from the registry, not fine-tuned; its verdicts mean nothing until "
                "you pass a checkpoint (see `deepfake-xai train`)",
                spec,
            )
        elif names.count(detector.name) > 1:
            detector.name = f"{detector.name}@{Path(os.fspath(spec)).stem}"
    names = [d.name for d in detectors]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"detector names must be unique; {duplicated} appear more than once")
    return detectors


def detector_config(detector: Detector) -> dict[str, Any]:
    """The detector's config plus a digest of its weights (so a resume cannot mix models)."""
    config = {k: v for k, v in detector.config().items() if k != "package_version"}
    digest = hashlib.sha256()
    for key, tensor in detector.model.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    config["weights_sha256"] = digest.hexdigest()
    return config


def summarise(
    result: AnalysisResult, processed: int, resumed: int, seconds: float
) -> dict[str, Any]:
    """Counts, throughput of this call, and metrics per detector when labels are known."""
    rows = result.predictions
    done = rows["index"].nunique()
    errors = int(rows.loc[rows["error"] != "", "index"].nunique())
    return {
        "images": len(result.paths),
        "processed": int(done - errors),
        "errors": errors,
        "pending": len(result.paths) - int(done),
        "resumed": resumed,
        "processed_now": processed,
        "seconds": round(seconds, 3),
        "images_per_second": round(processed / seconds, 2) if seconds > 0 else 0.0,
        "detectors": result.detectors,
        "metrics": _metrics(rows),
    }


def _metrics(rows: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """classification_metrics per detector over the readable, labelled images."""
    labelled = rows[(rows["error"] == "") & rows["label"].notna()]
    if labelled.empty:
        return {}
    from ..metrics import classification_metrics

    out = {}
    for name, group in labelled.groupby("detector", sort=False):
        y_true = (group["label"] == "fake").to_numpy(dtype=np.int64)
        values = classification_metrics(y_true, group["p_fake"].to_numpy(dtype=np.float64))
        out[str(name)] = {k: _plain(v) for k, v in values.items()}
    return out


def _plain(value: Any) -> Any:
    """A JSON-friendly number (NaN becomes None)."""
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else float(value)
    return value


def versions() -> dict[str, str]:
    import timm

    from .. import __version__

    return {
        "deepfake_xai": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
    }


def _write_parquet(out: Path) -> None:
    """predictions.parquet from predictions.csv, when pyarrow is installed."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return
    tmp = out / f".{PREDICTIONS_PARQUET}.tmp"
    read_predictions(out / PREDICTIONS).to_parquet(tmp, index=False)
    os.replace(tmp, out / PREDICTIONS_PARQUET)


def _distinct_harmonizations(engine: Engine) -> tuple[list, dict[str, int]]:
    """The distinct harmonizations, and detector name -> position in that list."""
    distinct: list = []
    slot = {}
    for name, harmonization in engine.harmonizations().items():
        if harmonization not in distinct:
            distinct.append(harmonization)
        slot[name] = distinct.index(harmonization)
    return distinct, slot


def _check_parameters(
    batch_size: int,
    num_workers: int | None,
    target: str,
    layers: Sequence[str],
    explainers: Sequence[str],
) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if num_workers is not None and num_workers < 0:
        raise ValueError(f"num_workers must be >= 0 or None, got {num_workers!r}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if explainers and not layers:
        raise ValueError("layers must name at least one layer (e.g. 'final') for explainers")


def _projection_name(projection: str | None) -> str | None:
    """A registered projection explainer's name, or None for ``None``/``"none"``."""
    if projection is None or projection.lower() == "none":
        return None
    entry = EXPLAINERS.entry(projection)
    if getattr(entry.factory, "kind", None) != "projection":
        raise ValueError(f"{projection!r} is not a projection; use tsne, umap, pca or none")
    return entry.name


def _describe_labels(labels: LabelSpec) -> Any:
    if labels is None or isinstance(labels, str):
        return labels
    if isinstance(labels, Mapping):
        return f"mapping of {len(labels)} labels"
    return os.fspath(labels)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

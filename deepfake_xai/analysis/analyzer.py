"""``analyze`` and ``Analyzer``: stream images through the engine into a resumable folder.

Decoding (with the face check) runs in parallel: locally in threads, or DataLoader processes
for a GPU (see :mod:`.loader`), on Ray in CPU tasks (see :mod:`.ray_backend`); the detectors
share each decoded batch through :meth:`Engine.run`; each block's rows, embeddings and
heatmaps are committed to disk as a Parquet part (see :mod:`.store`), so memory stays flat
however many images there are and a killed run resumes.
Projections and the report are made at the end from what is on disk, which also makes them work
for resumed runs.
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
from ..detectors.checkpoint import tensors_digest
from ..explainers.base import TARGETS, heatmap_layers
from ..paths import display_path, path_to_text
from ..registry import EXPLAINERS
from ..reliability import VERDICTS
from ..video import Sampling
from .block import BlockAnalyser, build_engines
from .decode import Decoder, harmonization_slots
from .inputs import Inputs, InputSpec, LabelSpec, resolve_inputs
from .loader import DecodedImages, blocks, default_workers, make_loader
from .result import AnalysisResult
from .store import (
    EMBEDDING,
    FORMAT,
    INVALID_SCORE,
    NO_FACE,
    OK,
    PREDICTIONS,
    REPORT,
    UNREADABLE,
    VIDEOS,
    RunStore,
    cam_column,
    export_tables,
    projection_stem,
    unreadable_rows,
    write_csv,
)

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_DETECTORS = ("default",)  # the detector shipped in the package, trained on real faces
BACKENDS = ("local", "ray")
FACES_SWITCH = "faces=False (--no-face-check)"
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
    ray_startup: float = 0.0


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the Ray backend runs (see :func:`analyze`)."""

    address: str | None = None
    actors: int | None = None
    gpus_per_actor: float | None = None
    cpus_per_actor: float = 1.0


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
        faces: bool = True,
        threads: int | None = None,
        backend: str = "local",
        ray_address: str | None = None,
        actors: int | None = None,
        gpus_per_actor: float | None = None,
        cpus_per_actor: float | None = None,
        video: Sampling | None = None,
    ):
        if isinstance(explainers, str):
            explainers = [explainers]
        if isinstance(layers, str):
            layers = [layers]
        _check_parameters(batch_size, num_workers, target, layers, explainers)
        self.backend = _backend(backend, ray_address, actors, gpus_per_actor, cpus_per_actor)
        cpus = 1.0 if cpus_per_actor is None else cpus_per_actor
        self.ray = RayOptions(ray_address, actors, gpus_per_actor, cpus)
        if self.backend == "ray":
            from .ray_backend import import_ray

            import_ray()
        if faces:
            _check_faces_available()
        if threads is not None:
            from ..runtime import configure_threads

            configure_threads(threads)
        per_actor = threads or max(1, math.floor(self.ray.cpus_per_actor))
        self.threads = per_actor if self.backend == "ray" else torch.get_num_threads()
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
        self.faces = bool(faces)
        self.amp = amp
        self.device = device
        local = self.backend == "local"
        self.detectors = load_detectors(detectors, resolve_device(device if local else "cpu"))
        self.names = [d.name for d in self.detectors]
        harmonizations, self._slot = harmonization_slots(
            {d.name: d.harmonization for d in self.detectors}
        )
        self.sampling = video or Sampling()
        self.decoder = Decoder(tuple(harmonizations), self.faces, self.sampling)
        self._configs = {d.name: detector_config(d) for d in self.detectors}
        self.engines = []
        if local:
            options = (self.explainers, self.layers, target, resolve_device(device), amp)
            self.engines = build_engines(self.detectors, *options)
            self.detectors = self.engines[0].detectors

    # -- running ----------------------------------------------------------------------------
    def run(self, inputs: InputSpec, out: str | os.PathLike = "runs/analysis") -> AnalysisResult:
        """Analyse ``inputs`` into folder ``out`` (resuming it when it holds the same run)."""
        start = time.perf_counter()
        resolved = resolve_inputs(inputs, self.labels)
        if self.backend == "ray" and resolved.videos:
            raise ValueError(
                f"{display_path(resolved.paths[resolved.videos[0]])}: videos run on the local "
                "backend only for now; analyse them without backend='ray' (--ray)"
            )
        store = RunStore(
            out,
            self._info(resolved),
            resolved.paths,
            resolved.labels,
            self.names,
            sources=resolved.sources,
            resume=self.resume,
        )
        timing = Timing()
        try:
            self._record_problems(resolved, store)
            pending = [i for i in range(len(resolved)) if i not in store.done]
            if pending:
                self._stream(resolved, pending, store, timing)
            store.commit()
            self._finish(store, len(pending), len(resolved) - len(pending), timing, start)
        except KeyboardInterrupt:
            store.update_info(status="interrupted")
            raise
        except BaseException as exc:
            store.update_info(status="failed", failure=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            store.close()
        return AnalysisResult(store.out)

    def _record_problems(self, inputs: Inputs, store: RunStore) -> None:
        """Rows, with their reasons, for the inputs known to give no image (folders that
        cannot be listed), so they are counted and listed in errors.csv without decoding."""
        problems = {i: r for i, r in inputs.problem_indices().items() if i not in store.done}
        if not problems:
            return
        images = {
            i: (path_to_text(inputs.paths[i]), inputs.labels[i], reason)
            for i, reason in problems.items()
        }
        versions = {d.name: d.fingerprint or "" for d in self.detectors}
        arrays = {EMBEDDING: 1}
        for explainer in self.explainers:
            for layer in heatmap_layers(explainer, self.layers):
                arrays[cam_column(explainer, layer)] = 2
        store.add(unreadable_rows(images, versions, arrays))

    def _stream(self, inputs: Inputs, pending: list[int], store: RunStore, timing: Timing) -> None:
        """Process the ``pending`` images on this machine or on Ray."""
        if self.backend == "ray":
            from .ray_backend import run_on_ray

            ray_info = run_on_ray(self, inputs, pending, store, timing)
            store.update_info(ray=ray_info)
            return
        from tqdm.auto import tqdm

        for engine in self.engines:
            engine.plan(len(pending))  # compiles where that pays (deepfake_xai.compiled)
        dataset = DecodedImages(inputs, pending, self.decoder)
        plan = blocks(dataset, self.batch_size)
        workers = min(self.num_workers, len(plan))
        loader = make_loader(dataset, plan, workers, self.engines[0].device)
        analyse = BlockAnalyser(self.engines, self.explainers, self._slot)
        with tqdm(total=len(pending), unit="img", desc="analyze", disable=not self.progress) as bar:
            waited = time.perf_counter()
            for block in loader:
                began = time.perf_counter()
                timing.waiting_for_images += began - waited
                rows = analyse(block)
                written = time.perf_counter()
                timing.engine += written - began
                store.add(rows)
                timing.writing += time.perf_counter() - written
                bar.update(len(block))
                waited = time.perf_counter()

    # -- the end of a run -------------------------------------------------------------------
    def _finish(
        self, store: RunStore, processed: int, resumed: int, timing: Timing, start: float
    ) -> None:
        """Projections, exports and the summary in run.json; the report.

        A rerun that found every image done keeps the summary and timing of the run that did
        the work, and redoes only what is missing (a projection or report not made before).
        """
        result = AnalysisResult(store.out)
        previous = store.previous or {}
        up_to_date = processed == 0 and previous.get("status") == "complete"
        began = time.perf_counter()
        projected = False
        if self.projection:
            from .projection import write_projection

            done_before = previous.get("parameters", {}).get("projection") == self.projection
            for name in self.names:
                path = store.out / f"{projection_stem(name)}.csv"
                if not (up_to_date and done_before and path.exists()):
                    write_projection(result, name, self.projection)
                    projected = True
        timing.projection = time.perf_counter() - began
        if not (up_to_date and (store.out / PREDICTIONS).exists()):
            export_tables(store.out, result.predictions, result.errors)
            if len(result.videos):
                videos = result.videos
                write_csv(store.out / VIDEOS, videos.assign(path=videos["path"].map(path_to_text)))
        if up_to_date and previous.get("summary"):
            summary = {**previous["summary"], "up_to_date": True}
            store.update_info(status="complete", summary=summary)
        else:
            streamed = timing.waiting_for_images + timing.engine + timing.writing
            timing.total = time.perf_counter() - start
            summary = summarise(result, processed, resumed, streamed)
            summary.update(threads=self.threads, backend=self.backend)
            store.update_info(status="complete", summary=summary, timing=asdict(timing))
        if self.report and (not up_to_date or projected or not (store.out / REPORT).exists()):
            self._write_report(store, timing, start, keep_timing=up_to_date)

    def _write_report(
        self, store: RunStore, timing: Timing, start: float, keep_timing: bool
    ) -> None:
        from .report import write_report

        began = time.perf_counter()
        write_report(AnalysisResult(store.out))
        if not keep_timing:
            timing.report = time.perf_counter() - began
            timing.total = time.perf_counter() - start
            store.update_info(timing=asdict(timing))

    def _info(self, inputs: Inputs) -> dict[str, Any]:
        """run.json at the start of a run: parameters, detectors, fingerprint, versions."""
        explanation = {"explainers": self.explainers, "layers": self.layers, "target": self.target}
        engine = self.engines[0] if self.engines else None
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
                "faces": self.faces,
                "batch_size": self.batch_size,
                "backend": self.backend,
                "device": str(engine.device) if engine else str(self.device),
                "num_workers": self.num_workers,
                "threads": self.threads,
                "amp": engine.amp if engine else self.amp,
                "channels_last": engine.channels_last if engine else None,
                "labels": _describe_labels(self.labels),
                "report": self.report,
                **({"video": asdict(self.sampling)} if inputs.videos else {}),
                **({"ray": asdict(self.ray)} if self.backend == "ray" else {}),
            },
            "detectors": {
                d.name: {**self._configs[d.name], **model_version(d)} for d in self.detectors
            },
            "fingerprint": {
                "inputs": inputs.fingerprint(),
                "detectors": _digest(self._configs),
                "explanation": _digest(explanation),
                "faces": str(self.faces) + (f"; {self.sampling}" if inputs.videos else ""),
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
    faces: bool = True,
    threads: int | None = None,
    backend: str = "local",
    ray_address: str | None = None,
    actors: int | None = None,
    gpus_per_actor: float | None = None,
    cpus_per_actor: float | None = None,
    video: Sampling | None = None,
) -> AnalysisResult:
    """Find the face, predict, explain and project a batch of images into folder ``out``.

    ``inputs``: a folder (``real/``/``fake/`` sub-folders give labels), a list of paths, a glob,
    a CSV manifest (``path,label``) or a torch ``Dataset`` yielding ``image`` or ``(image,
    label)``. ``detectors``: ``"default"`` (the detector shipped in the package, trained on real
    faces), registry names, checkpoint paths, ``hf-hub:`` ids or :class:`Detector` objects.
    ``explainers``: attribution methods, each stored per detector and layer. ``projection``:
    ``"tsne"``, ``"umap"``, ``"pca"`` or None. ``labels``: None (from folder names or the CSV),
    ``"folders"``, a CSV manifest or a mapping path -> label. ``faces``: find faces first
    (MTCNN, see :mod:`deepfake_xai.faces`): an image without one gets status ``no_face`` and no
    verdict; of several, the largest is framed like the training faces and analysed (the number
    found and the box are in the predictions); False analyses whole images. ``threads``: torch
    threads (see :func:`deepfake_xai.runtime.configure_threads`; None leaves torch's setting).
    An existing ``out`` with the same inputs and parameters is resumed (``resume=False``
    overwrites it). Unreadable images are recorded with their reason and the run goes on (so
    are paths too long to open and folders that cannot be listed). One run writes into ``out``
    at a time: another one still writing there makes this call raise
    :class:`~deepfake_xai.analysis.store.RunFolderInUseError` naming its process.

    Video files (``.mp4``, ``.mov``, ``.avi``, ``.mkv``, ``.webm``... see
    :mod:`deepfake_xai.video`) may sit among the images: ``video`` says which frames to sample
    (default :class:`~deepfake_xai.video.Sampling`: one per second, at most 32, evenly spread).
    Each face of each sampled frame is a row of ``predictions`` (with its ``track``, ``frame``
    and ``time``), and :attr:`AnalysisResult.videos` (``videos.csv``) gives one verdict per
    video (see :mod:`deepfake_xai.video_verdict`); a video's rows are committed together, so a
    resumed run neither loses nor repeats a frame. Videos run on the local backend only.

    ``backend="ray"`` runs on Ray Data (the ``[ray]`` extra): decoding in CPU tasks, the
    engines in ``actors`` stateful actors (default: one per GPU of the cluster, else one) with
    ``gpus_per_actor`` GPUs (default 1 when the cluster has GPUs) and ``cpus_per_actor`` CPUs
    (default 1) each, on the cluster at ``ray_address`` (None: the running or a new local
    Ray; ``"auto"``: the cluster this machine belongs to). Results go to the same folder
    layout, so either backend can resume the other's run.
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
        # load_detector already warns (UntrainedDetectorWarning) about registry-built detectors.
        if isinstance(spec, Detector) or not is_checkpoint_reference(spec):
            continue
        if names.count(detector.name) > 1:
            detector.name = f"{detector.name}@{Path(os.fspath(spec)).stem}"
    names = [d.name for d in detectors]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"detector names must be unique; {duplicated} appear more than once")
    return detectors


def detector_config(detector: Detector) -> dict[str, Any]:
    """The detector's config plus digests of its weights and of its reliability statistics,
    if any (so a resume cannot mix models, nor verdicts made with other statistics)."""
    config = {k: v for k, v in detector.config().items() if k != "package_version"}
    known = None if detector.is_built else detector.known_digests.get("state")
    config["weights_sha256"] = known or tensors_digest(detector.model.state_dict())
    if detector.reliability is not None:
        tensors, settings = detector.reliability.to_checkpoint()
        config["reliability_sha256"] = tensors_digest(tensors, settings)
    return config


def model_version(detector: Detector) -> dict[str, Any]:
    """What run.json says of a detector's version beside its config: the ``fingerprint`` of
    its checkpoint file (None when it came from none; the ``model_version`` of its rows) and
    its ``reliability`` settings (None: it has no statistics, so it never says uncertain)."""
    reliability = detector.reliability
    settings = None
    if reliability is not None:
        settings = {
            "method": reliability.method,
            "layers": list(reliability.layers),
            "flag_rate": reliability.flag_rate,
            "min_face_side": reliability.min_face_side,
            "min_jpeg_quality": reliability.min_jpeg_quality,
        }
    return {"fingerprint": detector.fingerprint, "reliability": settings}


def summarise(
    result: AnalysisResult, processed: int, resumed: int, seconds: float
) -> dict[str, Any]:
    """Counts, throughput of this call, and metrics per detector when labels are known."""
    rows = result.predictions
    done = rows["index"].nunique()

    def images(status: str, among: pd.DataFrame = rows) -> int:
        return int(among.loc[among["status"] == status, "index"].nunique())

    # a video with frames without a face is no no-face input; a damaged one is an error
    errors, no_face = images(UNREADABLE), images(NO_FACE, rows[~rows["video"]])
    videos = result.videos
    return {
        "images": len(result.paths),
        "processed": int(done - errors - no_face),
        "errors": errors,
        "no_face": no_face if result.faces_checked else None,
        "invalid_scores": int((rows["status"] == INVALID_SCORE).sum()),
        "pending": len(result.paths) - int(done),
        "resumed": resumed,
        "processed_now": processed,
        "seconds": round(seconds, 3),
        "images_per_second": round(processed / seconds, 2) if seconds > 0 else 0.0,
        "detectors": result.detectors,
        "verdicts": result.verdicts(),
        "metrics": _metrics(rows[~rows["video"]]),
        **({"videos": video_summary(videos)} if len(videos) else {}),
    }


def _metrics(rows: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """classification_metrics per detector over the labelled images that got a verdict."""
    labelled = rows[(rows["status"] == OK) & rows["label"].notna()]
    if labelled.empty:
        return {}
    from ..metrics import classification_metrics

    out = {}
    for name, group in labelled.groupby("detector", sort=False):
        y_true = (group["label"] == "fake").to_numpy(dtype=np.int64)
        values = classification_metrics(y_true, group["p_fake"].to_numpy(dtype=np.float64))
        out[str(name)] = {k: _plain(v) for k, v in values.items()}
    return out


def video_summary(videos: pd.DataFrame) -> dict[str, Any]:
    """Videos, their verdicts per detector, frames sampled and frames without a face."""
    first = videos.drop_duplicates("index")
    return {
        "videos": len(first),
        "frames_sampled": int(first["frames_sampled"].sum()),
        "no_face_frames": int(first["no_face_frames"].sum()),
        "verdicts": {
            str(name): {v: int((group["verdict"] == v).sum()) for v in (*VERDICTS, "")}
            for name, group in videos.groupby("detector", sort=False)
        },
    }


def _plain(value: Any) -> Any:
    """A JSON-friendly number (NaN becomes None)."""
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else float(value)
    return value


def versions() -> dict[str, str]:
    from importlib import metadata

    from .. import __version__

    return {
        "deepfake_xai": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": metadata.version("timm"),  # importing timm costs a second
        "numpy": np.__version__,
    }


def _backend(
    backend: str,
    address: str | None,
    actors: int | None,
    gpus_per_actor: float | None,
    cpus_per_actor: float | None,
) -> str:
    """``backend``, checked; the Ray options are refused on the local backend."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    given = {
        "ray_address": address,
        "actors": actors,
        "gpus_per_actor": gpus_per_actor,
        "cpus_per_actor": cpus_per_actor,
    }
    if backend == "local":
        named = [name for name, value in given.items() if value is not None]
        if named:
            raise ValueError(f"{', '.join(named)} apply to backend='ray' only")
        return backend
    if actors is not None and (not isinstance(actors, int) or actors < 1):
        raise ValueError(f"actors must be a positive int, got {actors!r}")
    for name in ("gpus_per_actor", "cpus_per_actor"):
        value = given[name]
        if value is not None and (not isinstance(value, (int, float)) or value < 0):
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return backend


def _check_faces_available() -> None:
    """Fail early, naming the extra and the switch, when faces cannot be found."""
    from ..faces import EXTRA_HINT, FacesExtraMissing, faces_available

    if not faces_available():
        raise FacesExtraMissing(
            f"analyze finds faces first and {EXTRA_HINT}; or analyse whole images with "
            f"{FACES_SWITCH}"
        )


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
    if labels is None or labels == "folders":
        return labels
    if isinstance(labels, Mapping):
        return f"mapping of {len(labels)} labels"
    return path_to_text(labels)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

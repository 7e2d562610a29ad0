"""``analyze(..., backend="ray")``: the same analysis as a Ray Data pipeline.

The pending images become a dataset of (index, path, label) rows in blocks of one batch;
:func:`decode_batch` runs as CPU ``map_batches`` tasks (the same :class:`Decoder` as the local
DataLoader workers: ``images.py``, the face check, harmonisation); :class:`EngineActor` is a
stateful actor class (a fixed pool of ``actors``, ``gpus_per_actor`` GPUs each) that builds its
engines once from the detectors the driver loaded, and turns each decoded block into the rows of
one store part (the same :class:`BlockAnalyser` as the local loop). The driver streams those
rows into the run folder as they come, so the folder can live on the driver's disk alone (no
shared filesystem) and only small results cross the network. Ray retries the tasks of a killed
worker and restarts a killed actor; a block's rows reach the driver once, and what the driver
committed before being killed is skipped by the rerun.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch

from ..paths import path_to_text
from .block import BlockAnalyser, DecodedBlock, build_engines
from .decode import Decoder, harmonization_slots

if TYPE_CHECKING:
    from .analyzer import Analyzer, Timing
    from .inputs import Inputs
    from .store import RunStore

DECODE_TASK_MEMORY = 512 * 1024 * 1024
"""Memory reserved per decoding task. Besides helping Ray's scheduler, a resource request that
differs from the actors' keeps Ray Data from fusing decoding into the engine actors (decoding
must run in parallel CPU tasks, not one after another inside each actor)."""
EXTRA_HINT = "the Ray backend needs the [ray] extra: pip install 'deepfake-xai[ray]'"
log = logging.getLogger(__name__)


class RayExtraMissing(ImportError):
    """Ray Data is not installed."""


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or an error naming the extra."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise RayExtraMissing(f"{EXTRA_HINT} ({exc})") from exc
    return ray


def connect(address: str | None) -> float:
    """Join the running Ray, the cluster at ``address`` or a new local one; seconds it took."""
    ray = import_ray()
    if ray.is_initialized():
        return 0.0
    start = time.perf_counter()
    ray.init(address=address)
    return time.perf_counter() - start


def plan_resources(
    actors: int | None,
    gpus_per_actor: float | None,
    cpus_per_actor: float,
    device: str,
    cluster: Mapping[str, float],
) -> tuple[int, float]:
    """(actors, GPUs per actor), defaulted from the cluster and checked against it.

    Refuses what cannot start (more GPUs than the cluster has) and what would hang (actors that
    leave no CPU for the decoding tasks), instead of waiting for resources forever.
    """
    cpus, gpus = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if gpus and str(device) != "cpu" else 0.0
    if str(device).startswith("cuda") and not gpus_per_actor:
        raise ValueError(f"device={device!r} needs gpus_per_actor > 0 (the cluster has {gpus:g})")
    if actors is None:
        actors = max(1, math.floor(gpus / gpus_per_actor)) if gpus_per_actor else 1
    if actors * gpus_per_actor > gpus:
        raise ValueError(
            f"{actors} actors x {gpus_per_actor:g} GPUs need {actors * gpus_per_actor:g} GPUs; "
            f"the Ray cluster has {gpus:g}"
        )
    if actors * cpus_per_actor + 1 > cpus:
        raise ValueError(
            f"{actors} actors x {cpus_per_actor:g} CPUs leave no CPU for decoding on a Ray "
            f"cluster of {cpus:g} CPUs; use fewer actors or a smaller cpus_per_actor"
        )
    return actors, gpus_per_actor


def decode_batch(
    batch: dict[str, np.ndarray], decoder: Decoder, dataset: Any
) -> dict[str, np.ndarray]:
    """Ray task: decode one block of (index, path, label) rows into :class:`DecodedBlock`
    columns. ``dataset`` is (a reference to) the torch Dataset the images come from, if any."""
    from ..paths import text_to_path
    from .inputs import split_item

    dataset = _resolve(dataset)
    items = []
    for index, path, label in zip(batch["index"], batch["path"], batch["label"], strict=True):
        label = None if label is None else str(label)
        if dataset is None:
            source = text_to_path(str(path))
        else:
            source, label = split_item(dataset[int(index)])
        items.append(decoder(int(index), source, str(path), label))
    return DecodedBlock.from_images(items, len(decoder.harmonizations)).to_columns()


class EngineActor:
    """Ray actor: the engines built once from the driver's detectors; a block in, rows out."""

    def __init__(
        self,
        detectors: Any,
        explainers: list[str],
        layers: list[str],
        target: str,
        device: str,
        amp: bool | None,
        threads: int,
    ):
        from ..detectors import resolve_device

        torch.set_num_threads(threads)
        engines = build_engines(
            _resolve(detectors), explainers, layers, target, resolve_device(device), amp
        )
        distinct, slot = harmonization_slots(engines[0].harmonizations())
        self.slots = len(distinct)
        self.analyse = BlockAnalyser(engines, explainers, slot)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        return self.analyse(DecodedBlock.from_columns(batch, self.slots))


def run_on_ray(
    analyzer: Analyzer, inputs: Inputs, pending: list[int], store: RunStore, timing: Timing
) -> dict[str, Any]:
    """Analyse the ``pending`` images on Ray into ``store``; what ran where, for run.json."""
    ray = import_ray()
    options = analyzer.ray
    timing.ray_startup = connect(options.address)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = analyzer.progress
    device = str(analyzer.device)
    actors, gpus = plan_resources(
        options.actors,
        options.gpus_per_actor,
        options.cpus_per_actor,
        device,
        ray.cluster_resources(),
    )
    actor_device = device if device != "auto" else ("cuda" if gpus else "cpu")
    detectors = ray.put([d.to("cpu") for d in analyzer.detectors])
    dataset = ray.put(inputs.dataset) if inputs.dataset is not None else None
    size = analyzer.batch_size
    blocks = [_input_block(inputs, pending[i : i + size]) for i in range(0, len(pending), size)]
    pipeline = (
        ray.data.from_arrow(blocks)
        .map_batches(
            decode_batch,
            fn_kwargs={"decoder": analyzer.decoder, "dataset": dataset},
            batch_size=size,
            batch_format="numpy",
            num_cpus=1,
            memory=DECODE_TASK_MEMORY,
        )
        .map_batches(
            EngineActor,
            fn_constructor_kwargs={
                "detectors": detectors,
                "explainers": analyzer.explainers,
                "layers": analyzer.layers,
                "target": analyzer.target,
                "device": actor_device,
                "amp": analyzer.amp,
                "threads": analyzer.threads,
            },
            compute=ray.data.ActorPoolStrategy(size=actors),
            batch_size=size,
            batch_format="numpy",
            num_cpus=options.cpus_per_actor,
            num_gpus=gpus or None,
        )
    )
    waited = time.perf_counter()
    for rows in pipeline.iter_batches(batch_size=None, batch_format="pyarrow"):
        began = time.perf_counter()
        timing.waiting_for_images += began - waited
        store.add(rows)
        waited = time.perf_counter()
        timing.writing += waited - began
    return {
        "address": ray.get_runtime_context().gcs_address,
        "actors": actors,
        "gpus_per_actor": gpus,
        "cpus_per_actor": options.cpus_per_actor,
        "actor_device": actor_device,
        "threads_per_actor": analyzer.threads,
        "startup_seconds": round(timing.ray_startup, 3),
    }


def _resolve(value: Any) -> Any:
    """``value``, fetched from the object store when it is a reference to it."""
    import ray

    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


def _input_block(inputs: Inputs, indices: list[int]) -> pa.Table:
    """One block of the input dataset: index, path (as text) and label."""
    return pa.table(
        {
            "index": pa.array(indices, type=pa.int64()),
            "path": pa.array([path_to_text(inputs.paths[i]) for i in indices], type=pa.string()),
            "label": pa.array([inputs.labels[i] for i in indices], type=pa.string()),
        }
    )

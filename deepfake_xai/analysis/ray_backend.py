"""``analyze(..., backend="ray")``: the same analysis on Ray tasks and a pool of engine actors.

The pending images become blocks of (index, path, label) rows, one batch each;
:func:`decode_batch` runs as CPU tasks (the same :class:`Decoder` as the local DataLoader
workers: ``images.py``, the face check, harmonisation); :class:`EngineActor` is a stateful actor
(a pool of ``actors``, ``gpus_per_actor`` GPUs each) that builds its engines once from the
detectors the driver loaded, and turns each decoded block into the rows of one store part (the
same :class:`BlockAnalyser` as the local loop). Decoded blocks go from the decoding task to an
actor through Ray's object store; the driver streams only the rows into the run folder, so the
folder can live on the driver's disk alone (no shared filesystem) and only small results cross
the network. Ray retries the tasks of a killed worker and restarts a killed actor (retrying its
block); a block's rows reach the driver once, and what the driver committed before being killed
is skipped by the rerun.

The actor pool outlives the call (:class:`EnginePool`): the next ``analyze`` in this process
with the same detectors and settings reuses it, so only the first call pays for starting the
actors and loading the detectors. It is closed when the settings change, at exit, or by
:func:`close_engine_pool`.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import logging
import math
import pickle
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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
"""Memory reserved per decoding task, for Ray's scheduler."""
BLOCKS_PER_ACTOR = 2
"""Decoded blocks queued per actor: one running and one ready, so an actor never waits."""
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


def decode_batch(batch: Mapping[str, Any], decoder: Decoder, dataset: Any) -> dict[str, np.ndarray]:
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
        self.engines = build_engines(
            _resolve(detectors), explainers, layers, target, resolve_device(device), amp
        )
        distinct, slot = harmonization_slots(self.engines[0].harmonizations())
        self.slots = len(distinct)
        self.analyse = BlockAnalyser(self.engines, explainers, slot)

    def plan(self, images: int) -> None:
        """Announce a run of ``images`` images (the engines compile when that pays)."""
        for engine in self.engines:
            engine.plan(images)

    def run(self, batch: dict[str, np.ndarray]) -> pa.Table:
        """The rows of one decoded block (the columns of :meth:`DecodedBlock.to_columns`)."""
        return self.analyse(DecodedBlock.from_columns(batch, self.slots))


@dataclass
class EnginePool:
    """Engine actors kept alive across ``analyze`` calls; ``key`` says what they were built
    for (the Ray job, the detectors' content, the explainers and resources)."""

    key: tuple
    actors: list[Any]
    detectors: Any  # the object-store reference a restarted actor rebuilds from
    started_seconds: float = 0.0
    calls: int = field(default=0)

    def close(self) -> None:
        """Kill the actors (their resources return to the cluster)."""
        ray = import_ray()
        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception as exc:  # Ray gone already: nothing left to free
                log.debug("closing an engine actor: %s", exc)
        self.actors = []


_POOL: EnginePool | None = None
_POOL_LOCK = threading.Lock()


def close_engine_pool() -> None:
    """Kill this process's engine actors, if any (also done at exit)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None:
            if import_ray().is_initialized():
                _POOL.close()
            _POOL = None


atexit.register(close_engine_pool)


class _DigestPickler(pickle.Pickler):
    """Pickles tensors as their dtype, shape and SHA-256, so equal content gives equal bytes
    (plain pickles of two loads of one checkpoint differ)."""

    def persistent_id(self, obj: Any) -> Any:
        if not isinstance(obj, torch.Tensor):
            return None
        data = obj.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        return str(obj.dtype), tuple(obj.shape), hashlib.sha256(data).hexdigest()


def content_digest(value: Any) -> str:
    """SHA-256 of ``value``'s content (detectors: their weights, statistics and settings)."""
    buffer = io.BytesIO()
    _DigestPickler(buffer).dump(value)
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def engine_pool(analyzer: Analyzer, actors: int, gpus: float, actor_device: str) -> EnginePool:
    """The engine actors for this run: the previous call's when built for the same job,
    detectors and settings, else new ones (the old ones are closed)."""
    global _POOL
    ray = import_ray()
    options = analyzer.ray
    detectors = [d.to("cpu") for d in analyzer.detectors]
    settings = {
        "explainers": analyzer.explainers,
        "layers": analyzer.layers,
        "target": analyzer.target,
        "device": actor_device,
        "amp": analyzer.amp,
        "threads": analyzer.threads,
    }
    key = (
        ray.get_runtime_context().get_job_id(),
        content_digest(detectors),
        repr(sorted(settings.items())),
        actors,
        gpus,
        options.cpus_per_actor,
    )
    with _POOL_LOCK:
        if _POOL is not None and _POOL.key == key:
            _POOL.calls += 1
            return _POOL
        if _POOL is not None:
            _POOL.close()
        start = time.perf_counter()
        reference = ray.put(detectors)
        actor_class = ray.remote(EngineActor).options(
            num_cpus=options.cpus_per_actor,
            num_gpus=gpus or None,
            max_restarts=-1,
            max_task_retries=-1,
        )
        handles = [actor_class.remote(reference, **settings) for _ in range(actors)]
        _POOL = EnginePool(key, handles, reference, time.perf_counter() - start, calls=1)
        return _POOL


def run_on_ray(
    analyzer: Analyzer, inputs: Inputs, pending: list[int], store: RunStore, timing: Timing
) -> dict[str, Any]:
    """Analyse the ``pending`` images on Ray into ``store``; what ran where, for run.json."""
    ray = import_ray()
    options = analyzer.ray
    timing.ray_startup = connect(options.address)
    device = str(analyzer.device)
    actors, gpus = plan_resources(
        options.actors,
        options.gpus_per_actor,
        options.cpus_per_actor,
        device,
        ray.cluster_resources(),
    )
    actor_device = device if device != "auto" else ("cuda" if gpus else "cpu")
    pool = engine_pool(analyzer, actors, gpus, actor_device)
    ray.get([actor.plan.remote(len(pending)) for actor in pool.actors])
    dataset = ray.put(inputs.dataset) if inputs.dataset is not None else None
    size = analyzer.batch_size
    blocks = [_input_block(inputs, pending[i : i + size]) for i in range(0, len(pending), size)]
    decode = ray.remote(decode_batch).options(num_cpus=1, memory=DECODE_TASK_MEMORY)
    decoder = ray.put(analyzer.decoder)
    decoded_blocks = (decode.remote(block.to_pydict(), decoder, dataset) for block in blocks)
    from tqdm.auto import tqdm

    with tqdm(total=len(pending), unit="img", desc="analyze", disable=not analyzer.progress) as bar:
        waited = time.perf_counter()
        for rows in _through_actors(ray, pool.actors, decoded_blocks):
            began = time.perf_counter()
            timing.waiting_for_images += began - waited
            store.add(rows)
            waited = time.perf_counter()
            timing.writing += waited - began
            bar.update(len(set(rows.column("index").to_pylist())))
    return {
        "address": ray.get_runtime_context().gcs_address,
        "actors": actors,
        "gpus_per_actor": gpus,
        "cpus_per_actor": options.cpus_per_actor,
        "actor_device": actor_device,
        "threads_per_actor": analyzer.threads,
        "startup_seconds": round(timing.ray_startup, 3),
        "actors_reused": pool.calls > 1,
        "actors_start_seconds": round(pool.started_seconds, 3),
    }


def _through_actors(ray: Any, actors: list[Any], decoded: Iterable[Any]) -> Iterable[pa.Table]:
    """Each decoded block (an object reference) through the least busy actor; the rows as
    they come. At most ``BLOCKS_PER_ACTOR`` blocks per actor are decoding or queued."""
    blocks = iter(decoded)
    decoding: list[Any] = []
    analysing: dict[Any, int] = {}
    busy = [0] * len(actors)
    window = BLOCKS_PER_ACTOR * len(actors) + 1
    while True:
        while len(decoding) + len(analysing) < window:
            block = next(blocks, None)
            if block is None:
                break
            decoding.append(block)
        if not decoding and not analysing:
            return
        [ready], _ = ray.wait([*decoding, *analysing], num_returns=1, fetch_local=False)
        if ready in analysing:
            busy[analysing.pop(ready)] -= 1
            yield ray.get(ready)
        else:
            decoding.remove(ready)
            chosen = busy.index(min(busy))
            busy[chosen] += 1
            analysing[actors[chosen].run.remote(ready)] = chosen


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

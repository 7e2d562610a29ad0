"""The engine's inference-only pass on ONNX Runtime: the final feature map and the layers the
reliability statistics observe, for P(fake), the embedding and final-layer CAMs on CPU.

The pass to the final feature map is exported once (TorchScript exporter: 1-2 s where the
torch.export one took 15 s; dynamic batch axis), checked against torch on a sample batch, and
cached under ``user_cache_dir("onnx")``, keyed by a digest of the weights, the detector class,
the input size, the observed layers and the torch / ONNX Runtime versions, so a later process
pays only the session creation (about 0.05 s). The head and the CAM stay in torch (the backward
of the final-layer CAM touches only the pooling and the classifier), so the outputs come from
the same code as the eager path's.

On 2 idle CPU cores (2 threads) ``dx.explain`` of 32 faces with the shipped detector ran 1.55x
plain eager inference (0.93x eagerly; 1.28x when one 2-thread session ran the chunks one after
another), on 1 shared core 1.57x, and the engine 1.18x its ``torch.compile`` path
(``benchmarks/README.md``, "Engine speed: the ONNX Runtime path"). ``$DEEPFAKE_XAI_ONNX``
``0`` turns it off, ``1`` uses it for any detector (:func:`onnx_wanted` has the default choice).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import logging
import os
import threading
import time
import warnings
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .compiled import TappedFeatures
from .detectors import Detector
from .detectors.weights import user_cache_dir
from .runtime import switch_setting

log = logging.getLogger(__name__)

ONNX_ENV = "DEEPFAKE_XAI_ONNX"
OPSET = 17
EXPORT_BATCH = 2
CHUNK = 4
"""Images per session run: a batch runs in chunks that stay in the CPU's cache, one chunk per
thread at a time on a single-threaded session (shipped detector, 256 px, batch 32, idle cores:
1 thread, chunks of 1-4 images ran 1.82-1.93x plain inference, the whole batch at once 1.26x;
2 threads, chunks of 4 side by side 144 images/s, one 2-thread session on chunks of 8 118)."""
KEEP_FILES = 12
"""Exports kept in the cache (about 9-16 MB each for the shipped architectures)."""
TOLERANCE = 1e-4
"""Largest difference, relative to the largest magnitude, allowed between ONNX Runtime's and
torch's outputs on the export's sample batch (float rounding is about 1e-6 of it)."""


class OnnxUnavailable(RuntimeError):
    """The ONNX Runtime path cannot serve a detector; the message says why."""


def onnx_setting() -> bool | None:
    """``$DEEPFAKE_XAI_ONNX`` as True (always), False (never) or None (the default choice)."""
    return switch_setting(ONNX_ENV)


def onnx_wanted(detector: Detector, choice: bool | None = None) -> bool:
    """Whether the engine should try ONNX Runtime for ``detector``'s inference-only passes:
    ``choice`` (the engine's ``onnx`` argument) first, then ``$DEEPFAKE_XAI_ONNX``, else by
    default for a built-in detector loaded from a checkpoint (its export is cached on disk and
    reused by every later process; plugins and in-memory models stay eager unless asked)."""
    setting = choice if choice is not None else onnx_setting()
    if setting is not None:
        return setting
    return detector.fingerprint is not None and type(detector).__module__.startswith(
        "deepfake_xai."
    )


class OnnxFeatures:
    """``detector.features`` and the outputs of ``observed`` layers on one ONNX Runtime session.

    ``exported`` says whether this process exported the model (False: the cached file was
    reused); ``export_seconds`` and ``session_seconds`` are what that and the session cost.
    """

    def __init__(self, detector: Detector, observed: Sequence[str], threads: int, path: Path):
        self.observed = tuple(observed)
        self.path = path
        self.threads = threads
        self.exported = False
        self.export_seconds = 0.0
        if path.is_file():
            os.utime(path)  # recently used: kept by prune()
        else:
            start = time.perf_counter()
            export(detector, self.observed, path)
            self.export_seconds = time.perf_counter() - start
            self.exported = True
            prune(path.parent)
        start = time.perf_counter()
        self._session = _session(path)
        self._pool = ThreadPoolExecutor(threads, "onnx-chunk") if threads > 1 else None
        self.session_seconds = time.perf_counter() - start

    @property
    def first_call_seconds(self) -> float:
        """What making this path cost: the export (if any) plus the session creation."""
        return self.export_seconds + self.session_seconds

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(final feature map, {observed path: its output})`` of normalised float batch ``x``,
        run in chunks of at most :data:`CHUNK` images, ``threads`` chunks side by side (the
        session releases the GIL)."""
        images = x.detach().contiguous().numpy()
        chunk = min(CHUNK, -(-len(images) // self.threads))
        chunks = [images[start : start + chunk] for start in range(0, len(images), chunk)]
        run = functools.partial(self._session.run, None)
        if self._pool is None or len(chunks) == 1:
            parts = [run({"x": c}) for c in chunks]
        else:
            parts = list(self._pool.map(lambda c: run({"x": c}), chunks))
        fmap, *taps = (
            torch.from_numpy(outs[0] if len(outs) == 1 else np.concatenate(outs))
            for outs in zip(*parts, strict=True)
        )
        return fmap, dict(zip(self.observed, taps, strict=True))


def weights_digest(model: nn.Module) -> str:
    """SHA-256 (16 hex digits) of ``model``'s parameter and buffer names, types and values."""
    digest = hashlib.sha256()
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def cache_path(detector: Detector, observed: Sequence[str], digest: str) -> Path:
    """Where the export of ``detector`` (weights ``digest``) with ``observed`` taps is cached;
    the name holds the detector's class too (a wrapper may compute other features)."""
    import onnxruntime

    kind = f"{type(detector).__module__}.{type(detector).__qualname__}|{'|'.join(observed)}"
    torch_version = torch.__version__.split("+")[0]
    name = (
        f"{detector.architecture}-{digest}-{detector.input_size}px"
        f"-{hashlib.sha256(kind.encode()).hexdigest()[:8]}"
        f"-torch{torch_version}-ort{onnxruntime.__version__}.onnx"
    )
    return user_cache_dir("onnx") / name.replace(os.sep, "_")


def export(detector: Detector, observed: Sequence[str], path: Path) -> None:
    """Export the pass to the final feature map (+ ``observed`` outputs) to ``path``, atomically,
    after checking ONNX Runtime's outputs against torch's on a sample batch.

    Raises:
        OnnxUnavailable: the export failed or its outputs differ from torch's.
    """
    copied = copy.deepcopy(detector).to("cpu")
    copied.model.eval().requires_grad_(False).to(memory_format=torch.contiguous_format)
    module = TappedFeatures(copied, observed).eval()
    generator = torch.Generator().manual_seed(0)
    size = detector.input_size
    sample = torch.randn(EXPORT_BATCH, 3, size, size, generator=generator)
    names = ["fmap", *(f"tap{i}" for i in range(len(observed)))]
    kwargs = (
        {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracing
            torch.onnx.export(
                module,
                (sample,),
                str(partial),
                input_names=["x"],
                output_names=names,
                dynamic_axes={name: {0: "batch"} for name in ["x", *names]},
                opset_version=OPSET,
                **kwargs,
            )
            expected = module(sample)
        got = _session(partial).run(None, {"x": sample.numpy()})
        for name, want, have in zip(names, (expected[0], *expected[1]), got, strict=True):
            scale = max(1.0, want.abs().max().item())
            error = (torch.from_numpy(have) - want).abs().max().item() / scale
            if not error <= TOLERANCE:
                raise OnnxUnavailable(
                    f"ONNX Runtime's {name} differs from torch's by {error:.2g} (relative)"
                )
        os.replace(partial, path)
    except OnnxUnavailable:
        raise
    except Exception as exc:  # an unsupported operator, no onnx package, a full disk
        raise OnnxUnavailable(f"export failed: {type(exc).__name__}: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)


def prune(directory: Path, keep: int = KEEP_FILES, suffix: str = ".onnx") -> None:
    """Keep the ``keep`` most recently used files ending in ``suffix`` in ``directory`` (each
    process touches what it loads) and drop partial files an interrupted write left behind more
    than an hour ago."""
    try:
        files = sorted(directory.glob(f"*{suffix}"), key=lambda f: f.stat().st_mtime, reverse=True)
        stale = [f for f in directory.glob(".*.part") if time.time() - f.stat().st_mtime > 3600]
        for old in [*files[keep:], *stale]:
            old.unlink(missing_ok=True)
    except OSError as exc:  # another process pruning at once, a read-only cache
        log.debug("pruning %s: %s", directory, exc)


def _session(path: Path):
    """A single-threaded ONNX Runtime CPU session on ``path`` (callers run chunks side by side)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class _Entry:
    """One model's ONNX paths (or why there are none) while its weights stay as they were."""

    def __init__(self, token: tuple):
        self.token = token
        self.digest: str | None = None
        self.paths: dict[tuple, OnnxFeatures | OnnxUnavailable] = {}


_CACHE: weakref.WeakKeyDictionary[object, _Entry] = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()
_SESSIONS: dict[tuple[Path, int], OnnxFeatures] = {}
"""Sessions by export file and thread count, shared by every detector object with the same
weights (each ``analyze`` call loads its own): a new session's first batch runs about 0.1-0.3 s
slower than later ones, so a second call in a process skips that and the session creation."""
KEEP_SESSIONS = 4


def onnx_features(detector: Detector, observed: Sequence[str] = ()) -> tuple[OnnxFeatures, bool]:
    """The process's :class:`OnnxFeatures` of ``detector`` (per weights, detector class, observed
    layers and torch thread count) and whether this call made it. A failure is logged once and
    remembered.

    Raises:
        OnnxUnavailable: onnxruntime does not import, the export failed or the session did.
    """
    key = (type(detector), tuple(observed), torch.get_num_threads())
    owner, token = _owner(detector)
    with _CACHE_LOCK:
        entry = _CACHE.get(owner)
        if entry is None or entry.token != token:
            entry = _CACHE[owner] = _Entry(token)
        found = entry.paths.get(key)
        if isinstance(found, OnnxFeatures):
            return found, False
        if found is not None:
            raise found
        try:
            entry.digest = (
                entry.digest
                or (detector.known_digests.get("onnx") if owner is detector else None)
                or weights_digest(detector.model)
            )
            features, made = _build(detector, key[1], key[2], entry.digest)
        except OnnxUnavailable as exc:
            log.warning(
                "ONNX Runtime path for %s unavailable, running eagerly: %s", detector.name, exc
            )
            entry.paths[key] = exc
            raise
        entry.paths[key] = features
        return features, made


def _build(
    detector: Detector, observed: tuple[str, ...], threads: int, digest: str
) -> tuple[OnnxFeatures, bool]:
    """The process's session on the cached export (exported first where there is none), and
    whether this call made it."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise OnnxUnavailable(f"onnxruntime does not import ({exc})") from exc
    path = cache_path(detector, observed, digest)
    shared = _SESSIONS.get((path, threads))
    if shared is not None and path.is_file():
        return shared, False
    features = _open(detector, observed, threads, path)
    _SESSIONS[(path, threads)] = features
    while len(_SESSIONS) > KEEP_SESSIONS:  # the oldest goes; its users keep their reference
        del _SESSIONS[next(iter(_SESSIONS))]
    return features, True


def _open(detector: Detector, observed: tuple[str, ...], threads: int, path: Path) -> OnnxFeatures:
    """A session on the cached export at ``path`` (exported first where there is none; exported
    again, once, where the file is damaged)."""
    try:
        return OnnxFeatures(detector, observed, threads, path)
    except OnnxUnavailable:
        raise
    except Exception as exc:  # a damaged cached file: export it again, once
        log.info("cached ONNX file %s unusable (%s); exporting again", path, exc)
        path.unlink(missing_ok=True)
    try:
        return OnnxFeatures(detector, observed, threads, path)
    except OnnxUnavailable:
        raise
    except Exception as exc:
        raise OnnxUnavailable(f"session failed: {type(exc).__name__}: {exc}") from exc


def forget(detector: Detector, reason: BaseException) -> None:
    """Remember that running ``detector``'s session failed, so later passes run eagerly."""
    with _CACHE_LOCK:
        entry = _CACHE.get(_owner(detector)[0])
        if entry is not None:
            for key, features in list(_SESSIONS.items()):
                if features in entry.paths.values():
                    del _SESSIONS[key]
            failure = OnnxUnavailable(f"run failed: {type(reason).__name__}: {reason}")
            entry.paths = dict.fromkeys(entry.paths, failure)


def _owner(detector: Detector) -> tuple[object, tuple]:
    """What the process's paths of ``detector`` are kept under, and its weights token: the
    network once built, else the detector (its weights are the checkpoint's until then)."""
    if detector.is_built:
        return detector.model, _weights_token(detector.model)
    return detector, ()


def _weights_token(model: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced or modified in place."""
    return tuple((t.data_ptr(), t._version) for t in (*model.parameters(), *model.buffers()))

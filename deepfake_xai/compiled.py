"""The compiled forward pass to the final feature map, for the engine's inference-only work.

``torch.compile`` (inductor) with weight freezing and channels_last makes the engine 1.3x
faster than eager on 2 CPU cores (``benchmarks/README.md``, "Engine speed"), with the same
outputs to float rounding. Its price is the first call in a process: 8-56 s per detector and
batch shape here (inductor's on-disk cache cuts the repeats). So it is
used where that pays: a run of at least :data:`COMPILE_MIN_IMAGES` images, a caller that asks for
it, or a detector already compiled in this process; ``DEEPFAKE_XAI_COMPILE=1`` (always) or ``0``
(never) overrides the automatic choice.

Only the pass to the final feature map (and the layers the reliability statistics observe) is
compiled; the head and the final-layer Grad-CAM, whose backward touches only the pooling and
the classifier, stay eager. Explainers that need gradients through the network run eagerly.

Where the engine's ONNX Runtime pass (:mod:`deepfake_xai.onnx_engine`) serves a detector, it
runs instead: it measured 1.18x this path with a first call of about 1 s instead of 8-56 s.
"""

from __future__ import annotations

import copy
import threading
import time
import weakref
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .detectors import Detector
from .runtime import switch_setting

COMPILE_ENV = "DEEPFAKE_XAI_COMPILE"
COMPILE_MIN_IMAGES = 2000
"""Images a run needs before compiling pays on CPU: measured on 2 cores, the compiled engine
(45.7 images/s) saves 6.4 ms per image over the eager one (35.3), which earns back an 8-11 s
first call after 1,250-1,700 images (a cold compile on a loaded machine took up to 56 s)."""


def compile_setting() -> bool | None:
    """``$DEEPFAKE_XAI_COMPILE`` as True (always), False (never) or None (choose by run size)."""
    return switch_setting(COMPILE_ENV)


def compile_pays(images: int) -> bool:
    """Whether a run of ``images`` images should compile (the environment decides first)."""
    setting = compile_setting()
    return images >= COMPILE_MIN_IMAGES if setting is None else setting


class CompiledFeatures:
    """``detector.features`` and the outputs of ``observed`` layers, compiled from a private
    copy of the model (its weights frozen as they were) once per batch shape.

    A smaller batch is padded to a compiled shape instead of compiling again (rows are
    independent in eval mode). ``first_call_seconds`` records what each compilation cost.
    """

    def __init__(self, detector: Detector, observed: Sequence[str]):
        self.observed = tuple(observed)
        copied = copy.deepcopy(detector)
        copied.model.eval().requires_grad_(False).to(memory_format=torch.channels_last)
        self._module = TappedFeatures(copied, self.observed)
        self._compiled = torch.compile(self._module, options={"freezing": True}, dynamic=False)
        self._shapes: frozenset[tuple[int, ...]] = frozenset()  # replaced, never mutated
        self._lock = threading.Lock()
        self.first_call_seconds: dict[tuple[int, ...], float] = {}

    def ready_for(self, shape: Sequence[int]) -> bool:
        """Whether a batch of ``shape`` runs without compiling again."""
        return self._fitting(tuple(shape)) is not None

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(final feature map, {observed path: its output})`` of normalised batch ``x``."""
        shape = tuple(x.shape)
        fitting = self._fitting(shape)
        if fitting is None:
            with self._lock:
                fitting = self._fitting(shape)
                if fitting is None:
                    start = time.perf_counter()
                    result = self._run(x)
                    self.first_call_seconds[shape] = time.perf_counter() - start
                    self._shapes = self._shapes | {shape}
                    return result
        rows = shape[0]
        if fitting[0] > rows:
            x = F.pad(x, (0, 0, 0, 0, 0, 0, 0, fitting[0] - rows))
        fmap, taps = self._run(x)
        return fmap[:rows], {path: out[:rows] for path, out in taps.items()}

    def _fitting(self, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        """The smallest compiled shape that holds a batch of ``shape`` (None: none does)."""
        fits = [s for s in self._shapes if s[1:] == shape[1:] and s[0] >= shape[0]]
        return min(fits) if fits else None

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            fmap, taps = self._compiled(x.contiguous(memory_format=torch.channels_last))
        return fmap, dict(zip(self.observed, taps, strict=True))


class TappedFeatures(nn.Module):
    """The final feature map plus the outputs of ``paths``, as one module to compile."""

    def __init__(self, detector: Detector, paths: Sequence[str]):
        super().__init__()
        self.model = detector.model
        self.detector = detector
        self.paths = list(paths)
        self.taps: dict[str, torch.Tensor] = {}
        for path in self.paths:
            detector.module(path).register_forward_hook(self._tap(path))

    def _tap(self, path: str):
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            self.taps[path] = output

        return hook

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        fmap = self.detector.features(x)
        return fmap, tuple(self.taps.pop(path) for path in self.paths)


_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple, CompiledFeatures]] = (
    weakref.WeakKeyDictionary()
)
_CACHE_LOCK = threading.Lock()


def compiled_features(detector: Detector, observed: Sequence[str] = ()) -> CompiledFeatures:
    """The process's :class:`CompiledFeatures` of ``detector`` (per model, detector class, as a
    wrapper sharing the model may compute other features, and observed layers)."""
    with _CACHE_LOCK:
        per_model = _CACHE.setdefault(detector.model, {})
        key = (type(detector), tuple(observed))
        if key not in per_model:
            per_model[key] = CompiledFeatures(detector, key[1])
        return per_model[key]


def compiled_already(detector: Detector, observed: Sequence[str], shape: Sequence[int]) -> bool:
    """Whether this process compiled ``detector`` for a batch of ``shape`` already."""
    with _CACHE_LOCK:
        found = _CACHE.get(detector.model, {}).get((type(detector), tuple(observed)))
    return found is not None and found.ready_for(shape)

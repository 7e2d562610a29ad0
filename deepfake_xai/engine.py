"""The one-pass batched analysis engine that every front door calls.

Per batch and detector, one forward pass yields P(fake), the embedding and the heatmaps (see
:func:`deepfake_xai.explainers.gradcam.cam_pass`). uint8 images go to the device once,
are normalised (and resized if a detector needs another size) there, and all results come back
in one device-to-host copy. The engine holds no global state and is built from plain,
picklable parameters, so it can live inside a worker process or a Ray actor unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .compiled import compile_pays, compile_setting, compiled_already, compiled_features
from .detectors import Detector, autocast_dtype, resolve_device
from .detectors.base import check_finite_logits
from .explainers.attribution import SaliencyExplainer
from .explainers.base import AttributionExplainer, Heatmaps
from .explainers.gradcam import cam_method_of, cam_pass, captured_activations
from .folding import eager_network
from .images import ImageSource, load_image
from .onnx_engine import OnnxUnavailable, forget, onnx_features, onnx_wanted
from .preprocessing import Harmonization, to_uint8_tensor
from .registry import EXPLAINERS
from .reliability import EMBEDDING, Assessment, assess, pooled
from .runtime import configure_allocator

log = logging.getLogger(__name__)


@dataclass
class DetectorOutput:
    """One detector's results for one batch, as numpy arrays on the CPU."""

    detector: str
    probs: np.ndarray
    logits: np.ndarray
    embeddings: np.ndarray
    heatmaps: dict[str, np.ndarray]
    targets: np.ndarray
    seconds: float
    ood_scores: np.ndarray | None = None  # None: the detector has no reliability statistics


class Engine:
    """Runs one or several detectors (and an attribution method) over uint8 image batches.

    ``method=None`` gives predictions and embeddings only. The Grad-CAM family shares the
    forward pass; any other registered attribution explainer is built once per detector with
    ``method_kwargs`` and called after the pass. ``amp=None`` enables autocast on CUDA only;
    ``channels_last=None`` uses it on CPU and CUDA, where it measured faster for these convnets.

    On CPU, predictions and final-layer CAMs take a faster pass to the final feature map.
    ``onnx`` picks ONNX Runtime (:mod:`deepfake_xai.onnx_engine`): True uses it, False never,
    None (the default) as :func:`~deepfake_xai.onnx_engine.onnx_wanted` decides (built-in
    detectors loaded from a checkpoint, unless ``$DEEPFAKE_XAI_ONNX`` says otherwise).
    Where ONNX Runtime is not used, ``compiled`` picks the ``torch.compile`` pass
    (:mod:`deepfake_xai.compiled`): True uses it, False never; None uses it where a detector is
    compiled in this process already, or where ``$DEEPFAKE_XAI_COMPILE`` says so, or after
    :meth:`plan` announced a run where it pays. A path that fails falls back to eager with the
    reason logged. Mid-layer CAMs and other explainers always run eagerly (they need gradients
    through the network). ``onnx_seconds`` and ``compile_seconds`` add up what first calls
    spent exporting / creating sessions and compiling.

    ``saliency=True`` (Grad-CAM family only) carries the CAM's backward pass on to the pixels
    and adds their saliency under the layer key ``"input"``: a second map, from a different
    method, for the price of one eager forward and backward pass instead of two passes (the
    app cross-checks every heatmap this way). It runs eagerly.

    Eager passes on the CPU run a copy of each network with its BatchNorms folded into the
    convolutions (:mod:`deepfake_xai.folding`; ``$DEEPFAKE_XAI_FOLD=0`` turns it off): the same
    outputs to float rounding, faster forwards and backwards.
    """

    def __init__(
        self,
        detectors: Sequence[Detector | str],
        *,
        method: str | None = "gradcam",
        layers: Sequence[str] = ("final",),
        target: str = "fake",
        device: str | torch.device = "auto",
        amp: bool | None = None,
        channels_last: bool | None = None,
        compiled: bool | None = None,
        onnx: bool | None = None,
        saliency: bool = False,
        **method_kwargs: Any,
    ):
        if isinstance(detectors, (str, Detector)):
            detectors = [detectors]
        if not detectors:
            raise ValueError("Engine needs at least one detector")
        configure_allocator()
        self.device = resolve_device(device)
        self.detectors: list[Detector] = [self._load(d) for d in detectors]
        names = [d.name for d in self.detectors]
        if len(set(names)) != len(names):
            raise ValueError(f"detector names must be unique, got {names}")
        self.layers = tuple(dict.fromkeys(layers))
        self.target = target
        self.amp = self.device.type == "cuda" if amp is None else bool(amp)
        self.amp_dtype = autocast_dtype(self.device)
        self.channels_last = (
            self.device.type in ("cpu", "cuda") if channels_last is None else bool(channels_last)
        )
        if self.channels_last:
            for detector in self.detectors:
                detector.use_channels_last()
        self.method, self.cam_method, self._explainers = self._resolve_method(method, method_kwargs)
        if saliency and self.cam_method is None:
            raise ValueError(
                f"saliency=True rides on a Grad-CAM family pass, not on method={method!r}"
            )
        self.saliency = saliency
        self.compiled = compiled
        self.compile_seconds = 0.0
        self.onnx = onnx
        self.onnx_seconds = 0.0
        self._onnx_failed: set[str] = set()

    def plan(self, images: int) -> None:
        """Announce a run of ``images`` images: compile when that pays (see
        :func:`~deepfake_xai.compiled.compile_pays`), unless ``compiled`` was chosen already."""
        if self.compiled is None and compile_pays(images):
            self.compiled = True

    def _load(self, detector: Detector | str) -> Detector:
        if isinstance(detector, Detector):
            return detector if detector.device == self.device else detector.to(self.device)
        from .api import load_detector

        return load_detector(detector, device=self.device)

    def _resolve_method(
        self, method: str | None, kwargs: dict[str, Any]
    ) -> tuple[str | None, str | None, dict[str, AttributionExplainer]]:
        """(canonical name, CAM method or None, explainers per detector for other methods)."""
        if method is None:
            if kwargs:
                raise TypeError(f"method=None takes no options, got {sorted(kwargs)}")
            return None, None, {}
        entry = EXPLAINERS.entry(method)
        factory = entry.factory
        if getattr(factory, "kind", None) != "attribution":
            raise ValueError(
                f"{method!r} is not an attribution explainer (heatmaps per image); "
                "projections such as t-SNE work on the embeddings the engine returns"
            )
        cam_method = cam_method_of(method)
        if cam_method is not None:
            if kwargs:
                raise TypeError(f"{entry.name} takes no options, got {sorted(kwargs)}")
            return entry.name, cam_method, {}
        explainers = {d.name: factory(d, **kwargs) for d in self.detectors}
        return entry.name, None, explainers

    def harmonizations(self) -> dict[str, Harmonization]:
        """Detector name -> its Harmonization (decode once, harmonise per distinct value)."""
        return {d.name: d.harmonization for d in self.detectors}

    def run(
        self, batch: torch.Tensor | Mapping[str, torch.Tensor], *, check_finite: bool = True
    ) -> dict[str, DetectorOutput]:
        """Analyse one uint8 ``(B, 3, H, W)`` batch shared by all detectors, or a mapping
        detector name -> its own uint8 batch. Returns detector name -> :class:`DetectorOutput`.

        Raises:
            NonFiniteOutputError: a detector produced NaN or infinite logits (no verdict is
                made from them). With ``check_finite=False`` they come back as NaN
                probabilities instead, for callers that mark those images one by one.
        """
        inputs = self._inputs(batch)
        results: dict[str, dict[str, torch.Tensor]] = {}
        seconds: dict[str, float] = {}
        for detector in self.detectors:
            start = time.perf_counter()
            results[detector.name] = self._pass(detector, inputs[detector.name])
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            seconds[detector.name] = time.perf_counter() - start
        keys = [(name, key) for name, result in results.items() for key in result]
        arrays = _to_host([results[name][key] for name, key in keys])
        host: dict[str, dict[str, np.ndarray]] = {name: {} for name in results}
        for (name, key), array in zip(keys, arrays, strict=True):
            host[name][key] = array
        for name, arrays_of_detector in host.items():
            if check_finite:
                check_finite_logits(name, arrays_of_detector["logits"])
        return {name: _output(name, host[name], seconds[name]) for name in results}

    def _inputs(self, batch: torch.Tensor | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Detector name -> uint8 batch on the device (a shared batch is transferred once)."""
        if isinstance(batch, Mapping):
            names = {d.name for d in self.detectors}
            if set(batch) != names:
                raise ValueError(
                    f"batch mapping keys {sorted(batch)} must be the detector names {sorted(names)}"
                )
            return {name: self._to_device(_check_batch(b, name)) for name, b in batch.items()}
        shared = self._to_device(_check_batch(batch, "batch"))
        return {d.name: shared for d in self.detectors}

    def _to_device(self, batch: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda" and batch.device.type == "cpu":
            batch = batch.pin_memory()
        return batch.to(self.device, non_blocking=True)

    def _prepare(
        self, detector: Detector, batch: torch.Tensor, channels_last: bool
    ) -> torch.Tensor:
        """Normalise on the device and resize to the detector's input size when needed."""
        x = detector.normalize(batch)
        size = (detector.input_size, detector.input_size)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _autocast(self) -> AbstractContextManager:
        if not self.amp:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _pass(self, detector: Detector, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits, embeddings, targets, ``map:<layer>`` tensors and, for a detector with
        reliability statistics, ood scores from the same pass; still on the device."""
        explainer = self._explainers.get(detector.name)
        reliability = detector.reliability
        observed_layers = reliability.module_layers if reliability is not None else []
        onnx = self._fast_eligible(detector) and self._onnx_wanted(detector)
        x = self._prepare(detector, batch, channels_last=self.channels_last and not onnx)
        fmap, fast_observed = self._onnx_pass(detector, x, observed_layers) if onnx else (None, {})
        if fmap is None:
            fmap, fast_observed = self._compiled_pass(detector, x, observed_layers)
        hooked = observed_layers if fmap is None else []
        layers = self.layers if self.cam_method else ()
        eager = eager_network(detector, [*layers, *hooked]) if fmap is None else detector
        with self._autocast():
            with captured_activations(eager, hooked, observe=True) as observed:
                logits, embeddings, maps, targets = cam_pass(
                    eager,
                    x,
                    layers=layers,
                    target=self.target,
                    method=self.cam_method or "gradcam",
                    fmap=fmap,
                    saliency=self.saliency,
                )
            observed.update(fast_observed)
            if explainer is not None:
                heatmaps = explainer.attribute(x, targets, self.layers)
                maps = {layer: h.maps for layer, h in heatmaps.items()}
        logits = logits.detach().float()
        out = {
            "probs": _probabilities(logits),
            "logits": logits,
            "embeddings": embeddings.detach().float(),
            "targets": targets.long(),
        }
        if reliability is not None:
            features = {path: pooled(observed[path]) for path in observed_layers}
            out["ood_scores"] = reliability.score({EMBEDDING: out["embeddings"], **features})
        out.update({f"map:{layer}": m.detach().half() for layer, m in maps.items()})
        return out

    def _fast_eligible(self, detector: Detector) -> bool:
        """Whether ``detector``'s pass may start from a precomputed final feature map: on CPU,
        without autocast, with no gradients needed below the final layer (an input attribution
        makes its own forward and backward passes, so its P(fake) and targets may; pixel
        saliency from the CAM's pass needs them down to the pixels)."""
        final = detector.resolve_layer("final")
        return (
            self.device.type == "cpu"
            and not self.amp
            and not self.saliency
            and all(
                detector.resolve_layer(layer) == final
                for layer in (self.layers if self.cam_method else ())
            )
        )

    def _onnx_wanted(self, detector: Detector) -> bool:
        return detector.name not in self._onnx_failed and onnx_wanted(detector, self.onnx)

    def _onnx_pass(
        self, detector: Detector, x: torch.Tensor, observed: list[str]
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """(final feature map, observed outputs) from ONNX Runtime, or (None, {}) where it
        failed (the reason is logged; this engine runs ``detector`` without it from now on)."""
        try:
            features, made = onnx_features(detector, observed)
        except OnnxUnavailable:  # logged once per process by onnx_features
            self._onnx_failed.add(detector.name)
            return None, {}
        if made:
            self.onnx_seconds += features.first_call_seconds
        try:
            return features(x)
        except Exception as exc:  # any runtime error: eager still works
            log.warning("ONNX Runtime failed on %s, running eagerly: %s", detector.name, exc)
            forget(detector, exc)
            self._onnx_failed.add(detector.name)
            return None, {}

    def _compiled_pass(
        self, detector: Detector, x: torch.Tensor, observed: list[str]
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """(final feature map, observed outputs) from the compiled pass, or (None, {}) where
        the eager pass runs (see :meth:`_fast_eligible`)."""
        use = self.compiled if self.compiled is not None else compile_setting()
        if use is False or not self._fast_eligible(detector):
            return None, {}
        ready = compiled_already(detector, observed, x.shape)
        if not (use or ready):
            return None, {}
        start = time.perf_counter()
        try:
            fmap, outputs = compiled_features(detector, observed)(x)
        except Exception as exc:  # no C compiler, an unsupported layer: eager still works
            log.warning("compiling %s failed, running eagerly: %s", detector.name, exc)
            self.compiled = False
            return None, {}
        if not ready:
            self.compile_seconds += time.perf_counter() - start
        return fmap, outputs

    def __repr__(self) -> str:
        names = [d.name for d in self.detectors]
        return (
            f"Engine(detectors={names}, method={self.method!r}, layers={list(self.layers)}, "
            f"device={self.device}, amp={self.amp}, channels_last={self.channels_last}"
            + (", saliency=True)" if self.saliency else ")")
        )


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    """sigmoid(logits), NaN where a logit is NaN or infinite: sigmoid(inf) = 1.0 is no score."""
    return torch.where(torch.isfinite(logits), torch.sigmoid(logits), torch.nan)


def _output(name: str, arrays: dict[str, np.ndarray], seconds: float) -> DetectorOutput:
    return DetectorOutput(
        detector=name,
        probs=arrays["probs"],
        logits=arrays["logits"],
        embeddings=arrays["embeddings"],
        heatmaps={key[4:]: a for key, a in arrays.items() if key.startswith("map:")},
        targets=arrays["targets"],
        seconds=seconds,
        ood_scores=arrays.get("ood_scores"),
    )


def _check_batch(batch: torch.Tensor, name: str) -> torch.Tensor:
    """A uint8 ``(B, 3, H, W)`` tensor (a single ``(3, H, W)`` image gets a batch axis)."""
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"{name}: expected a uint8 torch.Tensor, got {type(batch).__name__}")
    if batch.ndim == 3:
        batch = batch.unsqueeze(0)
    if batch.dtype != torch.uint8 or batch.ndim != 4 or batch.shape[1] != 3 or batch.shape[0] == 0:
        raise ValueError(
            f"{name}: expected a non-empty uint8 (B, 3, H, W) batch, "
            f"got {tuple(batch.shape)} {batch.dtype}"
        )
    return batch


def _to_host(tensors: list[torch.Tensor]) -> list[np.ndarray]:
    """Tensors as numpy arrays with ONE device-to-host copy (their bytes packed together)."""
    if all(t.device.type == "cpu" for t in tensors):
        return [t.numpy() for t in tensors]
    flat = [t.contiguous().reshape(-1).view(torch.uint8) for t in tensors]
    packed = torch.cat(flat).cpu().numpy()
    out, offset = [], 0
    for t, chunk in zip(tensors, flat, strict=True):
        dtype = torch.empty(0, dtype=t.dtype).numpy().dtype
        out.append(packed[offset : offset + chunk.numel()].view(dtype).reshape(t.shape))
        offset += chunk.numel()
    return out


@dataclass
class Explanation:
    """Predictions, embeddings and heatmaps for a set of images, with the images themselves."""

    probs: np.ndarray
    logits: np.ndarray
    embeddings: np.ndarray
    heatmaps: dict[str, Heatmaps]
    images: list[Image.Image]
    detector: str
    method: str | None
    targets: np.ndarray
    ood_scores: np.ndarray | None = None  # None: the detector has no reliability statistics

    def __len__(self) -> int:
        return len(self.probs)

    def assessment(self, index: int, problems: Sequence[str] = ()) -> Assessment:
        """Image ``index``'s three-way verdict (fake / real / uncertain), given the input
        ``problems`` found before the detector ran (see :meth:`Reliability.input_problems`)."""
        ood = None if self.ood_scores is None else float(self.ood_scores[index])
        return assess(float(self.probs[index]), ood, problems)

    def overlay(
        self,
        index: int,
        layer: str = "final",
        *,
        alpha: float = 0.5,
        colormap: str = "jet",
        image: Image.Image | None = None,
    ) -> Image.Image:
        """Image ``index`` (or ``image``) with its heatmap at ``layer`` drawn over it."""
        from .render import overlay

        if layer not in self.heatmaps:
            raise KeyError(f"no heatmap for layer {layer!r}; available: {sorted(self.heatmaps)}")
        return overlay(
            self.images[index] if image is None else image,
            self.heatmaps[layer].maps[index],
            alpha=alpha,
            colormap=colormap,
        )


def explain(
    detector: Detector | str,
    images: Sequence[ImageSource] | torch.Tensor,
    method: str | None = "gradcam",
    layers: Sequence[str] = ("final",),
    target: str = "fake",
    batch_size: int = 32,
    device: str | torch.device | None = None,
    saliency: bool = False,
    **method_kwargs: Any,
) -> Explanation:
    """Predict and explain ``images`` with one detector.

    ``images`` are paths, PIL images, arrays or bytes (decoded by
    :func:`~deepfake_xai.images.load_image` and harmonised like the detector's training data),
    or a uint8 ``(N, 3, H, W)`` tensor taken as already harmonised. ``device=None`` keeps a
    given detector where it is and picks the best device for a name. Several threads may
    explain with one detector at once (the app does); each gets its own maps.
    ``saliency=True`` adds pixel saliency from the same pass (see :class:`Engine`) as
    ``heatmaps["input"]``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if device is None:
        device = detector.device if isinstance(detector, Detector) else "auto"
    engine = Engine(
        [detector], method=method, layers=layers, target=target, device=device,
        saliency=saliency, **method_kwargs,
    )  # fmt: skip
    engine.plan(len(images) if isinstance(images, (list, tuple, torch.Tensor)) else 1)
    det = engine.detectors[0]
    outputs, pictures = [], []
    for batch, batch_images in _harmonised_batches(det, images, batch_size):
        outputs.append(engine.run(batch)[det.name])
        pictures.extend(batch_images)
    if not outputs:
        raise ValueError("explain() got no images")
    targets = np.concatenate([o.targets for o in outputs])
    target_tensor = torch.from_numpy(targets)
    heatmaps = {
        layer: Heatmaps(
            torch.from_numpy(np.concatenate([o.heatmaps[layer] for o in outputs])),
            method=SaliencyExplainer.name
            if layer == "input" and engine.saliency
            else engine.method or "",
            layer=layer,
            targets=target_tensor,
            detector=det.name,
        )
        for layer in outputs[0].heatmaps
    }
    scored = det.reliability is not None
    return Explanation(
        probs=np.concatenate([o.probs for o in outputs]),
        logits=np.concatenate([o.logits for o in outputs]),
        embeddings=np.concatenate([o.embeddings for o in outputs]),
        heatmaps=heatmaps,
        images=pictures,
        detector=det.name,
        method=engine.method,
        targets=targets,
        ood_scores=np.concatenate([o.ood_scores for o in outputs]) if scored else None,
    )


def _harmonised_batches(
    detector: Detector, images: Sequence[ImageSource] | torch.Tensor, batch_size: int
) -> Iterator[tuple[torch.Tensor, list[Image.Image]]]:
    """uint8 batches with the PIL images they hold; sources are decoded and harmonised once."""
    if isinstance(images, torch.Tensor):
        images = _check_batch(images, "images")
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            yield batch, [Image.fromarray(img.permute(1, 2, 0).cpu().numpy()) for img in batch]
        return
    if not isinstance(images, (list, tuple)):
        images = [images]
    for start in range(0, len(images), batch_size):
        pictures = [
            detector.harmonization.apply(load_image(src))
            for src in images[start : start + batch_size]
        ]
        yield torch.stack([to_uint8_tensor(p) for p in pictures]), pictures

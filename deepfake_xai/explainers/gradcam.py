"""The Grad-CAM family (Grad-CAM, Grad-CAM++, LayerCAM) computed in one forward pass.

Parameters stay frozen; gradients are taken with :func:`torch.autograd.grad` with respect to
the chosen activations only. For the final layer the features run without a graph and only the
head (pooling + classifier) is differentiated; for other layers a forward hook detaches the
activation and re-marks it as requiring grad, so the backward pass stops there. Pixel saliency
from the same pass (``saliency=True``) keeps the whole graph instead, down to the pixels. One
detector can be explained from several threads at once (see :func:`captured_activations`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar

import torch
from torch.utils.hooks import RemovableHandle

from ..registry import EXPLAINERS
from .base import (
    AttributionExplainer,
    Heatmaps,
    TargetSpec,
    normalize_maps,
    resolve_targets,
    signed_logit,
)

if TYPE_CHECKING:
    from ..detectors import Detector

CamFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_GRADCAMPP_EPS = 1e-6


def gradcam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM: channels weighted by their spatially averaged gradient, then ReLU."""
    weights = grads.mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * activations).sum(dim=1))


def gradcam_plusplus(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++: the closed form for an exponentiated score (eq. 19 of arXiv:1710.11063)."""
    grads_2 = grads.pow(2)
    grads_3 = grads_2 * grads
    sum_acts = activations.sum(dim=(2, 3), keepdim=True)
    alpha = grads_2 / (2 * grads_2 + sum_acts * grads_3 + _GRADCAMPP_EPS)
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    weights = (torch.relu(grads) * alpha).sum(dim=(2, 3), keepdim=True)
    return torch.relu((weights * activations).sum(dim=1))


def layercam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """LayerCAM: activations weighted by their positive gradient at every location."""
    return torch.relu((torch.relu(grads) * activations).sum(dim=1))


CAM_METHODS: dict[str, CamFn] = {
    "gradcam": gradcam,
    "gradcam++": gradcam_plusplus,
    "layercam": layercam,
}


@contextmanager
def captured_activations(
    detector: Detector, layers: Sequence[str], *, observe: bool = False
) -> Iterator[dict[str, torch.Tensor]]:
    """Capture the outputs of ``layers``: an output that does not require grad becomes a fresh
    leaf that does, so a later backward stops there; one computed from an earlier captured layer
    (it requires grad already) stays in the graph, so that layer still gets its gradient. With
    ``observe`` the outputs are only recorded (detached) and the pass is left as it is; an
    observing capture may surround a CAM pass that captures the same layer.

    Yields the dict filled during the block (module path -> activation). Safe with several
    threads on one detector: each module gets one shared hook while anyone captures it, and the
    hook serves only the captures of the thread (or asyncio task) that runs the forward pass,
    found through a context variable; other threads' passes go through untouched. Hooks are
    always removed when the last capture ends, also when the block raises.
    """
    captured: dict[str, torch.Tensor] = {}
    wanted: dict[torch.nn.Module, list[str]] = {}
    for path in dict.fromkeys(detector.resolve_layer(layer) for layer in layers):
        wanted.setdefault(detector.module(path), []).append(path)
    routes = dict(_CAPTURES.get())
    for module, paths in wanted.items():
        routes[module] = (
            *routes.get(module, ()),
            _Capture(detector.name, paths, captured, observe),
        )
    token = _CAPTURES.set(routes)
    _hook(wanted)
    try:
        yield captured
    finally:
        _CAPTURES.reset(token)
        _unhook(wanted)


@dataclass(frozen=True)
class _Capture:
    """Where one module's output goes for one capture: the paths it answers and their dict."""

    detector: str
    paths: list[str]
    into: dict[str, torch.Tensor]
    observe: bool = False


_CAPTURES: ContextVar[Mapping[torch.nn.Module, tuple[_Capture, ...]]] = ContextVar(
    "deepfake_xai_cam_captures", default=MappingProxyType({})
)
_HOOKS: dict[torch.nn.Module, tuple[RemovableHandle, int]] = {}
_HOOKS_LOCK = threading.Lock()


def _hook(modules: Iterable[torch.nn.Module]) -> None:
    with _HOOKS_LOCK:
        for module in modules:
            handle, users = _HOOKS.get(module) or (module.register_forward_hook(_route), 0)
            _HOOKS[module] = (handle, users + 1)


def _unhook(modules: Iterable[torch.nn.Module]) -> None:
    with _HOOKS_LOCK:
        for module in modules:
            handle, users = _HOOKS.pop(module)
            if users > 1:
                _HOOKS[module] = (handle, users - 1)
            else:
                handle.remove()


def _route(module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor | None:
    """The shared forward hook: record the output for this context's captures (see
    :func:`captured_activations`)."""
    captures = _CAPTURES.get().get(module, ())
    replacement = None
    for capture in captures:
        if not isinstance(output, torch.Tensor) or output.ndim != 4:
            got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output)
            raise ValueError(
                f"{capture.detector}: layer {capture.paths[0]!r} outputs {got}; a captured "
                "layer needs a single (B, C, h, w) tensor"
            )
        if capture.observe:
            value = output.detach()
        elif output.requires_grad:  # computed from an earlier captured layer: keep it in the graph
            value = output
        else:
            replacement = value = (
                replacement if replacement is not None else output.detach().requires_grad_()
            )
        for path in capture.paths:
            capture.into[path] = value
    return replacement


def cam_pass(
    detector: Detector,
    x: torch.Tensor,
    *,
    layers: Sequence[str] = ("final",),
    target: TargetSpec = "fake",
    method: str = "gradcam",
    fmap: torch.Tensor | None = None,
    saliency: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """ONE forward pass: ``(logits (B,), embeddings (B, D), {layer: maps}, targets (B,))``.

    ``x`` is a normalised float batch on the detector's device. Maps ``(B, h, w)`` are at the
    layer's resolution, normalised per image to [0, 1], and stay on the device. With
    ``layers=()`` this is a plain ``inference_mode`` pass. ``fmap``, the final feature map of
    ``x`` computed already (the engine's compiled path), leaves only the head to run; then
    ``layers`` may name the final layer only. ``saliency=True`` carries the same backward pass
    on to the pixels and adds their saliency (``|d score / d pixel|`` summed over channels, as
    the ``saliency`` explainer computes it) under the key ``"input"``; the pass then holds
    the whole batch's graph, as training does.
    """
    cam = _cam_function(method)
    layers = tuple(dict.fromkeys(layers))
    if saliency:
        if fmap is not None:
            raise ValueError("pixel saliency needs the pass from the pixels, not a feature map")
        if "input" in layers:
            raise ValueError("with saliency=True the key 'input' is the pixels', not a layer's")
        x = (x.detach().clone() if x.is_inference() else x.detach()).requires_grad_()
    if not layers and not saliency:
        with torch.inference_mode():
            logits, embeddings = detector.head(detector.features(x) if fmap is None else fmap)
        return logits, embeddings, {}, resolve_targets(target, logits)

    final = detector.resolve_layer("final")
    paths = {layer: detector.resolve_layer(layer) for layer in layers}
    hooked = list(dict.fromkeys(path for path in paths.values() if path != final))
    if fmap is not None and hooked:
        raise ValueError(f"a given feature map serves the final layer only, not {hooked}")
    with captured_activations(detector, hooked) as activations:
        with torch.set_grad_enabled(bool(hooked) or saliency):
            fmap = detector.features(x) if fmap is None else fmap
        if not (hooked or saliency):
            fmap = fmap.detach().requires_grad_()
        with torch.enable_grad():
            logits, embeddings = detector.head(fmap)
    missing = [path for path in hooked if path not in activations]
    if missing:
        raise ValueError(f"{detector.name}: layers {missing} were not run by features() or head()")

    activations[final] = fmap
    targets = resolve_targets(target, logits)
    unique = list(dict.fromkeys(paths.values()))
    wrt = [activations[p] for p in unique] + ([x] if saliency else [])
    grads = torch.autograd.grad(signed_logit(logits, targets).sum(), wrt)
    maps = {
        path: normalize_maps(cam(activations[path].detach().float(), grad.float()))
        for path, grad in zip(unique, grads[: len(unique)], strict=True)
    }
    shown = {k: maps[p] for k, p in paths.items()}
    if saliency:
        shown["input"] = normalize_maps(grads[-1].float().abs().sum(dim=1))
    return logits.detach(), embeddings.detach(), shown, targets


def _cam_function(method: str) -> CamFn:
    try:
        return CAM_METHODS[method]
    except KeyError:
        raise ValueError(
            f"unknown CAM method {method!r}; use one of {sorted(CAM_METHODS)}"
        ) from None


class CamExplainer(AttributionExplainer):
    """Base of the Grad-CAM family; subclasses set ``cam_method`` (a key of :data:`CAM_METHODS`)."""

    uses_layers: ClassVar[bool] = True
    cam_method: ClassVar[str] = "gradcam"

    def attribute(
        self,
        inputs: torch.Tensor,
        target: TargetSpec = "fake",
        layers: Sequence[str] = ("final",),
    ) -> dict[str, Heatmaps]:
        """Heatmaps at each layer's feature resolution, keyed by the layer name as asked."""
        _, _, maps, targets = cam_pass(
            self.detector, inputs, layers=layers, target=target, method=self.cam_method
        )
        return {
            layer: Heatmaps(
                m, method=self.name, layer=layer, targets=targets, detector=self.detector.name
            )
            for layer, m in maps.items()
        }


def cam_method_of(method: str) -> str | None:
    """The CAM method (a key of :data:`CAM_METHODS`) of the registered explainer ``method``, or
    None when it is not of the Grad-CAM family (its maps come from passes of its own)."""
    factory = EXPLAINERS.entry(method).factory
    is_cam = isinstance(factory, type) and issubclass(factory, CamExplainer)
    return factory.cam_method if is_cam else None


@EXPLAINERS.register("gradcam", aliases=("grad-cam",))
class GradCAM(CamExplainer):
    """Grad-CAM (Selvaraju et al.): class-discriminative, coarse, and cheap."""

    name = "gradcam"
    cam_method = "gradcam"


@EXPLAINERS.register("gradcam++", aliases=("gradcampp", "grad-cam++"))
class GradCAMPlusPlus(CamExplainer):
    """Grad-CAM++ (Chattopadhay et al.): better at several instances of the evidence."""

    name = "gradcam++"
    cam_method = "gradcam++"


@EXPLAINERS.register("layercam")
class LayerCAM(CamExplainer):
    """LayerCAM (Jiang et al.): per-location weights; sharper, and useful at mid layers."""

    name = "layercam"
    cam_method = "layercam"

"""``check_detector``: does a detector factory honour the plugin contract?

Every check runs on a freshly built detector with random weights (``pretrained=False``), on a
small batch of noise images at the detector's input size (or ``image_size``).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..detectors import LABELS, CheckpointError, Detector, NonFiniteOutputError
from ..preprocessing import Harmonization
from ..registry import DETECTORS, Entry, RegistryError
from .common import (
    describe,
    hook_counts,
    max_difference,
    require_no_new_hooks,
    require_signature,
    start_report,
)
from .report import Check, CheckFailed, CheckReport, CheckSkipped, run_checks

BATCH = 3
BATCH_ATOL = 1e-4
INPUT_TYPES_ATOL = 1e-5
SAVE_LOAD_ATOL = 1e-6
ENGINE_ATOL = 1e-3
MAP_TOLERANCE = 1e-3


@dataclass
class DetectorContext:
    """What the checks share: the factory, the detector once built, and the test batch."""

    factory: Callable[..., Any]
    entry: Entry | None
    device: str
    image_size: int | None
    built: Any = None
    batch: torch.Tensor | None = None
    hooks_before: dict[str, int] = field(default_factory=dict)

    @property
    def detector(self) -> Detector:
        return self.built


def check_detector(
    factory_or_name: str | Callable[..., Any],
    *,
    image_size: int | None = None,
    device: str = "cpu",
) -> CheckReport:
    """Run every detector check and return the report (see :meth:`CheckReport.raise_if_failed`).

    ``factory_or_name`` is a registered detector name (a plugin's entry-point name) or a
    factory. ``image_size`` runs the checks at that input size (to keep them fast) by changing
    the detector's harmonization; use it for models that accept any input size.
    """
    report, entry, factory = start_report(DETECTORS, factory_or_name)
    if factory is None:
        return report
    return run_checks(report, CHECKS, DetectorContext(factory, entry, device, image_size))


# -- building ---------------------------------------------------------------------------------
def _factory(ctx: DetectorContext) -> None:
    kwargs = {"pretrained": False, "device": ctx.device}
    require_signature(
        ctx.factory,
        (),
        kwargs,
        f"the factory cannot be called with pretrained=False, device={ctx.device!r}; a detector "
        "factory must accept these keyword arguments and give every other argument a default",
    )
    ctx.built = ctx.factory(**kwargs)


def _returns_detector(ctx: DetectorContext) -> None:
    if not isinstance(ctx.built, Detector):
        raise CheckFailed(
            f"the factory returned a {type(ctx.built).__name__}, expected a deepfake_xai "
            "Detector: return an instance of a deepfake_xai.detectors.Detector subclass "
            "(TimmDetector for timm models)"
        )
    detector = ctx.detector
    if ctx.image_size and isinstance(detector.harmonization, Harmonization):
        detector.harmonization = dataclasses.replace(
            detector.harmonization, image_size=ctx.image_size
        )
    size = int(detector.input_size)
    generator = torch.Generator().manual_seed(0)
    ctx.batch = torch.randint(
        0, 256, (BATCH, 3, size, size), dtype=torch.uint8, generator=generator
    )
    ctx.hooks_before = hook_counts(detector.model)


def _name(ctx: DetectorContext) -> None:
    if ctx.entry is None:
        raise CheckSkipped("checked a factory, not a registered name")
    try:
        same = DETECTORS.entry(ctx.detector.name) is ctx.entry
    except RegistryError:
        same = False
    if not same:
        raise CheckFailed(
            f"detector.name is {ctx.detector.name!r} but it is registered as {ctx.entry.name!r}; "
            "a checkpoint stores detector.name and Detector.load rebuilds it from the registry, "
            "so give the detector its entry-point name"
        )


# -- description ------------------------------------------------------------------------------
def _labels(ctx: DetectorContext) -> None:
    labels = tuple(ctx.detector.labels)
    if labels != LABELS:
        raise CheckFailed(
            f"labels are {labels!r}; expected {LABELS!r}: class 1 is fake and the single "
            "logit's sigmoid is P(fake)"
        )


def _preprocessing(ctx: DetectorContext) -> None:
    detector = ctx.detector
    if not isinstance(detector.harmonization, Harmonization):
        raise CheckFailed(
            f"harmonization is a {type(detector.harmonization).__name__}; expected a "
            "deepfake_xai.preprocessing.Harmonization (it sets the input size and is stored "
            "in checkpoints)"
        )
    mean, std = tuple(detector.mean), tuple(detector.std)
    if len(mean) != 3 or len(std) != 3:
        raise CheckFailed(f"mean {mean} and std {std} must have one value per RGB channel")
    if not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
        raise CheckFailed(f"mean {mean} and std {std} must be finite, with std > 0")
    if not (all(0 <= m <= 1 for m in mean) and max(std) <= 1):
        raise CheckFailed(
            f"mean {mean} / std {std} look like 0-255 values; they apply to pixels scaled to "
            "[0, 1] (ImageNet: mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225))"
        )


def _cam_layers(ctx: DetectorContext) -> str | None:
    detector = ctx.detector
    layers = dict(detector.cam_layers)
    if "final" not in layers:
        raise CheckFailed(
            f"cam_layers {layers} has no 'final' entry; name the module whose output "
            "features() returns"
        )
    unresolved = []
    for name in layers:
        try:
            detector.module(name)
        except ValueError:
            unresolved.append(f"{name}={layers[name]!r}")
    if unresolved:
        raise CheckFailed(
            f"cam_layers {', '.join(unresolved)} name no module of detector.model; use paths "
            "from detector.model.named_modules()"
        )
    if "mid" not in layers:
        return "no 'mid' layer (recommended: a stride-16 stage, for a finer map)"
    return None


# -- the model protocol -----------------------------------------------------------------------
def _normalized(ctx: DetectorContext) -> torch.Tensor:
    return ctx.detector.normalize(ctx.batch)


def _features_and_head(ctx: DetectorContext) -> None:
    detector = ctx.detector
    with torch.no_grad():
        fmap = detector.features(_normalized(ctx))
        if not (isinstance(fmap, torch.Tensor) and fmap.ndim == 4 and fmap.shape[0] == BATCH):
            raise CheckFailed(
                f"features() returned {describe(fmap)}; expected the final feature map "
                f"(B, C, h, w) = ({BATCH}, C, h, w), the output of the 'final' CAM layer"
            )
        out = detector.head(fmap)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise CheckFailed(
            f"head() returned {describe(out)}; expected a pair (logit (B,), embedding (B, D))"
        )
    logit, embedding = out
    if not (isinstance(logit, torch.Tensor) and tuple(logit.shape) == (BATCH,)):
        raise CheckFailed(
            f"head() returned logits as {describe(logit)}; expected shape ({BATCH},): one logit "
            "per image, sigmoid(logit) = P(fake). A two-class model can return "
            "logits[:, 1] - logits[:, 0]"
        )
    if not logit.is_floating_point():
        raise CheckFailed(f"head() returned {logit.dtype} logits; expected a float tensor")
    if not (
        isinstance(embedding, torch.Tensor)
        and embedding.ndim == 2
        and embedding.shape[0] == BATCH
        and embedding.shape[1] > 0
        and embedding.is_floating_point()
    ):
        raise CheckFailed(
            f"head() returned embeddings as {describe(embedding)}; expected a float tensor of "
            f"shape (B, D) = ({BATCH}, D): the pooled penultimate features"
        )


def _final_layer(ctx: DetectorContext) -> None:
    detector = ctx.detector
    path = detector.resolve_layer("final")
    captured: list[Any] = []
    handle = detector.module("final").register_forward_hook(
        lambda _m, _i, out: captured.append(out)
    )
    try:
        with torch.no_grad():
            fmap = detector.features(_normalized(ctx))
    finally:
        handle.remove()
    if not captured:
        raise CheckFailed(
            f"the 'final' layer {path!r} did not run in features(); point cam_layers['final'] "
            "at the module whose output features() returns"
        )
    out = captured[-1]
    if not (isinstance(out, torch.Tensor) and out.shape == fmap.shape and torch.equal(out, fmap)):
        raise CheckFailed(
            f"features() returns {describe(fmap)} but the 'final' layer {path!r} outputs "
            f"{describe(out)}; cam_layers['final'] must be the module whose output features() "
            "returns (Grad-CAM reads that activation)"
        )


def _forward(ctx: DetectorContext) -> None:
    detector = ctx.detector
    with torch.no_grad():
        x = _normalized(ctx)
        direct = detector(x)
        composed = detector.head(detector.features(x))[0]
    diff = max_difference(direct, composed)
    if diff > 1e-5:
        raise CheckFailed(
            f"detector(x) differs from head(features(x))[0] by {diff:.3g}; the engine predicts "
            "with head(features(x)), so forward() must compute exactly that"
        )


def _probabilities(ctx: DetectorContext) -> None:
    detector = ctx.detector
    try:
        probs = detector.predict_proba(ctx.batch)
    except NonFiniteOutputError as exc:
        raise CheckFailed(
            f"{exc}. P(fake) must be finite and in [0, 1]: head() must return the raw logit "
            "and no layer may produce NaN"
        ) from None
    if not (isinstance(probs, np.ndarray) and probs.shape == (BATCH,)):
        raise CheckFailed(f"predict_proba() returned {describe(probs)}; expected shape ({BATCH},)")
    if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise CheckFailed(
            f"P(fake) {probs.tolist()} must be finite and in [0, 1]; head() must return the "
            "raw logit (predict_proba applies the sigmoid), and no layer may produce NaN"
        )
    embeddings = detector.embed(ctx.batch)
    if embeddings.ndim != 2 or embeddings.shape[0] != BATCH or not np.isfinite(embeddings).all():
        raise CheckFailed(f"embed() returned {describe(embeddings)}; expected finite ({BATCH}, D)")


def _batch_consistency(ctx: DetectorContext) -> None:
    detector = ctx.detector
    together = detector.predict_proba(ctx.batch)
    alone = np.concatenate([detector.predict_proba(ctx.batch[i : i + 1]) for i in range(BATCH)])
    diff = float(np.abs(together - alone).max())
    if diff > BATCH_ATOL:
        raise CheckFailed(
            f"an image's P(fake) depends on the rest of its batch (max difference {diff:.3g} "
            f"> {BATCH_ATOL}); usually a BatchNorm in training mode or a layer that mixes images"
        )


def _input_types(ctx: DetectorContext) -> None:
    detector = ctx.detector
    array = ctx.batch[0].permute(1, 2, 0).numpy()
    image = Image.fromarray(array)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "face.png"
        image.save(path)
        probs = detector.predict_proba([image, str(path), array])
    if probs.shape != (3,):
        raise CheckFailed(f"predict_proba() of 3 images returned {describe(probs)}")
    spread = float(probs.max() - probs.min())
    if spread > INPUT_TYPES_ATOL:
        raise CheckFailed(
            f"one picture given as a PIL image, a path and an array got P(fake) {probs.tolist()}; "
            "decode inputs with Detector.prepare (deepfake_xai.images.load_image), not your own "
            "loader"
        )


def _deterministic(ctx: DetectorContext) -> None:
    detector = ctx.detector
    training = [name or "model" for name, m in detector.model.named_modules() if m.training]
    if training:
        raise CheckFailed(
            f"{len(training)} module(s) are in training mode (e.g. {training[0]!r}); "
            "Detector.__init__ calls model.eval(): do not switch it back in the factory"
        )
    first, second = detector.predict_proba(ctx.batch), detector.predict_proba(ctx.batch)
    if not np.array_equal(first, second):
        raise CheckFailed(
            f"two identical calls gave different P(fake) (max difference "
            f"{float(np.abs(first - second).max()):.3g}); inference must not be random"
        )


def _frozen(ctx: DetectorContext) -> None:
    trainable = [name for name, p in ctx.detector.model.named_parameters() if p.requires_grad]
    if trainable:
        raise CheckFailed(
            f"{len(trainable)} parameter(s) require grad after construction (e.g. "
            f"{trainable[0]!r}); Detector.__init__ freezes them, so do not unfreeze them in the "
            "factory: explanations take gradients with respect to activations only"
        )


def _cpu(ctx: DetectorContext) -> str | None:
    detector = ctx.detector
    if torch.device(ctx.device).type == "cpu":
        return "every check ran on the CPU"
    on_device = detector.predict_proba(ctx.batch)
    try:
        on_cpu = detector.to("cpu").predict_proba(ctx.batch)
    finally:
        detector.to(ctx.device)
    diff = float(np.abs(on_device - on_cpu).max())
    if diff > ENGINE_ATOL:
        raise CheckFailed(f"P(fake) on the CPU differs from {ctx.device} by {diff:.3g}")
    return None


# -- checkpoints ------------------------------------------------------------------------------
def _save_load(ctx: DetectorContext) -> None:
    detector = ctx.detector
    if detector.name not in DETECTORS:
        raise CheckSkipped(
            f"detector.name {detector.name!r} is not registered, so Detector.load cannot rebuild "
            "it; register the factory under that name to run this check"
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = detector.save(Path(tmp) / "detector")
        try:
            loaded = Detector.load(path, device=ctx.device)
        except CheckpointError as exc:
            raise CheckFailed(
                f"Detector.load could not rebuild the saved detector: {exc}"
            ) from None
    if type(loaded) is not type(detector) or loaded.name != detector.name:
        raise CheckFailed(
            f"Detector.load rebuilt a {type(loaded).__name__} named {loaded.name!r}, not a "
            f"{type(detector).__name__} named {detector.name!r}"
        )
    changed = [
        attr
        for attr in ("harmonization", "mean", "std", "cam_layers")
        if getattr(loaded, attr) != getattr(detector, attr)
    ]
    if changed:
        raise CheckFailed(f"the reloaded detector has a different {', '.join(changed)}")
    diff = float(np.abs(loaded.predict_proba(ctx.batch) - detector.predict_proba(ctx.batch)).max())
    if diff > SAVE_LOAD_ATOL:
        raise CheckFailed(
            f"the reloaded detector's P(fake) differs by {diff:.3g}; keep every weight in "
            "model.state_dict() (parameters or buffers) and build the same model for "
            "pretrained=False"
        )


# -- explanations -----------------------------------------------------------------------------
def _grad_cam(ctx: DetectorContext) -> None:
    detector = ctx.detector
    try:
        from ..engine import Engine
    except ImportError as exc:
        raise CheckSkipped(f"the engine is not available ({exc})") from None
    layers = tuple(detector.cam_layers)
    output = Engine([detector], method="gradcam", layers=layers, device=ctx.device).run(ctx.batch)
    result = output[detector.name]
    expected = detector.predict_proba(ctx.batch)
    diff = float(np.abs(result.probs - expected).max())
    if diff > ENGINE_ATOL:
        raise CheckFailed(
            f"the engine's P(fake) differs from predict_proba() by {diff:.3g}; the engine calls "
            "head(features(x)) on the normalised batch, so both must agree"
        )
    for layer in layers:
        _check_map(layer, detector.resolve_layer(layer), result.heatmaps.get(layer))


def _check_map(layer: str, path: str, maps: np.ndarray | None) -> None:
    if maps is None or maps.ndim != 3 or maps.shape[0] != BATCH:
        raise CheckFailed(
            f"Grad-CAM at {layer!r} ({path}) gave {describe(maps)}; expected (B, h, w)"
        )
    values = maps.astype(np.float32)
    if not np.isfinite(values).all():
        raise CheckFailed(f"Grad-CAM at {layer!r} ({path}) is not finite")
    if values.min() < -MAP_TOLERANCE or values.max() > 1 + MAP_TOLERANCE:
        raise CheckFailed(
            f"Grad-CAM at {layer!r} ({path}) spans [{values.min():.3g}, {values.max():.3g}]; "
            "expected [0, 1]"
        )


def _hooks(ctx: DetectorContext) -> None:
    require_no_new_hooks(ctx.detector.model, ctx.hooks_before, "explaining")


CHECKS: tuple[Check, ...] = (
    Check("factory", _factory),
    Check("returns a Detector", _returns_detector, ("factory",)),
    Check("name", _name, ("returns a Detector",)),
    Check("labels", _labels, ("returns a Detector",)),
    Check("preprocessing", _preprocessing, ("returns a Detector",)),
    Check("cam layers", _cam_layers, ("returns a Detector",)),
    Check("features and head", _features_and_head, ("preprocessing",)),
    Check("final layer", _final_layer, ("cam layers", "features and head")),
    Check("forward", _forward, ("features and head",)),
    Check("probabilities", _probabilities, ("features and head",)),
    Check("batch consistency", _batch_consistency, ("probabilities",)),
    Check("input types", _input_types, ("probabilities",)),
    Check("eval determinism", _deterministic, ("probabilities",)),
    Check("frozen parameters", _frozen, ("returns a Detector",)),
    Check("cpu", _cpu, ("probabilities",)),
    Check("save/load", _save_load, ("probabilities",)),
    Check("grad-cam", _grad_cam, ("final layer", "probabilities")),
    Check("hooks removed", _hooks, ("final layer", "probabilities")),
)

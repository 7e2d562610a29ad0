"""``check_explainer``: does an explainer factory honour the plugin contract?

Attribution explainers are built once per detector (``factory(detector, **kwargs)``, as the
engine does) and must return ``dict[str, Heatmaps]`` for every target; projection explainers
are built with ``random_state`` (``factory(random_state=0, **kwargs)``) and must be
reproducible with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..detectors import Detector
from ..explainers.base import TARGETS, Heatmaps, Projection
from ..registry import EXPLAINERS
from .common import describe, hook_counts, require_no_new_hooks, require_signature, start_report
from .report import Check, CheckFailed, CheckReport, run_checks

KINDS = ("attribution", "projection")
BATCH = 3
DEFAULT_DETECTOR = "mobilenetv2_100"
DEFAULT_IMAGE_SIZE = 48
MAP_TOLERANCE = 1e-3
PROJECTION_POINTS = 60
FEW_POINTS = 4


@dataclass
class ExplainerContext:
    """What the checks share: the factory, its options, and what the checks built."""

    factory: Callable[..., Any]
    kwargs: dict[str, Any]
    detector: Detector | None
    explainer: Any = None
    hooks_before: dict[str, int] = field(default_factory=dict)

    @property
    def kind(self) -> str | None:
        return getattr(self.factory, "kind", None)


def check_explainer(
    factory_or_name: str | Callable[..., Any],
    *,
    detector: Detector | None = None,
    **kwargs: Any,
) -> CheckReport:
    """Run every explainer check and return the report.

    ``detector`` is what attribution explainers explain (default: a small random-weight
    MobileNetV2 at 48 px); ``kwargs`` go to the factory (e.g. ``n_steps=8`` to stay fast).
    """
    report, _, factory = start_report(EXPLAINERS, factory_or_name)
    if factory is None:
        return report
    context = ExplainerContext(factory, kwargs, detector)
    run_checks(report, (Check("kind", _kind),), context)
    if report.passed:
        checks = ATTRIBUTION_CHECKS if context.kind == "attribution" else PROJECTION_CHECKS
        run_checks(report, checks, context)
    return report


def _kind(ctx: ExplainerContext) -> None:
    if ctx.kind not in KINDS:
        raise CheckFailed(
            f"the factory's kind is {ctx.kind!r}; expected one of {KINDS}: subclass "
            "deepfake_xai.explainers.AttributionExplainer or ProjectionExplainer"
        )


# -- attribution ------------------------------------------------------------------------------
def _default_detector() -> Detector:
    from ..api import load_detector

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return load_detector(DEFAULT_DETECTOR, image_size=DEFAULT_IMAGE_SIZE, device="cpu")


def _build_attribution(ctx: ExplainerContext) -> None:
    ctx.detector = ctx.detector or _default_detector()
    require_signature(
        ctx.factory,
        (ctx.detector,),
        ctx.kwargs,
        "an attribution explainer is built as factory(detector, **options)",
    )
    ctx.explainer = ctx.factory(ctx.detector, **ctx.kwargs)
    if not callable(getattr(ctx.explainer, "attribute", None)):
        raise CheckFailed(
            f"the factory returned a {type(ctx.explainer).__name__} without an attribute() "
            "method; subclass deepfake_xai.explainers.AttributionExplainer"
        )
    ctx.hooks_before = hook_counts(ctx.detector.model)


def _inputs(ctx: ExplainerContext, n: int) -> torch.Tensor:
    size = ctx.detector.input_size
    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)
    return ctx.detector.normalize(batch)


def _layers(ctx: ExplainerContext) -> tuple[str, ...]:
    if getattr(ctx.explainer, "uses_layers", False) and "mid" in ctx.detector.cam_layers:
        return ("final", "mid")
    return ("final",)


def _expected_targets(ctx: ExplainerContext, x: torch.Tensor, target: str) -> torch.Tensor:
    if target == "predicted":
        with torch.no_grad():
            return (ctx.detector(x) > 0).long().cpu()
    return torch.full((len(x),), int(target == "fake"), dtype=torch.long)


def _heatmaps_for(target: str, n: int = BATCH) -> Callable[[ExplainerContext], None]:
    def check(ctx: ExplainerContext) -> None:
        x = _inputs(ctx, n)
        layers = _layers(ctx)
        out = ctx.explainer.attribute(x, target=target, layers=layers)
        _validate(ctx, out, n, layers, _expected_targets(ctx, x, target))

    return check


def _validate(
    ctx: ExplainerContext,
    out: Any,
    n: int,
    layers: tuple[str, ...],
    targets: torch.Tensor,
) -> None:
    if not (isinstance(out, dict) and out and all(isinstance(h, Heatmaps) for h in out.values())):
        raise CheckFailed(
            f"attribute() returned {describe(out)}; expected a non-empty dict[str, Heatmaps] "
            "(layer name, or 'input' for input-resolution methods, -> Heatmaps)"
        )
    if getattr(ctx.explainer, "uses_layers", False) and set(out) != set(layers):
        raise CheckFailed(
            f"asked for layers {list(layers)} but got {sorted(out)}; an explainer with "
            "uses_layers = True returns one Heatmaps per requested layer, keyed as asked"
        )
    for key, heatmaps in out.items():
        _validate_maps(key, heatmaps, n, targets)


def _validate_maps(key: str, heatmaps: Heatmaps, n: int, targets: torch.Tensor) -> None:
    maps = heatmaps.maps
    if not (isinstance(maps, torch.Tensor) and maps.ndim == 3 and maps.shape[0] == n):
        raise CheckFailed(
            f"Heatmaps[{key!r}].maps is {describe(maps)}; expected (N, h, w) = ({n}, h, w)"
        )
    values = maps.detach().float()
    if not torch.isfinite(values).all():
        raise CheckFailed(f"Heatmaps[{key!r}].maps has NaN or inf; use normalize_maps()")
    low, high = float(values.min()), float(values.max())
    if low < -MAP_TOLERANCE or high > 1 + MAP_TOLERANCE:
        raise CheckFailed(
            f"Heatmaps[{key!r}].maps spans [{low:.3g}, {high:.3g}]; expected [0, 1] per image "
            "(use deepfake_xai.explainers.normalize_maps)"
        )
    got = torch.as_tensor(heatmaps.targets).detach().cpu().long().reshape(-1)
    if not torch.equal(got, targets):
        raise CheckFailed(
            f"Heatmaps[{key!r}].targets is {got.tolist()}; expected {targets.tolist()} "
            "(1 = fake; use deepfake_xai.explainers.resolve_targets(target, logits))"
        )


def _hooks(ctx: ExplainerContext) -> None:
    require_no_new_hooks(ctx.detector.model, ctx.hooks_before, "attribute()")


ATTRIBUTION_CHECKS: tuple[Check, ...] = (
    Check("builds", _build_attribution),
    *(Check(f"heatmaps ({t})", _heatmaps_for(t), ("builds",)) for t in TARGETS),
    Check("batch of 1", _heatmaps_for("fake", n=1), ("builds",)),
    Check("hooks removed", _hooks, ("builds",)),
)


# -- projection -------------------------------------------------------------------------------
def _embeddings(n: int) -> np.ndarray:
    """Two well-separated Gaussian blobs in 16-D, as float32."""
    rng = np.random.default_rng(0)
    centres = np.repeat(np.eye(2, 16, dtype=np.float32) * 6, (n + 1) // 2, axis=0)[:n]
    return (centres + rng.standard_normal((n, 16)).astype(np.float32)).astype(np.float32)


def _project(ctx: ExplainerContext, n: int) -> np.ndarray:
    explainer = ctx.factory(random_state=0, **ctx.kwargs)
    projection = explainer.fit_transform(_embeddings(n))
    if not isinstance(projection, Projection):
        raise CheckFailed(
            f"fit_transform() returned {describe(projection)}; expected a "
            "deepfake_xai.explainers.Projection"
        )
    coords = np.asarray(projection.coords)
    if coords.shape != (n, 2) or not np.isfinite(coords).all():
        raise CheckFailed(
            f"Projection.coords is {describe(coords)}; expected ({n}, 2) finite values"
        )
    return coords


def _build_projection(ctx: ExplainerContext) -> None:
    require_signature(
        ctx.factory,
        (),
        {"random_state": 0, **ctx.kwargs},
        "a projection explainer is built as factory(random_state=0, **options): accept a "
        "random_state seed",
    )
    ctx.explainer = ctx.factory(random_state=0, **ctx.kwargs)
    if not callable(getattr(ctx.explainer, "fit_transform", None)):
        raise CheckFailed(
            f"the factory returned a {type(ctx.explainer).__name__} without fit_transform(); "
            "subclass deepfake_xai.explainers.ProjectionExplainer"
        )


def _projection(ctx: ExplainerContext) -> None:
    _project(ctx, PROJECTION_POINTS)


def _deterministic(ctx: ExplainerContext) -> None:
    first, second = _project(ctx, PROJECTION_POINTS), _project(ctx, PROJECTION_POINTS)
    if not np.allclose(first, second, atol=1e-5):
        diff = float(np.abs(first - second).max())
        raise CheckFailed(
            f"two runs with random_state=0 differ by up to {diff:.3g}; pass the seed to every "
            "random step (initialisation, sampling, the nearest-neighbour search)"
        )


def _few_points(ctx: ExplainerContext) -> None:
    _project(ctx, FEW_POINTS)


PROJECTION_CHECKS: tuple[Check, ...] = (
    Check("builds", _build_projection),
    Check("projection", _projection, ("builds",)),
    Check("deterministic with a seed", _deterministic, ("projection",)),
    Check(f"few points ({FEW_POINTS})", _few_points, ("builds",)),
)

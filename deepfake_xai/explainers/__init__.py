"""Explainers: attribution maps per image and projections of embeddings (registered here)."""

from . import attribution, gradcam, projection
from .base import (
    TARGETS,
    AttributionExplainer,
    Heatmaps,
    Projection,
    ProjectionExplainer,
    normalize_maps,
    resolve_targets,
    signed_logit,
)

__all__ = [
    "TARGETS",
    "AttributionExplainer",
    "Heatmaps",
    "Projection",
    "ProjectionExplainer",
    "attribution",
    "gradcam",
    "normalize_maps",
    "projection",
    "resolve_targets",
    "signed_logit",
]

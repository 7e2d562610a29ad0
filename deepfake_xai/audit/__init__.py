"""Dataset bias audit: does anything but the face tell real from fake?

:func:`audit_dataset` extracts per-image file, encoding, pixel-statistic, framing and file-name
features, compares the classes, and scores how well a classifier that never sees the face
predicts the label (the *shortcut score*). :func:`harmonize_dataset` writes a copy in which both
classes are decoded, cropped, resized and encoded alike, which removes most such shortcuts.
"""

from __future__ import annotations

from .dataset import audit_dataset
from .features import FEATURES, estimate_jpeg_quality, extract_features
from .harmonize import harmonize_dataset
from .report import AuditReport
from .shortcut import LEAK_THRESHOLD, ShortcutScore, shortcut_score

__all__ = [
    "FEATURES",
    "LEAK_THRESHOLD",
    "AuditReport",
    "ShortcutScore",
    "audit_dataset",
    "estimate_jpeg_quality",
    "extract_features",
    "harmonize_dataset",
    "shortcut_score",
]

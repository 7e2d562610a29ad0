"""Top-level helpers over the registries."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .registry import DETECTORS, EXPLAINERS


def list_detectors() -> list[str]:
    """Names of every registered detector, built-in and plugin."""
    return DETECTORS.names()


def list_explainers(kind: str | None = None) -> list[str]:
    """Names of registered explainers, optionally only one ``kind`` (attribution, projection)."""
    return [
        e.name
        for e in EXPLAINERS.entries()
        if kind is None or getattr(e.factory, "kind", None) == kind
    ]


def explain(detector: Any, images: Any, *args: Any, **kwargs: Any) -> Any:
    """:func:`deepfake_xai.engine.explain` for images; for one video file (a path named like
    one), :func:`deepfake_xai.video_analysis.explain_video`: per-frame verdicts and heatmaps,
    tracks and one verdict for the video (keyword ``sampling=`` picks the frames)."""
    from .video import is_video_path

    if isinstance(images, (str, os.PathLike)) and is_video_path(images):
        from .video_analysis import explain_video

        return explain_video(detector, images, *args, **kwargs)
    from .engine import explain as explain_images

    return explain_images(detector, images, *args, **kwargs)


def is_checkpoint_reference(value: str | os.PathLike) -> bool:
    """True for ``hf-hub:`` ids and existing files or folders (as opposed to registry names)."""
    text = os.fspath(value)
    return text.startswith("hf-hub:") or text.endswith(".safetensors") or Path(text).exists()


def load_detector(name_or_checkpoint: Any, /, **kwargs: Any):
    """A :class:`Detector` from a checkpoint path, an ``hf-hub:`` id, a shipped detector
    (``"default"``: the shipped EfficientNet-B0, trained on real faces), a registry name, or as is.

    Keyword arguments go to the detector factory (``pretrained``, ``pretrained_file``,
    ``image_size``, ``device``...) or to :meth:`Detector.load` for checkpoints. A registry name
    gives a detector that was never trained on faces: an ``UntrainedDetectorWarning`` says so.
    """
    from .detectors import Detector, warn_if_untrained
    from .detectors.shipped import shipped_checkpoint

    if isinstance(name_or_checkpoint, Detector):
        return name_or_checkpoint
    if is_checkpoint_reference(name_or_checkpoint):
        return Detector.load(name_or_checkpoint, **kwargs)
    shipped = shipped_checkpoint(name_or_checkpoint)
    if shipped is not None:
        return Detector.load(shipped, **kwargs)
    detector = DETECTORS.create(name_or_checkpoint, **kwargs)
    warn_if_untrained(detector)
    return detector

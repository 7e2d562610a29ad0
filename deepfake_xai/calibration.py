"""Fit a checkpoint's reliability statistics from labelled faces and store them inside it.

``train`` calls :func:`calibrate` on every ``best.safetensors``; ``deepfake-xai calibrate``
does it for any checkpoint (a plugin's, one trained elsewhere), so the ``uncertain`` outcome
works for every detector. The statistics come from up to ``images_per_class`` training faces
per class and are thresholded on the validation faces (see :mod:`deepfake_xai.reliability`); the
input limits come from the degradations the detector was trained with.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch

from .data import (
    Augmentation,
    ImageDataset,
    Sample,
    as_samples,
    complete_splits,
    make_loader,
    subsample,
)
from .degradations import Degradations
from .detectors import Detector
from .detectors.checkpoint import store_reliability
from .face_index import FaceIndex
from .reliability import Reliability, fit_detector

Log = Callable[[str], object]


def calibrate(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike | Sequence[Sample],
    *,
    method: str = "mahalanobis",
    faces: bool | FaceIndex = True,
    images_per_class: int = 1000,
    degradations: Degradations | None = None,
    out: str | os.PathLike | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    seed: int = 0,
    device: str | torch.device = "auto",
    log: Log = print,
) -> Reliability:
    """Fit reliability statistics for ``checkpoint`` and write it back (or to ``out``).

    ``data`` is anything :func:`deepfake_xai.data.discover` accepts, or samples; its train split
    fits the statistics and its val split sets the threshold (missing splits are made as
    ``train`` makes them). ``faces=True`` finds and frames faces as ``analyze`` does (a
    :class:`FaceIndex` may be passed instead); ``degradations`` are those the detector was
    trained with (None: none): the training faces are degraded alike before fitting, so the
    statistics describe what the detector learnt from, and they set the smallest face and the
    lowest JPEG quality it can judge.
    """
    samples = [s for s in as_samples(data) if s.label is not None]
    samples = complete_splits(samples, seed=seed, log=log)
    detector = Detector.load(checkpoint, device=device)
    if faces is True:
        faces = FaceIndex.build([s.path for s in samples], workers=max(1, num_workers), log=log)
    index = faces or None
    if index is not None:
        samples = [s for s in samples if index.box(s.path) is not None]
    train = subsample([s for s in samples if s.split == "train"], images_per_class, seed=seed)
    val = [s for s in samples if s.split == "val"]
    if not train or not val:
        raise ValueError("calibration needs labelled train and val images")
    # Statistics of the faces as the detector saw them in training: degraded alike, if it was.
    seen = Augmentation((1.0, 1.0), False, 0.0, 0.0, degradations) if degradations else None
    train_loader, val_loader = (
        make_loader(
            ImageDataset(part, detector.harmonization, augment=augment, faces=index),
            batch_size,
            num_workers=num_workers,
            seed=seed,
        )
        for part, augment in ((train, seen), (val, None))
    )
    lowest_scale = degradations.scale[0] if degradations else 1.0
    fitted = fit_detector(
        detector,
        ((images, targets) for images, targets, _ in train_loader),
        (images for images, _, _ in val_loader),
        layers=[layer for layer in ("mid",) if layer in detector.cam_layers],
        method=method,
        min_face_side=round(detector.input_size * lowest_scale),
        min_jpeg_quality=degradations.jpeg_quality[0] if degradations else None,
        fitted_on={"faces_framed": index is not None},
    )
    store_reliability(checkpoint, fitted, out)
    log(
        f"{detector.name}: reliability fitted ({fitted.method}, layers {list(fitted.layers)}, "
        f"{fitted.fitted_on['n_train']} training and {fitted.fitted_on['n_val']} validation faces)"
    )
    return fitted

"""Streaming decode for ``analyze``: each image decoded once, harmonised once per Harmonization.

DataLoader workers decode through :func:`deepfake_xai.images.load_image` (JPEG draft mode for
large files) and harmonise the image for every distinct :class:`Harmonization` among the
detectors. Unreadable images travel along as (index, reason) instead of stopping the run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..images import ImageLoadError, load_image
from ..preprocessing import Harmonization, to_uint8_tensor
from .inputs import Inputs

Decoded = tuple[int, tuple[torch.Tensor, ...] | None, str | None, str]
"""(index, one uint8 (3, S, S) tensor per harmonization or None, label, failure reason)."""


def default_workers() -> int:
    """``min(4, cpu count)`` decoding workers."""
    return min(4, os.cpu_count() or 1)


def draft_size(harmonizations: Sequence[Harmonization]) -> tuple[int, int] | None:
    """JPEG draft size: twice the largest input side (as in training); off for face crops."""
    if any(h.face_crop for h in harmonizations):
        return None
    side = 2 * max(h.image_size for h in harmonizations)
    return side, side


class DecodedImages(Dataset):
    """Images ``indices`` of ``inputs``, each decoded once and harmonised per Harmonization."""

    def __init__(
        self, inputs: Inputs, indices: Sequence[int], harmonizations: Sequence[Harmonization]
    ):
        if not harmonizations:
            raise ValueError("DecodedImages needs at least one Harmonization")
        self.inputs = inputs
        self.indices = list(indices)
        self.harmonizations = list(harmonizations)
        self.draft = draft_size(self.harmonizations)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> Decoded:
        index = self.indices[position]
        source, label = self.inputs.source(index)
        try:
            image = load_image(source, draft_size=self.draft, name=self.inputs.paths[index])
        except ImageLoadError as exc:
            return index, None, label, exc.reason
        tensors = tuple(to_uint8_tensor(h.apply(image)) for h in self.harmonizations)
        return index, tensors, label, ""


@dataclass
class Batch:
    """Decoded images of one batch (one uint8 ``(B, 3, S, S)`` per harmonization) + failures."""

    indices: np.ndarray
    images: list[torch.Tensor]
    labels: dict[int, str | None]
    failures: list[tuple[int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.indices) + len(self.failures)

    def pin_memory(self) -> Batch:
        """Called by the DataLoader with ``pin_memory=True`` (CUDA)."""
        self.images = [image.pin_memory() for image in self.images]
        return self


def collate(items: Sequence[Decoded]) -> Batch:
    """Stack the decoded items; failed ones are kept as (index, reason)."""
    good = [item for item in items if item[1] is not None]
    stacks = zip(*(item[1] for item in good), strict=True)
    images = [torch.stack(stack) for stack in stacks] if good else []
    return Batch(
        indices=np.array([item[0] for item in good], dtype=np.int64),
        images=images,
        labels={item[0]: item[2] for item in items},
        failures=[(item[0], item[3]) for item in items if item[1] is None],
    )


def make_loader(
    dataset: DecodedImages, batch_size: int, num_workers: int, pin_memory: bool
) -> DataLoader:
    """An ordered DataLoader of :class:`Batch` objects."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers else None,
    )

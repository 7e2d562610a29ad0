"""Streaming decode for the local backend: DataLoader workers run the :class:`Decoder`.

Each image is decoded once (and checked for a face) in a worker; the collated
:class:`DecodedBlock` carries the tensors of the good images and the status and reason of the
others, so an unreadable file never stops the run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial

from torch.utils.data import DataLoader, Dataset

from ..paths import path_to_text
from .block import DecodedBlock
from .decode import DecodedImage, Decoder
from .inputs import Inputs


def default_workers() -> int:
    """``min(4, cpu count)`` decoding workers."""
    return min(4, os.cpu_count() or 1)


class DecodedImages(Dataset):
    """Images ``indices`` of ``inputs``, each through ``decoder``."""

    def __init__(self, inputs: Inputs, indices: Sequence[int], decoder: Decoder):
        self.inputs = inputs
        self.indices = list(indices)
        self.decoder = decoder

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> DecodedImage:
        index = self.indices[position]
        source, label = self.inputs.source(index)
        return self.decoder(index, source, path_to_text(self.inputs.paths[index]), label)


def make_loader(
    dataset: DecodedImages, batch_size: int, num_workers: int, pin_memory: bool
) -> DataLoader:
    """An ordered DataLoader of :class:`DecodedBlock` objects."""
    slots = len(dataset.decoder.harmonizations)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=partial(DecodedBlock.from_images, slots=slots),
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers else None,
    )

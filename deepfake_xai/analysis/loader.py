"""Streaming decode for the local backend: DataLoader workers run the :class:`Decoder`.

Each image is decoded once (and checked for a face) in a worker, each video's sampled frames
likewise (its rows stay together in one block); the collated
:class:`DecodedBlock` carries the tensors of the good images and the status and reason of the
others, so an unreadable file never stops the run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial

from torch.utils.data import DataLoader, Dataset

from ..paths import path_to_text
from ..video import is_video_path
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

    def __getitem__(self, position: int) -> list[DecodedImage]:
        index = self.indices[position]
        source, label = self.inputs.source(index)
        return self.decoder.decode(index, source, path_to_text(self.inputs.paths[index]), label)

    def weight(self, position: int) -> int:
        """Rows the item gives (about): 1 for an image, its sampled frames for a video."""
        index = self.indices[position]
        if self.inputs.dataset is None and is_video_path(self.inputs.paths[index]):
            return self.decoder.sampled_frames(self.inputs.paths[index])
        return 1


def blocks(dataset: DecodedImages, batch_size: int) -> list[list[int]]:
    """Positions in consecutive blocks of about ``batch_size`` rows at most (a video counts as
    its sampled frames, and is never split: a block holds whole inputs, so a run resumes by
    input). Full blocks matter: the engine's time per block grows slowly with its size."""
    out: list[list[int]] = [[]]
    rows = 0
    for position in range(len(dataset)):
        weight = dataset.weight(position)
        if out[-1] and rows + weight > batch_size:
            out.append([])
            rows = 0
        out[-1].append(position)
        rows += weight
    return [block for block in out if block]


def collate(items: Sequence[list[DecodedImage]], slots: int) -> DecodedBlock:
    """One :class:`DecodedBlock` of every item's rows, in order."""
    return DecodedBlock.from_images([row for item in items for row in item], slots=slots)


def make_loader(
    dataset: DecodedImages, plan: list[list[int]], num_workers: int, pin_memory: bool
) -> DataLoader:
    """An ordered DataLoader of :class:`DecodedBlock` objects, one per block of ``plan``
    (see :func:`blocks`)."""
    slots = len(dataset.decoder.harmonizations)
    return DataLoader(
        dataset,
        batch_sampler=plan,
        num_workers=num_workers,
        collate_fn=partial(collate, slots=slots),
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers else None,
    )

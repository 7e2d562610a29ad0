"""Streaming decode for the local backend: workers run the :class:`Decoder`.

Each image is decoded once (and checked for a face) in a worker, each video's sampled frames
likewise (its rows stay together in one block); the collated
:class:`DecodedBlock` carries the tensors of the good images and the status and reason of the
others, so an unreadable file never stops the run.

Where the engines run on the CPU the workers are threads of this process: the engine and the
decoding share the same cores anyway, and forked DataLoader workers cost a start-up per call
and make the engine's first block pay a copy of every heap page it reuses (0.8 s instead of
0.3 s for a block of 32 faces here; 64 shared faces ran 1.3-1.6x faster with threads, 320 at
the same rate; ``benchmarks/README.md``, "Analyze end to end"). The decoding releases the GIL
in its heavy parts (JPEG decoding, OpenCV's networks, tensor conversion). On an accelerator,
where the decoding must keep up with the device, the workers are DataLoader processes.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from itertools import islice

import torch
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


PREFETCH = 4
"""Blocks each worker decodes ahead of the engine."""


def make_loader(
    dataset: DecodedImages, plan: list[list[int]], num_workers: int, device: torch.device
) -> Iterable[DecodedBlock]:
    """The :class:`DecodedBlock` of each block of ``plan`` (see :func:`blocks`), in order:
    decoded by ``num_workers`` threads (none: in the caller's thread) for engines on the CPU,
    by DataLoader processes for engines on an accelerator ``device``."""
    if device.type == "cpu":
        return decode_in_threads(dataset, plan, num_workers)
    return decode_in_processes(dataset, plan, num_workers, pin_memory=device.type == "cuda")


def decode_in_processes(
    dataset: DecodedImages, plan: list[list[int]], workers: int, pin_memory: bool = False
) -> DataLoader:
    """The blocks of ``plan`` decoded by ``workers`` DataLoader processes, in order."""
    return DataLoader(
        dataset,
        batch_sampler=plan,
        num_workers=workers,
        collate_fn=partial(collate, slots=len(dataset.decoder.harmonizations)),
        pin_memory=pin_memory,
        prefetch_factor=PREFETCH if workers else None,
    )


def decode_in_threads(
    dataset: DecodedImages, plan: list[list[int]], workers: int
) -> Iterator[DecodedBlock]:
    """The blocks of ``plan`` decoded by ``workers`` threads, at most ``PREFETCH`` blocks per
    thread ahead of the caller, in order; with no workers, each when asked for. The threads
    take the images one by one, in order, so all of them work on the next block: the first
    one is ready, and the engine starts, in a fraction of the time one thread takes for it."""
    slots = len(dataset.decoder.harmonizations)
    if workers == 0:
        yield from (collate([dataset[position] for position in block], slots) for block in plan)
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="decode")

    def submit(block: list[int]) -> list[Future]:
        return [pool.submit(dataset.__getitem__, position) for position in block]

    todo = iter(plan)
    try:
        waiting = deque(submit(block) for block in islice(todo, workers * PREFETCH))
        while waiting:
            items = [future.result() for future in waiting.popleft()]
            waiting.extend(submit(block) for block in islice(todo, 1))  # one in
            yield collate(items, slots)
    finally:  # also when the caller stops early: nothing more starts
        pool.shutdown(wait=True, cancel_futures=True)

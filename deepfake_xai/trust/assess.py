"""The one pass behind ``evaluate --robustness --explanations``: decode once, then per batch
perturb, harmonise, predict and explain on the device for every detector and explainer.

Per batch of decoded images, every photometric perturbation level is applied once and shared by
all detectors (each then harmonises it its own way); predictions at every level (through the
engine, with the distance score of a detector that has reliability statistics) feed the
robustness curves. On the explanation subset (a balanced, seeded sample of at most
``explain_images`` images) each explainer's map of the clean image is compared with its map of
every perturbed, shifted or flipped copy (stability), scored by deletion and insertion against a
random map (faithfulness), and compared with its maps on randomised copies of the detector
(sanity). Heatmaps explain the class the detector predicts on the clean image, for every copy.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data import LoadFailure, Sample
from ..detectors import Detector
from ..engine import Engine
from ..explainers.base import AttributionExplainer, heatmap_layers
from ..explainers.faithfulness import perturbation_curve, resize_maps
from ..images import ImageLoadError, load_image
from ..preprocessing import Harmonization, to_uint8_tensor
from ..registry import EXPLAINERS
from .harmonize import harmonize_batch
from .perturbations import Perturbation, parse_perturbations, split_kinds, uniform_noise
from .sanity import STAGES, CascadeStage, cascade, randomised_copies
from .similarity import rank_correlation, to_grid, top_overlap

CLEAN = Perturbation("clean")
PHASES = ("decode", "perturb", "predict", "explain", "faithfulness", "sanity")
_RANDOM_MAP_SALT = 3


@dataclass
class TrustSettings:
    """What to measure: predictions at every level of ``perturbations`` (the robustness curves,
    reported when ``robustness``) and, with ``explainers``, stability at those levels,
    faithfulness and sanity on the explanation subset."""

    perturbations: list[Perturbation] = field(default_factory=lambda: parse_perturbations(None))
    robustness: bool = True
    explainers: Sequence[str] = ()
    layers: Sequence[str] = ("final",)
    explain_images: int = 64
    seed: int = 0
    steps: int = 16
    baseline: str = "blur"
    sanity_stages: int = STAGES
    batch_size: int = 32
    num_workers: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        for key in ("explain_images", "steps", "sanity_stages", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        self.explainers = [EXPLAINERS.entry(name).name for name in dict.fromkeys(self.explainers)]
        for name in self.explainers:
            if getattr(EXPLAINERS.get(name), "kind", None) != "attribution":
                raise ValueError(f"{name!r} is not an attribution explainer (heatmaps per image)")


@dataclass
class Measurements:
    """Raw per-image measurements, keyed by detector (and explainer, layer, level)."""

    predictions: dict = field(default_factory=lambda: defaultdict(list))
    stability: dict = field(default_factory=lambda: defaultdict(list))
    curves: dict = field(default_factory=lambda: defaultdict(list))
    sanity: dict = field(default_factory=lambda: defaultdict(list))
    seconds: dict = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    errors: dict = field(default_factory=dict)
    stages: dict[str, list[CascadeStage]] = field(default_factory=dict)
    explained: int = 0


@dataclass
class _Explained:
    """One detector's explainers: on the intact detector, and on each randomised copy."""

    detector: Detector
    explainers: dict[str, AttributionExplainer]
    randomised: list[tuple[CascadeStage, dict[str, AttributionExplainer]]]


def assess(
    detectors: Sequence[Detector], names: Sequence[str], samples: Sequence[Sample], settings
) -> Measurements:
    """Run every measurement of ``settings`` over labelled ``samples`` in one decoding pass."""
    return _Assessment(list(detectors), list(names), list(samples), settings).run()


class _Assessment:
    def __init__(self, detectors, names, samples, settings: TrustSettings):
        self.detectors = dict(zip(names, detectors, strict=True))
        self.samples = samples
        self.settings = settings
        self.device = detectors[0].device
        self.photometric, self.geometric = split_kinds(settings.perturbations)
        self.channels_last = self.device.type in ("cpu", "cuda")
        if self.channels_last:  # measured 1.2-1.8x faster for these convnets (DESIGN.md)
            for detector in detectors:
                detector.use_channels_last()
        self.groups: dict[Harmonization, list[str]] = defaultdict(list)
        for name, detector in self.detectors.items():
            self.groups[detector.harmonization].append(name)
        # One engine each: two detectors of one name (from two runs) may be compared.
        self.engines = {
            name: Engine(
                [detector],
                method=None,
                device=self.device,
                amp=False,
                channels_last=self.channels_last,
            )
            for name, detector in self.detectors.items()
        }
        targets = np.array([s.target for s in samples], dtype=np.int64)
        self.explain = _balanced_subset(targets, settings.explain_images, settings.seed)
        self.measured = Measurements()
        self.explained = self._build_explainers() if settings.explainers else {}

    def _build_explainers(self) -> dict[str, _Explained]:
        out = {}
        for name, detector in self.detectors.items():
            stages = cascade(detector, self.settings.sanity_stages)
            self.measured.stages[name] = stages
            copies = randomised_copies(detector, stages, self.settings.seed)
            out[name] = _Explained(
                detector,
                self._explainers(detector),
                [(stage, self._explainers(copy)) for stage, copy in copies],
            )
        return out

    def _explainers(self, detector: Detector) -> dict[str, AttributionExplainer]:
        return {e: EXPLAINERS.get(e)(detector) for e in self.settings.explainers}

    def run(self) -> Measurements:
        loader = self._loader()
        batches: Iterator = iter(loader)
        if self.settings.progress:
            from tqdm.auto import tqdm

            batches = iter(tqdm(loader, desc="robustness and explanations", unit="batch"))
        while True:
            with self._timed("decode"):
                batch = next(batches, None)
            if batch is None:
                break
            images, targets, indices, failures = batch
            for failure in failures:
                self.measured.errors[str(failure.path)] = failure.reason
            for same_shape in _by_shape(images):
                self._batch(
                    torch.stack([images[i] for i in same_shape]).to(self.device),
                    torch.tensor([targets[i] for i in same_shape]),
                    torch.tensor([indices[i] for i in same_shape]),
                )
        return self.measured

    # -- one batch --------------------------------------------------------------------------
    def _batch(self, images: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> None:
        keys = indices.to(self.device)
        subset = torch.from_numpy(np.isin(indices.numpy(), self.explain))
        levels = [CLEAN, *self.photometric]
        inputs: dict[tuple[str, str], torch.Tensor] = {}
        logits: dict[tuple[str, str], torch.Tensor] = {}
        distances: dict[tuple[str, str], np.ndarray] = {}
        with torch.no_grad():
            for level in levels:
                with self._timed("perturb"):
                    perturbed = level.apply(images, keys, self.settings.seed)
                    harmonised = {h: harmonize_batch(perturbed, h) for h in self.groups}
                for harmonization, names in self.groups.items():
                    for name in names:
                        with self._timed("predict"):
                            batch = harmonised[harmonization]
                            outputs = self.engines[name].run(batch, check_finite=False)
                            output = outputs[self.detectors[name].name]
                        logits[name, level.label] = torch.from_numpy(output.logits).to(self.device)
                        distances[name, level.label] = (
                            np.full(len(batch), np.nan)
                            if output.ood_scores is None
                            else output.ood_scores
                        )
                        if subset.any() and self.explained:
                            inputs[name, level.label] = batch[subset.cpu()]
        for name in self.detectors:
            clean = logits[name, CLEAN.label]
            for level in levels:
                logit = logits[name, level.label]
                self.measured.predictions[name, level.label].append(
                    (
                        indices.numpy(),
                        targets.numpy(),
                        torch.sigmoid(logit).cpu().numpy(),
                        ((logit > 0) != (clean > 0)).cpu().numpy(),
                        distances[name, level.label],
                    )
                )
        if subset.any() and self.explained:
            self.measured.explained += int(subset.sum())
            for name in self.detectors:
                predicted = (logits[name, CLEAN.label][subset.to(self.device)] > 0).long()
                self._explain(name, inputs, predicted, keys[subset.to(self.device)])

    def _explain(self, name: str, inputs: dict, targets: torch.Tensor, keys: torch.Tensor) -> None:
        explained = self.explained[name]
        detector = explained.detector
        x = self._input(detector, inputs[name, CLEAN.label])
        random_curves: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
        for explainer_name, explainer in explained.explainers.items():
            with self._timed("explain"):
                clean_maps = self._maps(explainer, x, targets)
            for layer, maps in clean_maps.items():
                key = (name, explainer_name, layer)
                shape = tuple(maps.shape[-2:])
                with self._timed("faithfulness"):
                    if shape not in random_curves:
                        noise = uniform_noise(
                            keys, shape, self.settings.seed, self.device, _RANDOM_MAP_SALT
                        )
                        random_curves[shape] = self._curves(detector, x, noise, targets)
                    self.measured.curves[key].append(
                        (*self._curves(detector, x, maps, targets), *random_curves[shape])
                    )
            self._stability(name, explainer_name, explainer, inputs, x, clean_maps, targets)
            with self._timed("sanity"):
                for stage, copies in explained.randomised:
                    randomised_maps = self._maps(copies[explainer_name], x, targets)
                    for layer, maps in clean_maps.items():
                        a, b = to_grid(maps), to_grid(randomised_maps[layer])
                        self.measured.sanity[name, explainer_name, layer, stage.index].append(
                            _similarities(a, b)
                        )

    def _stability(self, name, explainer_name, explainer, inputs, x, clean_maps, targets) -> None:
        detector = self.detectors[name]
        size = tuple(x.shape[-2:])
        for level in self.photometric:
            with self._timed("explain"):
                maps = self._maps(
                    explainer, self._input(detector, inputs[name, level.label]), targets
                )
            for layer, clean in clean_maps.items():
                self.measured.stability[name, explainer_name, layer, level.label].append(
                    _similarities(to_grid(clean), to_grid(maps[layer]))
                )
        for level in self.geometric:
            with self._timed("explain"):
                maps = self._maps(explainer, level.transform(x), targets)
            for layer, clean in clean_maps.items():
                clean, moved = level.align(
                    resize_maps(maps[layer], size, x.device), resize_maps(clean, size, x.device)
                )
                self.measured.stability[name, explainer_name, layer, level.label].append(
                    _similarities(to_grid(clean), to_grid(moved))
                )

    def _input(self, detector: Detector, images: torch.Tensor) -> torch.Tensor:
        """A harmonised uint8 batch as the detector's normalised input."""
        x = detector.normalize(images)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _maps(
        self, explainer: AttributionExplainer, x: torch.Tensor, targets: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        layers = heatmap_layers(explainer, self.settings.layers)
        return {k: h.maps.float() for k, h in explainer.attribute(x, targets, layers).items()}

    def _curves(self, detector, x, maps, targets) -> tuple[np.ndarray, np.ndarray]:
        kwargs = dict(
            steps=self.settings.steps,
            baseline=self.settings.baseline,
            batch_size=self.settings.batch_size,
        )
        return tuple(
            perturbation_curve(detector, x, maps, targets, mode=mode, **kwargs)
            for mode in ("deletion", "insertion")
        )

    # -- plumbing ---------------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        sizes = [d.input_size for d in self.detectors.values()]
        face_crop = any(h.face_crop for h in self.groups)
        draft = None if face_crop else (2 * max(sizes), 2 * max(sizes))
        return DataLoader(
            _DecodedImages(self.samples, draft),
            batch_size=self.settings.batch_size,
            num_workers=self.settings.num_workers,
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
        )

    @contextmanager
    def _timed(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.measured.seconds[phase] += time.perf_counter() - start


class _DecodedImages(Dataset):
    """Decoded images at their own size (no harmonisation): ``(uint8 (3, H, W), target, index)``."""

    def __init__(self, samples: Sequence[Sample], draft: tuple[int, int] | None):
        self.samples = list(samples)
        self.draft = draft

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        try:
            image = load_image(sample.path, draft_size=self.draft)
        except ImageLoadError as exc:
            return LoadFailure(index, Path(sample.path), exc.reason)
        return to_uint8_tensor(image), sample.target, index


def _collate(items):
    good = [item for item in items if not isinstance(item, LoadFailure)]
    failures = [item for item in items if isinstance(item, LoadFailure)]
    images, targets, indices = (
        (list(column) for column in zip(*good, strict=True)) if good else ([], [], [])
    )
    return images, targets, indices, failures


def _by_shape(images: list[torch.Tensor]) -> list[list[int]]:
    """Positions of the images grouped by shape, so each group is one tensor batch."""
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, image in enumerate(images):
        groups[tuple(image.shape)].append(i)
    return list(groups.values())


def _similarities(a: torch.Tensor, b: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    return rank_correlation(a, b).cpu().numpy(), top_overlap(a, b).cpu().numpy()


def _balanced_subset(targets: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` indices, half per class where possible, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    by_class = [rng.permutation(np.flatnonzero(targets == c)) for c in (0, 1)]
    half = n // 2
    take = [min(len(by_class[0]), max(half, n - len(by_class[1])))]
    take.append(min(len(by_class[1]), n - take[0]))
    return np.sort(np.concatenate([by_class[c][: take[c]] for c in (0, 1)]))

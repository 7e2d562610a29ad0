"""Training: fine-tune detectors on one shared split, with early stopping and checkpoints.

Every detector of a run trains on the same split, written to ``OUT/split.csv`` and reused by
later runs into the same folder. Per detector, ``OUT/<name>/`` receives ``best.safetensors``
(best validation epoch), ``last.safetensors`` plus ``last.state.safetensors`` (optimizer and
scheduler state, so ``resume`` continues exactly where it stopped), and ``metrics.csv`` /
``metrics.json`` (one row per epoch). The loss is BCE on the single logit (positive = fake);
augmentations run on uint8 tensors in the Dataset, normalisation on the device.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .calibration import calibrate
from .data import (
    SELF_BLEND,
    SPLITS,
    Augmentation,
    ImageDataset,
    SafeLoader,
    Sample,
    as_samples,
    complete_splits,
    describe_data,
    fingerprint,
    leaks,
    make_loader,
    read_manifest,
    split_counts,
    subsample,
    write_manifest,
)
from .degradations import degradations_for
from .detectors import Detector, PretrainedWeightsUnavailable, resolve_device
from .distillation import Distillation
from .evaluation import autocast, predict_logits
from .face_index import FaceIndex
from .metrics import classification_metrics
from .preprocessing import Harmonization
from .registry import DETECTORS
from .reliability import METHODS

OPTIMIZERS = ("adam", "adamw")
SCHEDULERS = ("cosine", "none")
MONITORS = ("loss", "f1")
PRETRAINED_LR = 1e-4
SCRATCH_LR = 1e-3
STATE_SUFFIX = ".state.safetensors"
# Metadata that describes what a checkpoint's weights measured (cards, test and robustness
# figures): dropped when training continues from it, since the weights change.
RESULTS_OF_THE_WEIGHTS = ("model_card", "test_metrics", "test_files", "robustness", "evaluation")
AUTOENCODER = "autoencoder"  # the group (and run sub-folder) of autoencoder reconstructions

Log = Callable[[str], Any]
_BATCHNORMS = (
    torch.nn.BatchNorm1d,
    torch.nn.BatchNorm2d,
    torch.nn.BatchNorm3d,
    torch.nn.SyncBatchNorm,
)


@dataclass
class TrainConfig:
    """How to train. The defaults follow the research notebook (Adam, batch 32, 224 px, 5 epochs).

    ``lr=None`` picks 1e-4 when pretrained weights were loaded and 1e-3 from scratch.
    ``monitor`` chooses the best epoch and drives early stopping (``patience`` epochs without
    improvement). ``degrade`` is the probability of each everyday degradation (blur, rescale,
    JPEG; :class:`~deepfake_xai.degradations.Degradations`) at train time, for both classes;
    ``degrade_chain`` that of a messaging app's chain (shrink, JPEG at the small size, enlarge).
    ``faces`` finds each image's face once and frames it as ``analyze`` does (images without a
    face are left out). ``self_blend`` adds self-blended pseudo-fakes (needs ``faces``), as a
    share of the real training images, redrawn every epoch. ``autoencoder`` adds reconstructions
    of that share of real training images through a diffusion model's tiny autoencoder (weights
    in ``autoencoder_weights`` or ``$DEEPFAKE_XAI_TAEF2``), made once into ``OUT/autoencoder``.
    ``balance`` samples real and fake
    equally often whatever their counts. ``face_crop``, ``jpeg_quality``, ``resize`` and ``fit``
    set the :class:`Harmonization` stored with the detector. ``amp``/``channels_last`` ``None``
    means on for CUDA. ``limit_per_class`` trains on a random subset; ``max_train_batches`` cuts
    epochs short (for tests and smoke runs). After each epoch, BatchNorm statistics are
    re-estimated on up to ``precise_bn_images`` un-augmented training images (0: off): the
    running averages lag behind fast-changing weights, which early in training (from scratch
    above all) makes the eval-mode model far worse than the train-mode one. ``reliability``
    (``"mahalanobis"``, ``"knn"`` or None) fits the statistics that flag unfamiliar inputs
    (:mod:`deepfake_xai.reliability`) into ``best.safetensors`` after training, from up to
    ``reliability_images`` training images per class and the validation images. ``teacher``
    (a checkpoint or shipped detector) distils a trained detector into this one
    (:mod:`deepfake_xai.distillation`): ``distill`` is the weight of its soft P(fake),
    ``distill_features`` that of matching its penultimate embedding.
    """

    epochs: int = 5
    batch_size: int = 32
    lr: float | None = None
    weight_decay: float = 0.0
    optimizer: str = "adam"
    scheduler: str = "cosine"
    patience: int = 3
    monitor: str = "loss"
    image_size: int = 224
    pretrained: bool = True
    pretrained_files: dict[str, str] = field(default_factory=dict)
    augment: bool = True
    degrade: float = 0.0
    degrade_chain: float = 0.0
    faces: bool = False
    self_blend: float = 0.0
    autoencoder: float = 0.0
    autoencoder_weights: str | None = None
    balance: bool = False
    face_crop: bool = False
    jpeg_quality: int | None = None
    resize: str = "bicubic"
    fit: str = "center_crop"
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    limit_per_class: int | None = None
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    amp: bool | None = None
    channels_last: bool | None = None
    max_train_batches: int | None = None
    precise_bn_images: int = 512
    reliability: str | None = "mahalanobis"
    reliability_images: int = 1000
    teacher: str | None = None
    distill: float = 0.5
    distill_features: float = 0.0

    def __post_init__(self) -> None:
        for name, allowed in (
            ("optimizer", OPTIMIZERS),
            ("scheduler", SCHEDULERS),
            ("monitor", MONITORS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.precise_bn_images < 0:
            raise ValueError(f"precise_bn_images must be >= 0, got {self.precise_bn_images}")
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        for name in ("degrade", "degrade_chain"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {getattr(self, name)}")
        for name in ("self_blend", "autoencoder"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.reliability not in (None, *METHODS):
            raise ValueError(f"reliability must be one of {METHODS} or None")
        if self.self_blend and not self.faces:
            raise ValueError("self_blend needs faces=True: the face's landmarks place the blend")
        self.ratios = tuple(float(r) for r in self.ratios)
        self.harmonization()

    def harmonization(self) -> Harmonization:
        """The preprocessing every image gets, in training and later in use."""
        return Harmonization(
            image_size=self.image_size,
            resize=self.resize,
            fit=self.fit,
            face_crop=self.face_crop,
            jpeg_quality=self.jpeg_quality,
        )

    def augmentation(self) -> Augmentation | None:
        """The train-time augmentation, or None when ``augment`` is off."""
        if not self.augment:
            return None
        return Augmentation(degradations=degradations_for(self.degrade, self.degrade_chain))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """What training one detector produced."""

    detector: str
    checkpoint: Path
    history: list[dict[str, Any]]
    best: dict[str, Any]
    seconds: float

    @property
    def best_epoch(self) -> int:
        return int(self.best.get("epoch", 0))


def train(
    data: str | os.PathLike | Sequence[Sample],
    detectors: Sequence[str],
    out: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    resume: str | os.PathLike | None = None,
    progress: bool = True,
    log: Log = print,
) -> dict[str, TrainResult]:
    """Train each detector on the same split of ``data`` and write its checkpoints to ``out``.

    ``data`` is anything :func:`deepfake_xai.data.discover` accepts, or a list of samples.
    Missing splits are filled in (see :func:`prepare_split`). ``resume`` is a checkpoint (its
    detector is trained further; ``detectors`` may then be empty) or an earlier ``out`` folder
    (each detector continues from its ``last.safetensors``). With the ``.state.safetensors``
    sidecar, optimizer, scheduler and epoch count are restored too; without it, only weights.
    """
    config = config or TrainConfig()
    out = Path(out)
    plan = _resume_plan(list(detectors), resume)
    for name in plan:
        DETECTORS.entry(name)
    samples = prepare_split(data, out, config, log=log)
    faces = None
    if config.faces:
        paths = [s.path for s in samples]
        workers = max(1, config.num_workers)
        faces = FaceIndex.build(paths, out / "faces.csv", workers=workers, log=log)
        samples = [s for s in samples if faces.box(s.path) is not None]
    if config.autoencoder:
        fakes, copies = reconstructed(
            samples,
            config.autoencoder,
            out / AUTOENCODER,
            config.autoencoder_weights,
            config.seed,
            log,
        )
        faces = faces.with_copies(copies) if faces is not None else None
        samples = samples + fakes
    samples += self_blended(samples, config.self_blend, config.seed)
    trained_on = describe_data(data)
    return {
        name: _Trainer(name, samples, out / name, config, checkpoint, trained_on, log, faces).run(
            progress
        )
        for name, checkpoint in plan.items()
    }


def real_training_picks(samples: Sequence[Sample], share: float, seed: int = 0) -> list[Sample]:
    """``share`` x the real training images, drawn at random (each at most once while there
    are enough): the sources of pseudo-fakes."""
    reals = sorted(s for s in samples if s.split == "train" and s.label == "real")
    count = round(share * len(reals))
    if not count:
        return []
    rng = np.random.default_rng(seed)
    picks = np.concatenate([rng.permutation(len(reals)) for _ in range(-(-count // len(reals)))])
    return [reals[i] for i in picks[:count]]


def self_blended(samples: Sequence[Sample], share: float, seed: int = 0) -> list[Sample]:
    """Self-blended pseudo-fakes of ``share`` x the real training images, labelled fake, group
    ``self_blend``; each is blended anew every epoch."""
    picks = real_training_picks(samples, share, seed)
    return [replace(s, label="fake", group=SELF_BLEND, make=SELF_BLEND) for s in picks]


def reconstructed(
    samples: Sequence[Sample],
    share: float,
    folder: Path,
    weights: str | os.PathLike | None,
    seed: int = 0,
    log: Log = print,
) -> tuple[list[Sample], dict[Path, Path]]:
    """Autoencoder reconstructions of ``share`` x the real training images (a different draw
    from the self-blended ones), written once into ``folder`` as PNG, labelled fake, group
    ``autoencoder``; and reconstruction -> source, for their face boxes (same geometry)."""
    from .pseudofakes.autoencoder import load_tiny_autoencoder, output_name, reconstruct_folder

    picks = real_training_picks(samples, share, seed + 1)
    if not picks:
        return [], {}
    sources = list(dict.fromkeys(s.path for s in picks))
    todo = sum(not (folder / output_name(p)).is_file() for p in sources)
    if todo:
        log(f"reconstructing {todo} real training images with the tiny autoencoder")
    _, failures = reconstruct_folder(sources, folder, load_tiny_autoencoder(weights))
    failed = {Path(source) for source, _ in failures}
    copies = {folder / output_name(p): p for p in sources if p not in failed}
    fakes = [Sample(path, "fake", "train", AUTOENCODER) for path in copies]
    return fakes, copies


def prepare_split(
    data: str | os.PathLike | Sequence[Sample],
    out: str | os.PathLike,
    config: TrainConfig,
    *,
    log: Log = print,
) -> list[Sample]:
    """The labelled samples with train/val/test assigned, saved as (or reused from) OUT/split.csv.

    Unsplit images are split ``config.ratios`` per label; a dataset with train and val but no
    test (such as the faces-140k sample) gets its test split carved out of train, and one
    without val likewise, so val stays the validation set and test is never seen in training.
    """
    samples = as_samples(data)
    unlabelled = sum(s.label is None for s in samples)
    if unlabelled:
        log(f"ignoring {unlabelled} images without a real/fake label")
    samples = [s for s in samples if s.label is not None]
    if config.limit_per_class:
        samples = subsample(samples, config.limit_per_class, seed=config.seed)
    path = Path(out) / "split.csv"
    if path.exists():
        previous = read_manifest(path)
        if {(s.path, s.label) for s in previous} != {(s.path, s.label) for s in samples}:
            raise ValueError(
                f"{path} was written for other data ({len(previous)} images, now {len(samples)}); "
                "use another --out folder or delete it"
            )
        log(f"reusing the split in {path}")
        _check_split(previous, log)
        return previous
    samples = complete_splits(samples, config.ratios, config.seed, log)
    _check_split(samples, log)
    write_manifest(samples, path)
    log(f"split written to {path}")
    return samples


def _check_split(samples: list[Sample], log: Log) -> None:
    counts = split_counts(samples)
    log("split: " + "; ".join(f"{k} {v}" for k, v in counts.items()))
    for split in ("train", "val"):
        labels = counts.get(split, {})
        if not (labels.get("real") and labels.get("fake")):
            raise ValueError(f"the {split} split needs real and fake images, it has {labels or 0}")
    leaked = leaks(samples)
    if leaked:
        shown = ", ".join(
            f"{a.path.name} ({a.split}) = {b.path.name} ({b.split})" for a, b in leaked[:3]
        )
        log(f"warning: {len(leaked)} identical images sit in different splits: {shown}")


def _resume_plan(detectors: list[str], resume: str | os.PathLike | None) -> dict[str, Path | None]:
    """Detector name -> checkpoint to continue from (None: start fresh)."""
    if resume is None:
        if not detectors:
            raise ValueError("name at least one detector to train")
        return dict.fromkeys(detectors)
    resume = Path(resume)
    if resume.is_dir():
        if not detectors:
            raise ValueError(f"{resume}: name the detectors to resume from this folder")
        plan = {name: resume / name / "last.safetensors" for name in detectors}
        missing = [str(p) for p in plan.values() if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"nothing to resume from: {', '.join(missing)} not found")
        return plan
    from .detectors.checkpoint import read_metadata

    name = read_metadata(resume)["detector"]
    if detectors and list(detectors) != [name]:
        raise ValueError(f"{resume} holds {name!r}; it cannot resume {list(detectors)}")
    return {name: resume}


class _Trainer:
    """Trains one detector: model, optimizer, scheduler, loaders and the epoch loop."""

    def __init__(
        self,
        name: str,
        samples: list[Sample],
        folder: Path,
        config: TrainConfig,
        resume: Path | None,
        trained_on: str,
        log: Log,
        faces: FaceIndex | None = None,
    ):
        self.name, self.folder, self.config, self.log = name, folder, config, log
        self.faces = faces
        self.samples, self.resume, self.trained_on = samples, resume, trained_on
        self.device = resolve_device(config.device)
        cuda = self.device.type == "cuda"
        self.amp = cuda if config.amp is None else config.amp
        self.channels_last = cuda if config.channels_last is None else config.channels_last
        self.detector, self.pretrained = self._build()
        self.lr = config.lr or (PRETRAINED_LR if self.pretrained else SCRATCH_LR)
        self._prepare_model()
        params = [p for p in self.detector.model.parameters() if p.requires_grad]
        opt = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
        self.optimizer = opt(params, lr=self.lr, weight_decay=config.weight_decay)
        self.scheduler = (
            torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._cosine)
            if config.scheduler == "cosine"
            else None
        )
        use_scaler = self.amp and cuda and not torch.cuda.is_bf16_supported()
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.loss_fn = torch.nn.BCEWithLogitsLoss()
        self.distillation = self._distillation()
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {}
        self.stale_epochs = 0
        self.elapsed = 0.0

    def _cosine(self, epoch: int) -> float:
        """The learning-rate factor of a cosine decay over ``config.epochs`` (closed form, so a
        resumed run with more epochs follows the longer schedule)."""
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch, self.config.epochs) / self.config.epochs))

    # -- setup ----------------------------------------------------------------------------
    def _build(self) -> tuple[Detector, bool]:
        """The detector to train and whether it starts from pretrained weights."""
        config, name = self.config, self.name
        if self.resume is not None:
            detector = Detector.load(self.resume, device="cpu")
            if detector.harmonization != config.harmonization():
                self.log(f"{name}: keeping the checkpoint's preprocessing {detector.harmonization}")
            self.log(f"{name}: resuming from {self.resume}")
            detector.reliability = None  # the weights will change: refitted after training
            for stale in RESULTS_OF_THE_WEIGHTS:  # measured on the old weights: not these
                detector.metadata.pop(stale, None)
            return detector, bool(detector.metadata.get("pretrained"))
        if name in config.pretrained_files:
            detector, pretrained = self._create(pretrained_file=config.pretrained_files[name]), True
        elif config.pretrained:
            detector, pretrained = self._create_pretrained(), True
        else:
            detector, pretrained = self._create(pretrained=False), False
        detector.harmonization = config.harmonization()
        _init_head(detector)
        return detector, pretrained and bool(detector.metadata.get("pretrained", True))

    def _create_pretrained(self) -> Detector:
        """Pretrained weights if they can be had quickly, else a random init (logged)."""
        try:
            return self._create(pretrained=True)
        except PretrainedWeightsUnavailable as exc:
            self.log(f"no pretrained weights for {self.name} ({exc}); training from scratch")
        return self._create(pretrained=False)

    def _create(self, **kwargs: Any) -> Detector:
        _seed_everything(self.config.seed)
        return DETECTORS.create(self.name, device="cpu", **kwargs)

    def _distillation(self) -> Distillation | None:
        """The teacher's part of the loss, when the config names a teacher."""
        config = self.config
        if config.teacher is None:
            return None
        from .api import load_detector

        teacher = load_detector(config.teacher, device=self.device)
        distillation = Distillation(teacher, soft=config.distill, features=config.distill_features)
        distillation.check_student(self.detector)
        self.detector.metadata["distillation"] = distillation.describe()
        self.log(f"{self.name}: distilling {teacher.name} ({teacher.fingerprint})")
        return distillation

    def _prepare_model(self) -> None:
        self.detector.to(self.device)
        self.detector.model.requires_grad_(True)
        if self.channels_last:
            self.detector.model.to(memory_format=torch.channels_last)

    def _loaders(self) -> tuple[SafeLoader, SafeLoader | None, SafeLoader]:
        config, harm = self.config, self.detector.harmonization
        by_split = {s: [x for x in self.samples if x.split == s] for s in SPLITS}
        train = make_loader(
            ImageDataset(by_split["train"], harm, augment=config.augmentation(), faces=self.faces),
            config.batch_size,
            shuffle=True,
            num_workers=config.num_workers,
            seed=config.seed,
            drop_last=len(by_split["train"]) > config.batch_size,
            balance=config.balance,
        )
        plain = {
            name: make_loader(
                ImageDataset(by_split[name], harm, faces=self.faces),
                config.batch_size,
                shuffle=name == "train",
                num_workers=config.num_workers,
                seed=config.seed,
            )
            for name in ("train", "val")
        }
        return train, plain["train"] if config.precise_bn_images else None, plain["val"]

    # -- loop -----------------------------------------------------------------------------
    def run(self, progress: bool) -> TrainResult:
        first = self._restore() + 1 if self.resume is not None else 1
        if first > self.config.epochs:
            raise ValueError(
                f"{self.resume} already ran {first - 1} epochs; set epochs above {first - 1}"
            )
        train_loader, calibration_loader, val_loader = self._loaders()
        for epoch in range(first, self.config.epochs + 1):
            if self._epoch(epoch, train_loader, calibration_loader, val_loader, progress):
                break
        for path, reason in train_loader.errors + val_loader.errors:
            self.log(f"skipped unreadable image {path}: {reason}")
        self.detector.model.eval().requires_grad_(False)
        if self.config.reliability:
            self._fit_reliability(self.folder / "best.safetensors")
        return TrainResult(
            self.name, self.folder / "best.safetensors", self.history, self.best, self.elapsed
        )

    def _epoch(
        self,
        epoch: int,
        train_loader: SafeLoader,
        calibration_loader: SafeLoader | None,
        val_loader: SafeLoader,
        progress: bool,
    ) -> bool:
        """Train, re-estimate BatchNorm, validate and checkpoint; True when it is time to stop."""
        start = time.perf_counter()
        train_loss = self._train_epoch(train_loader, epoch, progress)
        if calibration_loader is not None:
            self._recalibrate_batchnorm(calibration_loader, epoch)
        val = self._validate(val_loader)
        lr = self.optimizer.param_groups[0]["lr"]
        if self.scheduler is not None:
            self.scheduler.step()
        self.elapsed += time.perf_counter() - start
        improved = self._improved(val)
        if improved:
            self.best = {"epoch": epoch, **val}
        self.stale_epochs = 0 if improved else self.stale_epochs + 1
        row = self._record(epoch, train_loss, val, lr, time.perf_counter() - start)
        n_errors = len(train_loader.errors)
        if improved:
            self._save("best.safetensors", n_errors, epoch)
        self._save("last.safetensors", n_errors, epoch)
        save_train_state(
            self.folder / f"last{STATE_SUFFIX}",
            self.optimizer,
            self.scheduler,
            self._progress(epoch),
        )
        self.log(_epoch_line(self.name, row, improved))
        if self.stale_epochs >= self.config.patience:
            self.log(f"{self.name}: early stop, no improvement for {self.stale_epochs} epochs")
            return True
        return False

    def _train_epoch(self, loader: SafeLoader, epoch: int, progress: bool) -> float:
        from tqdm.auto import tqdm

        torch.manual_seed(self.config.seed + epoch)
        loader.set_epoch(epoch)
        model, limit = self.detector.model, self.config.max_train_batches
        model.train()
        total, count = 0.0, 0
        total_batches = min(len(loader), limit) if limit else len(loader)
        show = progress and sys.stderr.isatty()
        bar = tqdm(
            loader,
            total=total_batches,
            disable=not show,
            leave=False,
            desc=f"{self.name} {epoch}/{self.config.epochs}",
            unit="batch",
        )
        for step, (images, targets, _) in enumerate(bar):
            if limit and step >= limit:
                break
            loss = self._step(images, targets)
            total += loss * len(targets)
            count += len(targets)
            bar.set_postfix(loss=f"{total / count:.4f}")
        bar.close()
        return total / count if count else math.nan

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        x = self.detector.normalize(images)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _step(self, images: torch.Tensor, targets: torch.Tensor) -> float:
        x = self._input(images)
        y = targets.to(self.device, non_blocking=True)
        with autocast(self.device, self.amp):
            logits, embedding = self.detector.head(self.detector.features(x))
        if self.distillation is None:
            loss = self.loss_fn(logits.float(), y)
        else:
            loss = self.distillation.loss(logits.float(), embedding, y, images)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())

    def _recalibrate_batchnorm(self, loader: SafeLoader, epoch: int) -> None:
        """Re-estimate BatchNorm running statistics with this epoch's final weights."""
        loader.set_epoch(epoch)
        limit = math.ceil(self.config.precise_bn_images / self.config.batch_size)
        inputs = (self._input(images) for images, _, _ in itertools.islice(loader, limit))
        with autocast(self.device, self.amp):
            reestimate_batchnorm(self.detector, inputs)

    def _fit_reliability(self, path: Path) -> None:
        """Fit the reliability statistics of the checkpoint at ``path`` and store them in it."""
        config = self.config
        calibrate(
            path,
            [s for s in self.samples if s.make is None],
            method=config.reliability,
            faces=self.faces,
            images_per_class=config.reliability_images,
            degradations=config.augmentation().degradations if config.augment else None,
            batch_size=config.batch_size,
            num_workers=config.num_workers,
            seed=config.seed,
            device=self.device,
            log=self.log,
        )

    def _validate(self, loader: SafeLoader) -> dict[str, Any]:
        logits, targets, _ = predict_logits(
            [self.detector], loader, amp=self.amp, channels_last=self.channels_last
        )
        scores = torch.from_numpy(logits[id(self.detector)]).double()
        y = torch.from_numpy(targets).double()
        loss = float(torch.nn.functional.binary_cross_entropy_with_logits(scores, y))
        return {"loss": loss, **classification_metrics(y.numpy(), torch.sigmoid(scores).numpy())}

    def _improved(self, val: dict[str, Any]) -> bool:
        if not self.best:
            return True
        if self.config.monitor == "loss":
            return val["loss"] < self.best["loss"]
        return val["f1"] > self.best["f1"]

    def _record(
        self, epoch: int, train_loss: float, val: dict, lr: float, seconds: float
    ) -> dict[str, Any]:
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            **{
                f"val_{k}": val[k]
                for k in ("loss", "accuracy", "precision", "recall", "f1", "roc_auc", "eer", "ece")
            },
            "lr": lr,
            "seconds": seconds,
        }
        self.history.append(row)
        _write_history(self.folder, self.name, self.history, self.best)
        return row

    # -- checkpoints ----------------------------------------------------------------------
    def _save(self, filename: str, n_errors: int, epoch: int) -> Path:
        training = {
            **self.config.to_dict(),
            "lr": self.lr,
            "pretrained_init": self.pretrained,
            "epochs_run": epoch,
            "best_epoch": self.best.get("epoch"),
            "fingerprint": fingerprint(self.samples),
            "split_file": str((self.folder.parent / "split.csv").resolve()),
            "n_per_split": split_counts(self.samples),
            "unreadable_images": n_errors,
            "seconds": round(self.elapsed, 2),
            "device": str(self.device),
            "resumed_from": str(self.resume) if self.resume else None,
        }
        metrics = {k: v for k, v in self.best.items() if k != "epoch"}
        return self.detector.save(
            self.folder / filename, training=training, metrics=metrics, trained_on=self.trained_on
        )

    def _progress(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "history": self.history,
            "best": self.best,
            "stale_epochs": self.stale_epochs,
            "elapsed": self.elapsed,
            "lr": self.lr,
        }

    def _restore(self) -> int:
        """Load the optimizer/scheduler sidecar of the resumed checkpoint; the last epoch run."""
        sidecar = state_path(self.resume)
        if not sidecar.is_file():
            self.log(f"{self.name}: no {sidecar.name}; weights only, fresh optimizer from epoch 1")
            return 0
        progress = load_train_state(sidecar, self.optimizer, self.scheduler)
        earlier_best = self.resume.parent / "best.safetensors"
        if not (self.folder / "best.safetensors").exists() and earlier_best.is_file():
            self.folder.mkdir(parents=True, exist_ok=True)
            shutil.copy2(earlier_best, self.folder / "best.safetensors")
        if self.scheduler is not None:
            factor = self._cosine(self.scheduler.last_epoch)
            for group, base in zip(
                self.optimizer.param_groups, self.scheduler.base_lrs, strict=True
            ):
                group["lr"] = base * factor
        self.history, self.best = progress["history"], progress["best"]
        self.stale_epochs, self.elapsed = progress["stale_epochs"], progress["elapsed"]
        self.lr = progress["lr"]
        return int(progress["epoch"])


# -- optimizer state sidecar -----------------------------------------------------------------
def reestimate_batchnorm(detector: Detector, inputs: Iterable[torch.Tensor]) -> None:
    """Replace the BatchNorm running statistics of ``detector`` by their plain average over the
    normalised ``inputs`` (train-mode forward passes, no gradients); the model is left in train
    mode. Running averages lag behind fast-changing or freshly cut weights."""
    norms = [m for m in detector.model.modules() if isinstance(m, _BATCHNORMS)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches below
    detector.model.train()
    with torch.no_grad():
        for x in inputs:
            detector(x)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum


def state_path(checkpoint: str | os.PathLike) -> Path:
    """``last.safetensors`` -> ``last.state.safetensors``."""
    path = Path(checkpoint)
    return path.with_name(path.name.removesuffix(".safetensors") + STATE_SUFFIX)


def save_train_state(
    path: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
    progress: dict[str, Any],
) -> Path:
    """Optimizer tensors as safetensors; param groups, scheduler and ``progress`` as JSON."""
    state = optimizer.state_dict()
    tensors = {
        f"{index}.{key}": value.detach().cpu().contiguous()
        for index, entries in state["state"].items()
        for key, value in entries.items()
    }
    meta = {
        "param_groups": json.dumps(state["param_groups"]),
        "scheduler": json.dumps(scheduler.state_dict() if scheduler is not None else None),
        "progress": json.dumps(progress, default=_json_default),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def load_train_state(
    path: Path, optimizer: torch.optim.Optimizer, scheduler: Any | None
) -> dict[str, Any]:
    """Restore what :func:`save_train_state` wrote; returns the ``progress`` dict."""
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
        entries: dict[int, dict[str, torch.Tensor]] = {}
        for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
            index, name = key.split(".", 1)
            entries.setdefault(int(index), {})[name] = handle.get_tensor(key)
    groups = json.loads(meta["param_groups"])
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": entries, "param_groups": groups})
    scheduler_state = json.loads(meta["scheduler"])
    if scheduler is not None and scheduler_state is not None:
        scheduler.load_state_dict(scheduler_state)
    return json.loads(meta["progress"])


def _init_head(detector: Detector) -> None:
    """Give a fresh one-logit classifier small weights (N(0, 0.01), zero bias).

    timm initialises a new head uniformly in +-1/sqrt(fan_out), which is +-1 for one output:
    initial logits of tens and a BCE of 5+ that takes epochs to recover from. Small weights
    start every detector at P(fake) ~ 0.5.
    """
    get_classifier = getattr(detector.model, "get_classifier", None)
    head = get_classifier() if callable(get_classifier) else None
    if isinstance(head, torch.nn.Linear):
        torch.nn.init.normal_(head.weight, std=0.01)
        if head.bias is not None:
            torch.nn.init.zeros_(head.bias)


# -- helpers ---------------------------------------------------------------------------------
def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _write_history(folder: Path, name: str, history: list[dict], best: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".metrics.csv.tmp"
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, folder / "metrics.csv")
    payload = {"detector": name, "history": history, "best": best}
    tmp = folder / ".metrics.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2, default=_json_default))
    os.replace(tmp, folder / "metrics.json")


def _epoch_line(name: str, row: dict[str, Any], improved: bool) -> str:
    auc = row["val_roc_auc"]
    return (
        f"{name} epoch {row['epoch']}: train loss {row['train_loss']:.4f}, "
        f"val loss {row['val_loss']:.4f}, acc {row['val_accuracy']:.3f}, f1 {row['val_f1']:.3f}, "
        f"auc {'-' if auc is None else f'{auc:.3f}'} ({row['seconds']:.1f} s)"
        + (" *best*" if improved else "")
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

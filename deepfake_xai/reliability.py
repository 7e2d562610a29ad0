"""Is a face like the faces a detector learnt from? A reliability signal that is not the logit.

A detector's confidence says nothing about whether it knows the kind of image before it: on a
generator or a photo source it never saw it stays high, and wrong. Distances in its feature
space move more. Per layer (the pooled penultimate ``embedding`` and a mid-level block, pooled
to the mean and standard deviation of each channel) this fits, on training faces, either the
class means with one shared Ledoit-Wolf covariance (a Mahalanobis distance, Lee et al. 2018) or
a bank of normalised features (the distance to the k-th nearest, Sun et al. 2022). Each
layer's distance is divided by its median on validation faces, the layers are combined by their
maximum, and the result is divided by the value that flags ``flag_rate`` (5 %) of the
validation faces: an **ood_score** of 1 or more means "unlike the faces this detector learnt
from". Two input checks join it: a face smaller, or a JPEG compressed harder, than anything seen
in training.

The fitted statistics travel inside the checkpoint (tensors under :data:`TENSOR_PREFIX`, the
settings in the metadata's ``reliability`` block), so every front door gives the same
three-way verdict (:func:`decide`): ``fake``, ``real`` or ``uncertain``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from .detectors import Detector
    from .faces import FaceBox

VERDICTS = ("fake", "real", "uncertain")
UNCERTAIN = "uncertain"
EMBEDDING = "embedding"  # the pooled penultimate features, as the detector's head returns them
METHODS = ("mahalanobis", "knn")
TENSOR_PREFIX = "__reliability__."
PACKED = "precision_upper"  # a half-precision precision matrix, stored as its upper triangle
THRESHOLD = 0.5  # P(fake) at or above which a reliable verdict is "fake"


def pooled(activation: torch.Tensor) -> torch.Tensor:
    """A ``(B, C, h, w)`` activation as ``(B, 2C)``: each channel's spatial mean and std."""
    flat = activation.float().flatten(2)
    return torch.cat([flat.mean(-1), flat.std(-1, unbiased=False)], dim=1)


@dataclass
class LayerStatistics:
    """What one layer's features looked like in training, and the distance to it."""

    method: str
    scale: float = 1.0  # the validation median of the raw distance
    means: torch.Tensor | None = None  # (classes, D), Mahalanobis
    precision: torch.Tensor | None = None  # (D, D), Mahalanobis
    bank: torch.Tensor | None = None  # (N, D) unit vectors, kNN
    k: int = 10

    @classmethod
    def fit(
        cls, features: np.ndarray, labels: np.ndarray, method: str, k: int = 10
    ) -> LayerStatistics:
        """Fit on training ``features`` (N, D) with their 0/1 ``labels``."""
        features = np.asarray(features, dtype=np.float64)
        if method == "knn":
            bank = torch.from_numpy(_unit(features)).float()
            return cls(method, bank=bank, k=min(k, len(features)))
        from sklearn.covariance import LedoitWolf

        classes = sorted(set(np.asarray(labels).tolist()))
        means = np.stack([features[labels == c].mean(0) for c in classes])
        centred = features - means[np.searchsorted(classes, labels)]
        precision = LedoitWolf(assume_centered=True).fit(centred).precision_
        return cls(
            method,
            means=torch.from_numpy(means).float(),
            precision=torch.from_numpy(precision).float(),
        )

    def distance(self, features: torch.Tensor) -> torch.Tensor:
        """The raw distance of each row of ``features`` (N, D) to the training features."""
        x = features.float()
        if self.method == "knn":
            unit = torch.nn.functional.normalize(x, dim=1)
            similarity = unit @ self.bank.to(x.device, x.dtype).T
            kth = similarity.topk(min(self.k, similarity.shape[1]), dim=1).values[:, -1]
            return (1.0 - kth).clamp_min(0.0)
        diff = x[:, None, :] - self.means.to(x.device, x.dtype)[None]
        precision = self.precision.to(x.device, x.dtype)
        squared = torch.einsum("ncd,de,nce->nc", diff, precision, diff)
        return squared.clamp_min(0.0).min(dim=1).values.sqrt()

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors to store; a half-precision ``precision`` (symmetric) is stored as its
        upper triangle, about a quarter of the fp32 matrix's bytes."""
        named = {"means": self.means, "precision": self.precision, "bank": self.bank}
        if self.precision is not None and self.precision.dtype == torch.float16:
            named["precision"] = None
            named[PACKED] = _upper_triangle(self.precision)
        return {f"{prefix}{k}": v.contiguous() for k, v in named.items() if v is not None}

    def half(self) -> LayerStatistics:
        """A copy whose tensors are stored in half precision (distances change by < 0.1 %)."""
        return replace(
            self,
            **{
                key: value.half()
                for key in ("means", "precision", "bank")
                if (value := getattr(self, key)) is not None
            },
        )

    @classmethod
    def stored(cls, method: str, tensors: Mapping[str, torch.Tensor], **settings: Any):
        """Rebuild from :meth:`tensors`' output (keys without the prefix), in fp32."""
        found = {k: tensors[k].float() for k in ("means", "precision", "bank") if k in tensors}
        if PACKED in tensors:
            found["precision"] = _symmetric(tensors[PACKED].float())
        return cls(method, **found, **settings)


@dataclass
class Reliability:
    """Fitted reliability statistics of one detector (see the module docstring)."""

    layers: dict[str, LayerStatistics]
    threshold: float = 1.0  # the combined, median-scaled distance where flagging starts
    flag_rate: float = 0.05
    min_face_side: int | None = None  # pixels across the framed face in the original image
    min_jpeg_quality: int | None = None
    fitted_on: dict[str, Any] = field(default_factory=dict)

    @property
    def module_layers(self) -> list[str]:
        """The module paths whose pooled outputs :meth:`score` needs (beside the embedding)."""
        return [name for name in self.layers if name != EMBEDDING]

    @property
    def method(self) -> str:
        return next(iter(self.layers.values())).method

    def combined(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Each layer's distance over its validation median, maximum over the layers."""
        scaled = [stats.distance(features[n]) / stats.scale for n, stats in self.layers.items()]
        return torch.stack(scaled).amax(dim=0)

    def score(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The ood_score per image (1 or more: unlike the training faces), on the features'
        device."""
        return self.combined(features) / self.threshold

    def input_problems(
        self, face_side: float | None = None, jpeg_quality: int | None = None
    ) -> list[str]:
        """Why an input is outside what the detector saw, in words (empty: nothing found)."""
        problems = []
        if self.min_face_side and face_side is not None and face_side < self.min_face_side:
            problems.append(
                f"the face is {face_side:.0f} px across, smaller than any this detector learnt "
                f"from (at least {self.min_face_side} px)"
            )
        quality = self.min_jpeg_quality
        if quality and jpeg_quality is not None and jpeg_quality < quality:
            problems.append(
                f"the JPEG is compressed at quality about {jpeg_quality}, harder than any "
                f"this detector learnt from (quality {self.min_jpeg_quality} and up)"
            )
        return problems

    # -- fitting --------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        train: Mapping[str, np.ndarray],
        train_labels: np.ndarray,
        val: Mapping[str, np.ndarray],
        *,
        method: str = "mahalanobis",
        flag_rate: float = 0.05,
        k: int = 10,
        min_face_side: int | None = None,
        min_jpeg_quality: int | None = None,
        fitted_on: Mapping[str, Any] | None = None,
    ) -> Reliability:
        """Fit per layer on ``train`` features, then scale and threshold on ``val`` features
        (in-distribution faces not used for fitting) so that ``flag_rate`` of them is flagged."""
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if not 0.0 < flag_rate < 1.0:
            raise ValueError(f"flag_rate must be in (0, 1), got {flag_rate}")
        labels = np.asarray(train_labels)
        layers = {name: LayerStatistics.fit(train[name], labels, method, k) for name in train}
        for name, stats in layers.items():
            raw = stats.distance(torch.as_tensor(val[name]))
            stats.scale = max(float(raw.median()), 1e-12)
        reliability = cls(layers, 1.0, flag_rate, min_face_side, min_jpeg_quality)
        combined = reliability.combined({n: torch.as_tensor(v) for n, v in val.items()})
        reliability.threshold = max(float(torch.quantile(combined, 1.0 - flag_rate)), 1e-12)
        reliability.fitted_on = {
            "n_train": int(len(labels)),
            "n_val": int(len(combined)),
            **dict(fitted_on or {}),
        }
        return reliability

    # -- checkpoints ----------------------------------------------------------------------
    def half(self) -> Reliability:
        """A copy stored in half precision: what the shipped checkpoints carry."""
        return replace(self, layers={name: s.half() for name, s in self.layers.items()})

    def to_checkpoint(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors to store beside the weights, the JSON ``reliability`` block)."""
        tensors: dict[str, torch.Tensor] = {}
        layers = []
        for index, (name, stats) in enumerate(self.layers.items()):
            tensors.update(stats.tensors(f"{TENSOR_PREFIX}{index}."))
            layers.append(
                {"name": name, "method": stats.method, "scale": stats.scale, "k": stats.k}
            )
        meta = {
            "layers": layers,
            "threshold": self.threshold,
            "flag_rate": self.flag_rate,
            "min_face_side": self.min_face_side,
            "min_jpeg_quality": self.min_jpeg_quality,
            "fitted_on": self.fitted_on,
        }
        return tensors, meta

    @classmethod
    def from_checkpoint(
        cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
    ) -> Reliability:
        """Rebuild from :meth:`to_checkpoint`'s output; ValueError says what is wrong."""
        try:
            layers = {}
            for index, entry in enumerate(meta["layers"]):
                prefix = f"{TENSOR_PREFIX}{index}."
                method = entry["method"]
                if method not in METHODS:
                    raise ValueError(f"unknown method {method!r}")
                stats = LayerStatistics.stored(
                    method,
                    {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)},
                    scale=_positive(entry["scale"], "scale"),
                    k=int(entry.get("k", 10)),
                )
                needed = ("bank",) if method == "knn" else ("means", "precision")
                missing = [k for k in needed if getattr(stats, k) is None]
                if missing:
                    raise ValueError(f"layer {entry['name']!r} lacks {missing}")
                layers[str(entry["name"])] = stats
            if not layers:
                raise ValueError("no layers")
            return cls(
                layers,
                threshold=_positive(meta["threshold"], "threshold"),
                flag_rate=float(meta.get("flag_rate", 0.05)),
                min_face_side=meta.get("min_face_side"),
                min_jpeg_quality=meta.get("min_jpeg_quality"),
                fitted_on=dict(meta.get("fitted_on") or {}),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"incomplete reliability block ({exc!r})") from None


def input_problems(
    detector: Detector,
    size: tuple[int, int],
    box: FaceBox | None = None,
    jpeg_quality: int | None = None,
) -> list[str]:
    """What about an input (an image of ``size``, its analysed face ``box`` or None when the
    whole image is scored, its JPEG quality) lies outside what ``detector`` learnt from; empty
    when nothing does or the detector has no reliability statistics."""
    if detector.reliability is None:
        return []
    from .faces import framing_crop

    crop = framing_crop(size, box) if box is not None else None  # None: the whole image
    side = crop[2] if crop is not None else min(size)
    return detector.reliability.input_problems(face_side=side, jpeg_quality=jpeg_quality)


@dataclass(frozen=True)
class Assessment:
    """One image's three-way outcome: the verdict, whether the detector can be relied on for
    this input (None: the detector has no reliability statistics), and why not."""

    verdict: str
    reliable: bool | None
    reasons: tuple[str, ...] = ()


def assess(p_fake: float, ood_score: float | None, problems: Sequence[str] = ()) -> Assessment:
    """The verdict for P(fake), the ood_score (None or NaN: not measured) and the input
    problems: ``uncertain`` when the image is unlike the training faces or an input check
    failed, else ``fake`` at P(fake) >= 0.5 and ``real`` below; a NaN P(fake) gives no verdict
    (``""``)."""
    measured = ood_score is not None and math.isfinite(ood_score)
    reasons = list(problems)
    if measured and ood_score >= 1.0:
        reasons.insert(0, f"unlike the faces this detector learnt from (score {ood_score:.2f})")
    reliable = None if not (measured or reasons) else not reasons
    if not math.isfinite(p_fake):
        return Assessment("", reliable, tuple(reasons))
    if reasons:
        return Assessment(UNCERTAIN, False, tuple(reasons))
    return Assessment("fake" if p_fake >= THRESHOLD else "real", reliable)


def split_tensors(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A checkpoint's tensors as (model weights, reliability statistics)."""
    model = {k: v for k, v in state.items() if not k.startswith(TENSOR_PREFIX)}
    stats = {k: v for k, v in state.items() if k.startswith(TENSOR_PREFIX)}
    return model, stats


def _upper_triangle(matrix: torch.Tensor) -> torch.Tensor:
    rows, cols = torch.triu_indices(*matrix.shape)
    return matrix[rows, cols]


def _symmetric(upper: torch.Tensor) -> torch.Tensor:
    """The symmetric matrix whose upper triangle (row by row) is ``upper``."""
    size = int((math.isqrt(8 * upper.numel() + 1) - 1) // 2)
    if size * (size + 1) // 2 != upper.numel():
        raise ValueError(f"{upper.numel()} values are not the upper triangle of a square matrix")
    rows, cols = torch.triu_indices(size, size)
    matrix = torch.zeros(size, size, dtype=upper.dtype)
    matrix[rows, cols] = upper
    matrix[cols, rows] = upper
    return matrix


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _positive(value: Any, name: str) -> float:
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return number


def collect_features(
    detector: Detector, batches: Iterable[torch.Tensor], layers: Sequence[str] = ("mid",)
) -> dict[str, np.ndarray]:
    """The embedding and the pooled outputs of ``layers`` (CAM layer names or module paths) for
    uint8 ``(B, 3, H, W)`` batches already harmonised for ``detector``; keys are
    :data:`EMBEDDING` and the module paths."""
    from .explainers.gradcam import captured_activations

    paths = list(dict.fromkeys(detector.resolve_layer(layer) for layer in layers))
    parts: dict[str, list[np.ndarray]] = {EMBEDDING: [], **{p: [] for p in paths}}
    with torch.inference_mode(), captured_activations(detector, paths, observe=True) as observed:
        for batch in batches:
            x = detector.normalize(batch).contiguous(memory_format=torch.channels_last)
            _, embedding = detector.head(detector.features(x))
            parts[EMBEDDING].append(embedding.float().cpu().numpy())
            for path in paths:
                parts[path].append(pooled(observed[path]).cpu().numpy())
    return {name: np.concatenate(chunks) for name, chunks in parts.items() if chunks}


def fit_detector(
    detector: Detector,
    train: Iterable[tuple[torch.Tensor, torch.Tensor]],
    val: Iterable[torch.Tensor],
    *,
    layers: Sequence[str] = ("mid",),
    **options: Any,
) -> Reliability:
    """Fit :class:`Reliability` for ``detector`` from labelled training batches ``(images,
    targets)`` and validation image batches (uint8, harmonised), attach it to the detector
    (``detector.reliability``) and return it. ``options`` go to :meth:`Reliability.fit`."""
    labels: list[np.ndarray] = []

    def images() -> Iterable[torch.Tensor]:
        for batch, targets in train:
            labels.append(np.asarray(targets, dtype=np.int64))
            yield batch

    train_features = collect_features(detector, images(), layers)
    val_features = collect_features(detector, val, layers)
    detector.reliability = Reliability.fit(
        train_features, np.concatenate(labels), val_features, **options
    )
    return detector.reliability

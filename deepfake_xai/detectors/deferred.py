"""Loading a checkpoint without building its torch network until something needs it.

On CPU the engine runs a checkpoint's network on ONNX Runtime from an export cached on disk and
needs torch only for the head (global average pooling and one linear layer), yet building the
network first imports timm, which imports torchvision, which imports ``torch._dynamo``: about
1.5 s of every fresh process. So the first eager load of a checkpoint file, with every check,
leaves a record in ``user_cache_dir("loaded")``: the detector's name and config as that load
made them, digests of its weights, and where its classifier is when its head is pooling plus a
linear layer. A later load of the same file (the same SHA-256) with the same code, torch and
timm gives a detector whose network is built on first use of ``detector.model`` (an
explainer that needs gradients, training, a GPU); until then its head runs from the checkpoint's
classifier weights. ``$DEEPFAKE_XAI_DEFER`` ``0`` turns it off.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import threading
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..preprocessing import Harmonization
from ..runtime import switch_setting
from .base import Detector
from .weights import user_cache_dir

log = logging.getLogger(__name__)

DEFER_ENV = "DEEPFAKE_XAI_DEFER"
RECORD_FORMAT = 2
KEEP_RECORDS = 100
"""Records kept, the most recently used (a few KB each; each load of a recorded file touches
its record): a training run leaves one per checkpoint it evaluates."""
HEAD_TOLERANCE = 1e-5
"""Largest difference, relative to the largest magnitude, between the detector's head and
:class:`PooledLinearHead` on a random feature map for the record to name a classifier."""


class PooledLinearHead(nn.Module):
    """Global average pooling and a linear classifier: the head of the built-in detectors,
    computed without their network."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.classifier = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        with torch.no_grad():
            self.classifier.weight.copy_(weight)
            if bias is not None:
                self.classifier.bias.copy_(bias)
        self.requires_grad_(False).eval()

    def forward(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logit (B,), embedding (B, D))``, as :meth:`Detector.head` returns them."""
        embedding = F.adaptive_avg_pool2d(fmap, 1).flatten(1)
        return self.classifier(embedding).reshape(-1), embedding


class CheckpointBuild:
    """Builds a deferred detector's network: the checkpoint's eager load, every check included."""

    def __init__(self, config: Mapping[str, Any], state: Mapping[str, torch.Tensor], origin: str):
        self.config = config
        self.state = state
        self.origin = origin

    def __call__(self) -> nn.Module:
        from .checkpoint import build_detector

        return build_detector(self.config, self.state, origin=self.origin, device="cpu").model


def deferral_enabled() -> bool:
    """False where ``$DEEPFAKE_XAI_DEFER`` turns deferred loading off."""
    return switch_setting(DEFER_ENV) is not False


def environment() -> dict[str, str]:
    """What a record is valid for: the versions that build the network and load the weights,
    and the code that made the record's config (the version string stays the same across
    edits of a source checkout)."""
    from .. import __version__

    try:
        timm_version = metadata.version("timm")
    except metadata.PackageNotFoundError:
        timm_version = ""
    return {
        "deepfake_xai": __version__,
        "code": _code_digest(),
        "torch": torch.__version__,
        "timm": timm_version,
    }


@functools.cache
def _code_digest() -> str:
    """SHA-256 (16 hex digits) of the sources that turn a checkpoint into a detector."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for source in sorted([*here.glob("*.py"), here.parent / "preprocessing.py"]):
        digest.update(source.name.encode() + source.read_bytes())
    return digest.hexdigest()[:16]


def record_path(fingerprint: str) -> Path:
    return user_cache_dir("loaded") / f"{fingerprint}.json"


def remember(detector: Detector, sha256: str) -> None:
    """Record a built-in detector just loaded eagerly from its checkpoint file (SHA-256
    ``sha256``), so a later load of the same file may defer its network. Nothing is written
    where the head is not pooling plus a linear layer; a cache that cannot be written only
    costs the saving."""
    if not _builtin(type(detector)) or not deferral_enabled():
        return
    path = record_path(sha256[:12])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    if not os.access(path.parent, os.W_OK):  # a read-only cache: spare the digests
        return
    classifier = _pooled_linear_classifier(detector)
    if classifier is None:
        return
    from ..onnx_engine import prune, weights_digest
    from .checkpoint import tensors_digest

    config = detector.config()
    config.pop("package_version", None)
    record = {
        "format": RECORD_FORMAT,
        "sha256": sha256,
        "environment": environment(),
        "class": _qualified(type(detector)),
        "name": detector.name,
        "config": config,
        "classifier": classifier,
        "digests": {
            "onnx": weights_digest(detector.model),
            "state": tensors_digest(detector.model.state_dict()),
        },
    }
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        partial.write_text(json.dumps(record, sort_keys=True))
        os.replace(partial, path)
    except (OSError, TypeError, ValueError) as exc:  # a full cache, metadata JSON cannot hold
        log.debug("cannot record %s in %s: %s", detector.name, path, exc)
        partial.unlink(missing_ok=True)
    prune(path.parent, keep=KEEP_RECORDS, suffix=".json")


def load_deferred(
    config: Mapping[str, Any],
    state: Mapping[str, torch.Tensor],
    *,
    sha256: str,
    origin: str,
    device: str | torch.device,
) -> Detector | None:
    """The detector of a checkpoint file (SHA-256 ``sha256``) loaded before (see
    :func:`remember`), its network not built, or None where no record vouches for the file:
    then the caller loads it eagerly."""
    from ..reliability import split_tensors
    from .checkpoint import attach_reliability

    record = _recall(sha256)
    if record is None:
        return None
    try:
        detector = _from_record(record, config, state, origin, device)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a damaged record
        log.info("load record of %s unusable (%s); loading it in full", origin, exc)
        return None
    if detector is not None:
        attach_reliability(detector, config, split_tensors(state)[1], origin=origin)
        detector.checkpoint = origin
        detector.fingerprint = sha256[:12]
    return detector


def _from_record(
    record: Mapping[str, Any],
    config: Mapping[str, Any],
    state: Mapping[str, torch.Tensor],
    origin: str,
    device: str | torch.device,
) -> Detector | None:
    """The detector ``record`` describes, its head served from ``state``; None where the
    registry's class or the state no longer fit the record."""
    from ..registry import DETECTORS, RegistryError

    try:
        cls = DETECTORS.entry(str(config["detector"])).factory
    except RegistryError:
        return None
    weight = state.get(f"{record['classifier']}.weight")
    if not (isinstance(cls, type) and _qualified(cls) == record["class"]) or weight is None:
        return None
    saved = record["config"]
    detector = cls.__new__(cls)
    Detector.__init__(
        detector,
        CheckpointBuild(config, state, origin),
        name=record["name"],
        architecture=saved["architecture"],
        cam_layers=saved["cam_layers"],
        harmonization=Harmonization.from_dict(saved["harmonization"]),
        mean=saved["mean"],
        std=saved["std"],
        device=device,
    )
    detector.apply_config(saved)
    bias = state.get(f"{record['classifier']}.bias")
    head = PooledLinearHead(weight.float(), None if bias is None else bias.float())
    detector.served_head = head.to(detector.device)
    detector.known_digests = dict(record["digests"])
    return detector


def _recall(sha256: str) -> dict[str, Any] | None:
    """The record of the file with this SHA-256, where it is valid for this process."""
    if not deferral_enabled():
        return None
    path = record_path(sha256[:12])
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    valid = (
        isinstance(record, dict)
        and record.get("format") == RECORD_FORMAT
        and record.get("sha256") == sha256
        and record.get("environment") == environment()
    )
    if not valid:
        return None
    with contextlib.suppress(OSError):  # a read-only cache
        os.utime(path)  # recently used: kept by the pruning
    return record


def _pooled_linear_classifier(detector: Detector) -> str | None:
    """The module path of ``detector``'s classifier where its head is global average pooling
    plus that linear layer (checked on a random feature map), else None."""
    model = detector.model
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(classifier, nn.Linear):
        return None
    path = next((name for name, module in model.named_modules() if module is classifier), None)
    if not path:
        return None
    generator = torch.Generator().manual_seed(0)
    fmap = torch.randn(2, classifier.in_features, 3, 3, generator=generator)
    bias = classifier.bias
    head = PooledLinearHead(
        classifier.weight.detach().cpu(), None if bias is None else bias.detach().cpu()
    )
    with torch.no_grad():
        try:
            want = detector.head(fmap.to(detector.device))
        except Exception:  # a head that needs another map than a pooling one would take
            return None
        got = head.to(classifier.weight.dtype)(fmap.to(classifier.weight.dtype))
    for expected, served in zip(want, got, strict=True):
        expected = expected.float().cpu()
        scale = max(1.0, expected.abs().max().item())
        if expected.shape != served.shape:
            return None
        if (served.float() - expected).abs().max().item() / scale > HEAD_TOLERANCE:
            return None
    return path


def _builtin(cls: type) -> bool:
    return cls.__module__.startswith("deepfake_xai.")


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"

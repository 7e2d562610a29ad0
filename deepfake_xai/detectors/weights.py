"""Where a timm detector's ImageNet weights come from: an ordered list of sources.

Each source either finds weights for an architecture or says why it cannot, so an offline failure
names every place that was tried. The order: an explicit ``pretrained_file``; timm's Hugging Face
and torch hub caches; weight packages installed from the index (built-in ones below, more from the
entry-point group ``deepfake_xai.weights``); timm's own download when the hub answers within a few
seconds (offline, timm would retry for about 48 s per model); last, weights converted from another
architecture's (EfficientNet-B0 from the packaged EfficientNet-Lite0 weights,
:mod:`deepfake_xai.detectors.transplanted_weights`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import torch

from ..registry import Registry

HUB_PROBE_TIMEOUT_S = 3.0


class PretrainedWeightsUnavailable(RuntimeError):
    """Pretrained weights could not be had (offline, or no weights for that model)."""


class WeightsNotHere(Exception):
    """One source has no weights for an architecture; the message says why."""


class OtherArchitecture(WeightsNotHere):
    """A weight package that holds weights for other architectures only."""


@dataclass(frozen=True)
class FoundWeights:
    """Weights a source can serve: a local file, or ``file=None`` for timm's own download.

    ``timm_kwargs`` are model options the weights need (an activation, for example) and
    ``cfg_overlay`` overrides timm's pretrained config (the input mean and std they expect).
    """

    source: str
    file: Path | None
    timm_kwargs: Mapping[str, Any] = field(default_factory=dict)
    cfg_overlay: Mapping[str, Any] = field(default_factory=dict)


class WeightSource(Protocol):
    """Finds ImageNet weights for a timm architecture, or raises :class:`WeightsNotHere`."""

    name: str

    def locate(self, architecture: str) -> FoundWeights: ...


# Installed weight packages, built-in and plugins. An entry's factory returns a WeightSource.
WEIGHT_PACKAGES: Registry = Registry(
    "weight package", "deepfake_xai.weights", "deepfake_xai.detectors.packaged_weights"
)


def find_pretrained(
    architecture: str, pretrained_file: str | os.PathLike | None = None
) -> FoundWeights:
    """The first source with weights for ``architecture``; an error naming every source tried.

    An explicit ``pretrained_file`` is the only source consulted when given.
    """
    if pretrained_file is not None:
        path = Path(pretrained_file).expanduser()
        if not path.is_file():
            raise PretrainedWeightsUnavailable(
                f"{architecture}: pretrained_file {path} does not exist; pass "
                "pretrained_file=PATH to a local ImageNet weights file, or pretrained=False"
            )
        return FoundWeights(f"local file {path}", path)
    tried, other_packages = [], 0
    for source in weight_sources():
        try:
            return source.locate(architecture)
        except OtherArchitecture:
            other_packages += 1
        except WeightsNotHere as exc:
            tried.append(f"{source.name}: {exc}")
    if other_packages:
        tried.append(f"{other_packages} weight packages: none holds {architecture}")
    raise PretrainedWeightsUnavailable(
        f"no ImageNet weights for {architecture}; tried " + "; ".join(tried) + ". Pass "
        "pretrained_file=PATH to local weights, or pretrained=False to start from scratch"
    )


def weight_sources() -> list[WeightSource]:
    """Every source, in the order they are tried."""
    from .transplanted_weights import Lite0IntoB0

    packages = [entry.factory() for entry in WEIGHT_PACKAGES.entries()]
    return [HubCache(), TorchHubCache(), *packages, TimmDownload(), Lite0IntoB0()]


class HubCache:
    """Weights timm downloaded earlier from the Hugging Face Hub (the local hub cache)."""

    name = "the Hugging Face hub cache"

    def locate(self, architecture: str) -> FoundWeights:
        from huggingface_hub import try_to_load_from_cache

        cfg = _pretrained_cfg(architecture)
        if not cfg.hf_hub_id:
            raise WeightsNotHere("timm names no hub repository for it")
        for filename in (cfg.hf_hub_filename, "model.safetensors", "pytorch_model.bin"):
            found = filename and try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(found, str):
                return FoundWeights(f"hub cache ({cfg.hf_hub_id})", Path(found))
        raise WeightsNotHere(f"{cfg.hf_hub_id} is not cached")


class TorchHubCache:
    """Weights timm downloaded earlier from a plain URL (torch's hub checkpoint folder)."""

    name = "the torch hub cache"

    def locate(self, architecture: str) -> FoundWeights:
        cfg = _pretrained_cfg(architecture)
        if not cfg.url:
            raise WeightsNotHere("timm names no download URL for it")
        path = Path(torch.hub.get_dir(), "checkpoints", Path(urlparse(cfg.url).path).name)
        if not path.is_file():
            raise WeightsNotHere(f"{path} does not exist")
        return FoundWeights(f"torch hub cache ({path.name})", path)


class TimmDownload:
    """timm's own download, tried only when the Hugging Face Hub answers quickly."""

    name = "timm's download"

    def locate(self, architecture: str) -> FoundWeights:
        _pretrained_cfg(architecture)
        reason = hub_unreachable()
        if reason is not None:
            raise WeightsNotHere(reason)
        return FoundWeights("timm's download", None)


def _pretrained_cfg(architecture: str):
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(architecture)
    if cfg is None:
        raise WeightsNotHere("timm has no pretrained weights for this architecture")
    return cfg


def hub_unreachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why the Hugging Face Hub cannot be reached, or None when it (or a proxy) may be."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as exc:
        return f"cannot reach {host}: {exc}"
    return None


def user_cache_dir(*parts: str) -> Path:
    """``$DEEPFAKE_XAI_CACHE/...``, else ``~/.cache/deepfake-xai/...`` (honours XDG_CACHE_HOME)."""
    root = os.environ.get("DEEPFAKE_XAI_CACHE")
    if root:
        return Path(root).expanduser().joinpath(*parts)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base, "deepfake-xai", *parts)

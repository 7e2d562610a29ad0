"""Where a timm detector's pretrained weights come from, decided in seconds, not minutes.

Offline, timm's own download retries for about 48 s per model before it fails; these helpers
probe the Hugging Face Hub for at most a few seconds and fall back to the local caches.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

HUB_PROBE_TIMEOUT_S = 3.0


class PretrainedWeightsUnavailable(RuntimeError):
    """Pretrained weights could not be had (offline, or no weights for that model)."""


def pretrained_kwargs(architecture: str) -> dict[str, Any]:
    """Factory arguments for pretrained weights, failing fast when they cannot be had.

    Online: ``pretrained=True`` (timm downloads or uses its cache). Offline (no route to the
    Hugging Face Hub within a few seconds, or ``HF_HUB_OFFLINE``): weights already in the local
    cache as ``pretrained_file``, else :class:`PretrainedWeightsUnavailable` at once instead of
    timm's minute of retries.
    """
    reason = hub_unreachable()
    if reason is None:
        return {"pretrained": True}
    cached = cached_weights(architecture)
    if cached is not None:
        return {"pretrained_file": cached}
    raise PretrainedWeightsUnavailable(f"{reason}, and none are in the local cache")


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


def cached_weights(architecture: str) -> str | None:
    """A locally cached ImageNet weights file of a timm architecture (hub or torch hub cache)."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(architecture)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        for filename in (cfg.hf_hub_filename, "model.safetensors", "pytorch_model.bin"):
            found = filename and try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(found, str):
                return found
    if cfg.url:
        path = Path(torch.hub.get_dir(), "checkpoints", Path(urlparse(cfg.url).path).name)
        if path.is_file():
            return str(path)
    return None

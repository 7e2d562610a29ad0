"""Detector checkpoints: safetensors weights plus a JSON metadata block.

Pickled ``.pt``/``.pth`` files are never unpickled unless the caller opts in, and then only with
``torch.load(weights_only=True)``. Every failure says exactly what is wrong with which file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

if TYPE_CHECKING:
    from .base import Detector

FORMAT = "deepfake-xai/1"
METADATA_KEY = "deepfake_xai"
HUB_PREFIX = "hf-hub:"
HUB_FILENAME = "model.safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; names the file and the reason."""


def save_checkpoint(detector: Detector, path: str | os.PathLike) -> Path:
    """Write ``detector`` atomically to ``path`` (``.safetensors`` is added when missing)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {"format": FORMAT, **detector.config()}
    tensors = _unshared_state_dict(detector.model)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={METADATA_KEY: json.dumps(config)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _unshared_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict on the CPU, contiguous, with tied tensors stored once per name."""
    seen: dict[tuple[int, int], str] = {}
    out = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        out[key] = tensor.clone() if ident in seen else tensor
        seen[ident] = key
    return out


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata block of a deepfake-xai safetensors checkpoint, validated."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a safetensors checkpoint ({exc})") from exc
    if METADATA_KEY not in raw:
        raise CheckpointError(
            f"{path}: a safetensors file without deepfake-xai metadata; "
            "it holds weights but not which detector they belong to"
        )
    try:
        config = json.loads(raw[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: the metadata block is not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(
            f"{path}: unsupported checkpoint format {found!r}; expected {FORMAT!r}"
        )
    missing = [
        k for k in ("detector", "architecture", "harmonization", "mean", "std") if k not in config
    ]
    if missing:
        raise CheckpointError(f"{path}: metadata lacks {missing}")
    return config


def load_checkpoint(
    source: str | os.PathLike,
    *,
    device: str | torch.device = "auto",
    allow_pickle: bool = False,
    detector: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Detector:
    """Rebuild a detector from a local checkpoint or ``hf-hub:org/repo[@revision]``."""
    path = resolve_source(source, cache_dir=cache_dir)
    if _is_pickle(path):
        return _load_pickle(path, device=device, allow_pickle=allow_pickle, detector=detector)
    config = read_metadata(path)
    with safe_open(str(path), framework="pt") as handle:
        state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    return build_detector(config, state, origin=str(path), device=device)


def build_detector(
    config: Mapping[str, Any],
    state: Mapping[str, torch.Tensor],
    *,
    origin: str,
    device: str | torch.device = "auto",
) -> Detector:
    """Create the registered detector named in ``config`` and load ``state`` into it."""
    from ..registry import DETECTORS, RegistryError

    try:
        detector = DETECTORS.create(config["detector"], pretrained=False, device="cpu")
    except RegistryError as exc:
        raise CheckpointError(f"{origin}: {exc}") from None
    if detector.architecture != config["architecture"]:
        raise CheckpointError(
            f"{origin}: wrong architecture: the checkpoint holds {config['architecture']!r} "
            f"but detector {config['detector']!r} builds {detector.architecture!r}"
        )
    load_state(detector.model, state, origin=origin)
    detector.apply_config(config)
    return detector.to(device)


def load_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], *, origin: str) -> None:
    """Load ``state`` strictly, with one error that lists missing, unexpected and misshapen keys."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshapen = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    for label, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", misshapen),
    ):
        if items:
            shown = ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
            problems.append(f"{len(items)} {label}: {shown}")
    if problems:
        raise CheckpointError(f"{origin}: weights do not fit the model; " + "; ".join(problems))
    model.load_state_dict(dict(state), strict=True)


def resolve_source(
    source: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None
) -> Path:
    """A local file for a path or an ``hf-hub:`` id (from the local hub cache when offline)."""
    text = os.fspath(source)
    if text.startswith(HUB_PREFIX):
        return _download_from_hub(text[len(HUB_PREFIX) :], cache_dir=cache_dir)
    path = Path(text).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.is_dir():
        candidate = path / HUB_FILENAME
        if not candidate.exists():
            raise CheckpointError(f"{path}: a directory without {HUB_FILENAME}")
        return candidate
    return path


def _download_from_hub(repo: str, *, cache_dir: str | os.PathLike | None) -> Path:
    from huggingface_hub import hf_hub_download

    repo_id, _, revision = repo.partition("@")
    if repo_id.count("/") != 1:
        raise CheckpointError(f"hf-hub:{repo}: expected hf-hub:org/name[@revision]")
    kwargs = {
        "repo_id": repo_id,
        "filename": HUB_FILENAME,
        "revision": revision or None,
        "cache_dir": cache_dir,
        "library_name": "deepfake-xai",
    }
    try:
        return Path(hf_hub_download(**kwargs, local_files_only=True))
    except Exception as exc:  # not cached yet: try the network unless told to stay offline
        if _hub_offline():
            raise CheckpointError(
                f"hf-hub:{repo}: {HUB_FILENAME} is not in the local hub cache and HF_HUB_OFFLINE "
                f"is set ({type(exc).__name__})"
            ) from exc
    try:
        return Path(hf_hub_download(**kwargs))
    except Exception as exc:
        raise CheckpointError(
            f"hf-hub:{repo}: {HUB_FILENAME} is neither in the local hub cache nor downloadable "
            f"({type(exc).__name__}: {exc})"
        ) from exc


def _hub_offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return flag.strip().lower() in {"1", "true", "yes", "on"}


def _is_pickle(path: Path) -> bool:
    """By suffix, or by the magic of torch's zip container / a raw pickle stream.

    A safetensors file starts with an 8-byte header length followed by ``{``, which tells it
    apart from a pickle whose first byte happens to equal the length's.
    """
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    with open(path, "rb") as handle:
        head = handle.read(9)
    if head[8:9] == b"{":
        return False
    return head[:4] == b"PK\x03\x04" or (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05")


def _load_pickle(
    path: Path, *, device: str | torch.device, allow_pickle: bool, detector: str | None
) -> Detector:
    if not allow_pickle:
        raise CheckpointError(
            f"{path}: refusing to unpickle a PyTorch pickle (it can run arbitrary code); "
            "convert it to safetensors, or pass allow_pickle=True if you trust its source"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot be loaded with weights_only=True ({exc})") from exc
    if isinstance(payload, dict) and isinstance(payload.get("config"), dict):
        config, state = payload["config"], payload.get("state_dict", {})
    elif isinstance(payload, dict) and detector:
        from ..registry import DETECTORS

        template = DETECTORS.create(detector, pretrained=False, device="cpu")
        config, state = {"format": FORMAT, **template.config()}, payload.get("state_dict", payload)
    else:
        raise CheckpointError(
            f"{path}: a bare state dict does not say which detector it is; pass detector=NAME"
        )
    return build_detector(config, state, origin=str(path), device=device)

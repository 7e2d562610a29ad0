"""Detector checkpoints: safetensors weights plus a JSON metadata block.

Pickled ``.pt``/``.pth`` files are never unpickled unless the caller opts in, and then only with
``torch.load(weights_only=True)``. Before anything is read, the path must be a regular file
(a FIFO would block forever) whose safetensors header is of bounded size and tensor count. The
metadata is validated before a detector is built (types, bounds of every preprocessing setting,
nesting depth), and the weights must have usable dtypes and be finite, so a broken checkpoint
fails on load, not later with NaN verdicts or gigabytes per image. Every failure is a
:class:`CheckpointError` that says what is wrong with which file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..reliability import Reliability, split_tensors
from .deferred import load_deferred, remember

if TYPE_CHECKING:
    from .base import Detector

FORMAT = "deepfake-xai/1"
METADATA_KEY = "deepfake_xai"
HUB_PREFIX = "hf-hub:"
HUB_FILENAME = "model.safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
MAX_METADATA_DEPTH = 32
REQUIRED_KEYS = ("detector", "architecture", "harmonization", "mean", "std")
MAX_HEADER_BYTES = 8 << 20  # the shipped EfficientNet's header is 46 KB
MAX_TENSORS = 10_000  # EfficientNet-B0 has about 300; a million took 27 s and 1.6 GB to refuse
MAX_NAME_LENGTH = 200
MAX_RELIABILITY_LAYERS = 16
MAX_NEIGHBOURS = 10_000
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
_FILE_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; names the file and the reason."""


class CheckpointNotFoundError(CheckpointError):
    """The path given as a checkpoint does not exist (the CLI calls it a usage error)."""


def save_checkpoint(detector: Detector, path: str | os.PathLike) -> Path:
    """Write ``detector`` atomically to ``path`` (``.safetensors`` is added when missing)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {"format": FORMAT, **detector.config()}
    tensors = _unshared_state_dict(detector.model)
    if detector.reliability is not None:
        extra, config["reliability"] = detector.reliability.to_checkpoint()
        tensors.update(extra)
    _write_atomically(path, tensors, config)
    return path


def update_metadata(path: str | os.PathLike, **fields: Any) -> Path:
    """Add ``fields`` to a checkpoint's metadata, rewriting it atomically; the tensors are copied
    as stored (an fp16 checkpoint stays fp16)."""
    path = Path(path)
    config = {**read_metadata(path), **fields}
    with safe_open(str(path), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    _write_atomically(path, tensors, config)
    return path


def store_reliability(
    path: str | os.PathLike, reliability: Reliability, out: str | os.PathLike | None = None
) -> Path:
    """Write ``reliability`` into the checkpoint at ``path`` (or a copy at ``out``), replacing
    any earlier statistics; the weights are copied as stored (an fp16 checkpoint stays fp16)."""
    path = Path(path)
    config = read_metadata(path)
    with safe_open(str(path), framework="pt") as handle:
        weights, _ = split_tensors({key: handle.get_tensor(key) for key in handle.keys()})  # noqa: SIM118
    tensors, config["reliability"] = reliability.to_checkpoint()
    target = Path(out) if out is not None else path
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(target, {**weights, **tensors}, config)
    return target


def _write_atomically(path: Path, tensors: dict[str, torch.Tensor], config: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={METADATA_KEY: json.dumps(config)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
    read_header(path)  # bounded, before safetensors parses it
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
    except RecursionError:
        raise CheckpointError(f"{path}: the metadata block is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: the metadata block is not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(
            f"{path}: unsupported checkpoint format {found!r}; expected {FORMAT!r}"
        )
    validate_config(config, origin=str(path))
    return config


def check_regular_file(path: Path) -> None:
    """Refuse a path that is missing or no regular file, before anything opens it."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"{path}: checkpoint not found") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({plain_text(exc)})") from exc
    if not stat.S_ISREG(mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise CheckpointError(f"{path}: {kind}, not a checkpoint file")


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, refused when it is larger than
    :data:`MAX_HEADER_BYTES` or lists more than :data:`MAX_TENSORS` tensors."""
    check_regular_file(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            size = struct.unpack("<Q", head)[0] if len(head) == 8 else None
            if size is None or size > MAX_HEADER_BYTES:
                return _header_too_big(path, size)
            text = handle.read(size)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({plain_text(exc)})") from exc
    try:
        header = json.loads(text) if len(text) == size else None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        header = None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors checkpoint (its header is no JSON map)")
    tensors = len(header) - ("__metadata__" in header)
    if tensors > MAX_TENSORS:
        raise CheckpointError(
            f"{path}: its header lists {tensors} tensors, more than the {MAX_TENSORS} "
            "a detector checkpoint may hold"
        )
    return header


def _header_too_big(path: Path, size: int | None) -> dict[str, Any]:
    if size is None:
        raise CheckpointError(f"{path}: not a safetensors checkpoint (shorter than 8 bytes)")
    raise CheckpointError(
        f"{path}: not a usable safetensors checkpoint (a header of {size} bytes; at most "
        f"{MAX_HEADER_BYTES} are read)"
    )


def _timm_kwargs_problems(options: Any) -> list[str]:
    """The recorded timm options must be a dict of known names to strings."""
    from .timm import RECORDED_TIMM_OPTIONS

    if isinstance(options, dict) and all(
        k in RECORDED_TIMM_OPTIONS and isinstance(v, str) for k, v in options.items()
    ):
        return []
    return [f"timm_kwargs must map {list(RECORDED_TIMM_OPTIONS)} to strings, got {options!r}"]


def validate_config(config: Mapping[str, Any], *, origin: str) -> None:
    """Raise :class:`CheckpointError` naming ``origin`` and every problem of a checkpoint config."""
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise CheckpointError(f"{origin}: metadata lacks {missing}")
    problems = _config_problems(config)
    if problems:
        raise CheckpointError(f"{origin}: invalid metadata: " + "; ".join(problems))


def _config_problems(config: Mapping[str, Any]) -> list[str]:
    from ..preprocessing import Harmonization
    from .base import LABELS, normalization_problems

    if _deeper_than(config, MAX_METADATA_DEPTH):
        return [f"nested more than {MAX_METADATA_DEPTH} levels deep"]
    problems = [
        f"{key} must be a non-empty string of at most {MAX_NAME_LENGTH} characters, "
        f"got {_short(config[key])}"
        for key in ("detector", "architecture")
        if not (isinstance(config[key], str) and 0 < len(config[key].strip()) <= MAX_NAME_LENGTH)
    ]
    if "labels" in config and config["labels"] != list(LABELS):
        problems.append(f"labels must be {list(LABELS)}, got {config['labels']!r}")
    problems += normalization_problems(config["mean"], config["std"])
    layers = config.get("cam_layers", {"final": ""})
    if not (
        isinstance(layers, dict)
        and "final" in layers
        and all(isinstance(k, str) and isinstance(v, str) for k, v in layers.items())
    ):
        problems.append(f"cam_layers must map names to module paths with a 'final', got {layers!r}")
    problems += _timm_kwargs_problems(config.get("timm_kwargs", {}))
    if "reliability" in config:
        problems += [
            f"reliability statistics: {p}" for p in _reliability_problems(config["reliability"])
        ]
    settings = config["harmonization"]
    if not isinstance(settings, dict):
        problems.append(f"harmonization must be a dict of settings, got {settings!r}")
    else:
        try:
            harmonization = Harmonization.from_dict(settings)
        except (TypeError, ValueError) as exc:
            problems.append(f"harmonization: {exc}")
        else:
            size = config.get("input_size", harmonization.image_size)
            if size != harmonization.image_size:
                problems.append(
                    f"input_size {size!r} contradicts harmonization.image_size "
                    f"{harmonization.image_size}"
                )
    return problems


def _reliability_problems(block: Any) -> list[str]:
    """What is wrong with the settings of a reliability block (its tensors are checked when
    it is built); [] if nothing."""
    if not isinstance(block, dict):
        return [f"must be a map of settings, got {_short(block)}"]
    layers = block.get("layers")
    if not (isinstance(layers, list) and 0 < len(layers) <= MAX_RELIABILITY_LAYERS):
        return [f"layers must list 1 to {MAX_RELIABILITY_LAYERS} layers, got {_short(layers)}"]
    problems = [p for layer in layers for p in _layer_problems(layer)]
    checks = {
        "threshold": (_is_number(block.get("threshold")) and block["threshold"] > 0, "> 0"),
        "flag_rate": (_is_number(block.get("flag_rate", 0.05)), "in [0, 1]"),
        "min_face_side": (_optional_int(block.get("min_face_side"), 1, 4096), "in [1, 4096]"),
        "min_jpeg_quality": (_optional_int(block.get("min_jpeg_quality"), 1, 100), "in [1, 100]"),
    }
    if checks["flag_rate"][0] and not 0 <= block.get("flag_rate", 0.05) <= 1:
        checks["flag_rate"] = (False, "in [0, 1]")
    for key, (good, bound) in checks.items():
        if not good:
            problems.append(f"{key} must be a number {bound}, got {_short(block.get(key))}")
    if not isinstance(block.get("fitted_on", {}), dict):
        problems.append(f"fitted_on must be a map, got {_short(block['fitted_on'])}")
    return problems


def _layer_problems(layer: Any) -> list[str]:
    from ..reliability import METHODS

    if not (isinstance(layer, dict) and isinstance(layer.get("name"), str) and layer["name"]):
        return [f"each layer must be a map with a name, got {_short(layer)}"]
    name, problems = layer["name"][:MAX_NAME_LENGTH], []
    if layer.get("method") not in METHODS:
        problems.append(f"layer {name!r}: method must be one of {METHODS}")
    if not (_is_number(layer.get("scale")) and layer["scale"] > 0):
        problems.append(f"layer {name!r}: scale must be a number > 0")
    if not _optional_int(layer.get("k", 10), 1, MAX_NEIGHBOURS):
        problems.append(f"layer {name!r}: k must be an int in [1, {MAX_NEIGHBOURS}]")
    return problems


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _optional_int(value: Any, low: int, high: int) -> bool:
    """None, or an int (not a bool) in [low, high]."""
    if value is None:
        return True
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _deeper_than(value: Any, limit: int) -> bool:
    """True when a JSON value nests more than ``limit`` levels, checked without recursion."""
    stack = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            if level >= limit and item:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return False


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
    try:
        with safe_open(str(path), framework="pt") as handle:
            state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read the weights ({plain_text(exc)})") from exc
    sha256 = file_sha256(path)
    detector = load_deferred(config, state, sha256=sha256, origin=str(path), device=device)
    if detector is None:  # not loaded before: built now, and remembered for the next load
        detector = build_detector(config, state, origin=str(path), device=device)
        detector.fingerprint = sha256[:12]
        remember(detector, sha256)
    return detector


def tensors_digest(tensors: Mapping[str, torch.Tensor], settings: Any = None) -> str:
    """SHA-256 over named tensors' bytes (and JSON ``settings``, when given)."""
    digest = hashlib.sha256()
    if settings is not None:
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for key, tensor in tensors.items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def file_fingerprint(path: str | os.PathLike) -> str:
    """The first 12 hex digits of a file's SHA-256: which exact weights gave a verdict."""
    return file_sha256(path)[:12]


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_detector(
    config: Mapping[str, Any],
    state: Mapping[str, torch.Tensor],
    *,
    origin: str,
    device: str | torch.device = "auto",
) -> Detector:
    """Create the registered detector named in ``config`` and load ``state`` into it."""
    from ..registry import DETECTORS, RegistryError

    validate_config(config, origin=origin)
    try:
        detector = DETECTORS.create(
            config["detector"], pretrained=False, device="cpu", **config.get("timm_kwargs", {})
        )
    except RegistryError as exc:
        raise CheckpointError(f"{origin}: {_missing_plugin(config) or exc}") from None
    if detector.architecture != config["architecture"]:
        raise CheckpointError(
            f"{origin}: wrong architecture: the checkpoint holds {config['architecture']!r} "
            f"but detector {config['detector']!r} builds {detector.architecture!r}"
        )
    weights, statistics = split_tensors(state)
    _check_dtypes(detector.model, weights, statistics, origin=origin)
    _check_finite(state, origin=origin)
    load_state(detector.model, weights, origin=origin)
    try:
        detector.apply_config(config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{origin}: {plain_text(exc)}") from exc
    attach_reliability(detector, config, statistics, origin=origin)
    detector.checkpoint = origin
    return detector.to(device)


def attach_reliability(
    detector: Detector,
    config: Mapping[str, Any],
    statistics: Mapping[str, torch.Tensor],
    *,
    origin: str,
) -> None:
    """Give ``detector`` the reliability statistics its checkpoint holds, if any."""
    if "reliability" not in config:
        return
    try:
        detector.reliability = Reliability.from_checkpoint(config["reliability"], statistics)
    except ValueError as exc:
        raise CheckpointError(f"{origin}: reliability statistics: {plain_text(exc)}") from exc
    problems = _statistics_problems(detector.reliability)
    if problems:
        raise CheckpointError(f"{origin}: reliability statistics: " + "; ".join(problems))


def _statistics_problems(reliability: Reliability) -> list[str]:
    """Statistics whose shapes do not fit together (each would fail every image later)."""
    problems = []
    for name, stats in reliability.layers.items():
        if stats.method == "knn":
            fits = stats.bank.ndim == 2 and stats.bank.shape[0] > 0
            shapes = f"bank {tuple(stats.bank.shape)}"
        else:
            means, precision = stats.means, stats.precision
            width = means.shape[-1]
            fits = means.ndim == 2 and means.shape[0] > 0 and precision.shape == (width, width)
            shapes = f"means {tuple(means.shape)}, precision {tuple(precision.shape)}"
        if not fits:
            problems.append(f"layer {name!r}: shapes do not fit ({shapes})")
    return problems


def _missing_plugin(config: Mapping[str, Any]) -> str | None:
    """What to install for a checkpoint whose detector comes from an absent plugin."""
    from ..registry import DETECTORS

    provider = config.get("provided_by")
    if not (isinstance(provider, dict) and isinstance(provider.get("distribution"), str)):
        return None
    dist, version = provider["distribution"], provider.get("version") or ""
    saved = f" (version {version} saved this checkpoint)" if version else ""
    failed = DETECTORS.failed_plugins.get(str(config["detector"]).lower())
    state = f"failed to load: {failed}" if failed else "is not installed"
    return (
        f"detector {config['detector']!r} comes from the plugin {dist}{saved}, which {state}; "
        f"install it (pip install {dist}) to load this checkpoint"
    )


def _check_dtypes(
    model: torch.nn.Module,
    weights: Mapping[str, torch.Tensor],
    statistics: Mapping[str, torch.Tensor],
    *,
    origin: str,
) -> None:
    """Refuse tensors whose dtype the model cannot use as it was trained: bool or integer
    weights (copied in, they become 0/1 or whole numbers), fp8 and other exotic floats."""
    expected = model.state_dict()
    wrong = []
    for key, tensor in [*weights.items(), *statistics.items()]:
        target = expected.get(key)
        if target is None and key in weights and not tensor.is_floating_point():
            continue  # an unexpected key: load_state names it
        floating = target is None or target.is_floating_point()
        if tensor.dtype not in (FLOAT_DTYPES if floating else INTEGER_DTYPES):
            kind = "a float" if floating else "an integer"
            wrong.append(f"{key} is {_dtype_name(tensor.dtype)} (needs {kind} dtype)")
    if wrong:
        shown = ", ".join(wrong[:5]) + (f" (+{len(wrong) - 5} more)" if len(wrong) > 5 else "")
        floats = ", ".join(_dtype_name(d) for d in FLOAT_DTYPES)
        raise CheckpointError(
            f"{origin}: unusable tensor dtypes ({len(wrong)} of {len(weights) + len(statistics)} "
            f"tensors): {shown}; floats must be one of {floats}"
        )


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _check_finite(state: Mapping[str, torch.Tensor], *, origin: str) -> None:
    """Refuse weights holding NaN or infinities: such a detector gives NaN for every image."""
    broken = [
        key
        for key, tensor in state.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if broken:
        shown = ", ".join(broken[:5]) + (f" (+{len(broken) - 5} more)" if len(broken) > 5 else "")
        raise CheckpointError(
            f"{origin}: the weights hold NaN or infinite values in {len(broken)} tensors: {shown}"
        )


def plain_text(exc: BaseException) -> str:
    """An exception's message on one line, without terminal colour codes (torch adds some)."""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(exc))
    return " ".join(text.split())


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
        path = _download_from_hub(text[len(HUB_PREFIX) :], cache_dir=cache_dir)
        check_regular_file(path)
        return path
    path = Path(text).expanduser()
    if not path.exists():
        raise CheckpointNotFoundError(f"{path}: checkpoint not found")
    if path.is_dir():
        candidate = path / HUB_FILENAME
        if not candidate.exists():
            raise CheckpointError(f"{path}: a directory without {HUB_FILENAME}")
        path = candidate
    check_regular_file(path)
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
        detail = plain_text(exc)
        if "WeightsUnpickler error:" in detail:  # the reason, without torch's advice around it
            detail = detail.split("WeightsUnpickler error:", 1)[1].split(". Please", 1)[0]
        raise CheckpointError(
            f"{path}: cannot be loaded with weights_only=True ({detail.strip()})"
        ) from exc
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
    detector = build_detector(config, state, origin=str(path), device=device)
    detector.fingerprint = file_fingerprint(path)
    return detector

"""Helpers the detector and explainer checks share: registry lookup, signatures, hooks, and
describing values in messages."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules import module as module_globals

from ..registry import Entry, Registry, RegistryError
from .report import CheckFailed, CheckReport, CheckResult

HOOK_ATTRIBUTES = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def start_report(
    registry: Registry, factory_or_name: str | Callable[..., Any]
) -> tuple[CheckReport, Entry | None, Callable[..., Any] | None]:
    """The report, the registry entry (for a name) and the factory to check (None: not found).

    A name gets a first check, ``registered``, whose failure says how to register it.
    """
    kind = registry.kind
    if not isinstance(factory_or_name, str):
        name = getattr(factory_or_name, "__qualname__", type(factory_or_name).__name__)
        return CheckReport(f"{kind} factory {name}"), None, factory_or_name
    try:
        entry = registry.entry(factory_or_name)
    except RegistryError as exc:
        hint = (
            f"register the factory in the entry-point group {registry.group!r} "
            "(see docs/plugins.md) and reinstall its package"
        )
        failure = CheckResult("registered", "failed", f"{exc}; {hint}")
        return CheckReport(f"{kind} {factory_or_name!r}", [failure]), None, None
    origin = entry.source + (f" {entry.version}" if entry.version else "")
    report = CheckReport(
        f"{kind} {entry.name!r} from {origin}", [CheckResult("registered", "passed")]
    )
    return report, entry, entry.factory


def require_signature(
    factory: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], advice: str
) -> None:
    """Fail with ``advice`` when ``factory(*args, **kwargs)`` does not fit its signature."""
    try:
        inspect.signature(factory).bind(*args, **kwargs)
    except TypeError as exc:
        raise CheckFailed(f"{advice} ({exc})") from None
    except ValueError:  # no signature to inspect (a builtin or C callable): the call decides
        pass


def hook_counts(model: nn.Module) -> dict[str, int]:
    """``module.attribute -> number of hooks`` for every module, plus torch's global hooks."""
    counts = {
        f"{name or 'model'}.{attr}": len(getattr(module, attr, {}))
        for name, module in model.named_modules()
        for attr in HOOK_ATTRIBUTES
    }
    for attr in HOOK_ATTRIBUTES:
        counts[f"global{attr}"] = len(getattr(module_globals, f"_global{attr}", {}))
    return {key: n for key, n in counts.items() if n}


def require_no_new_hooks(model: nn.Module, before: dict[str, int], after_what: str) -> None:
    """Fail when ``model`` holds hooks that were not there ``before``."""
    after = hook_counts(model)
    leaked = sorted(key for key, n in after.items() if n != before.get(key, 0))
    if leaked:
        raise CheckFailed(
            f"hooks left behind after {after_what}: {', '.join(leaked[:5])}; remove every hook "
            "you register (handle.remove() in a finally block, or a context manager)"
        )


def describe(value: Any) -> str:
    """``a Tensor of shape (3, 2) and dtype torch.float32``, or the type for anything else."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return f"a {type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(describe(v) for v in value[:3])
        return f"a {type(value).__name__} of {len(value)} ({inner})"
    return f"a {type(value).__name__}"


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference of two tensors (inf when their shapes differ)."""
    if a.shape != b.shape:
        return float("inf")
    return float((a.detach().float() - b.detach().float()).abs().max()) if a.numel() else 0.0

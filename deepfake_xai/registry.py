"""Name -> factory registries for detectors and explainers, with entry-point plugins.

Built-ins register with the ``register`` decorator when their module is imported; third-party
plugins are found through an entry-point group and loaded on the first lookup. A plugin that
fails to load is reported with one warning and left out; the rest keep working.
"""

from __future__ import annotations

import difflib
import importlib
import threading
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

T = TypeVar("T", bound=Callable[..., Any])

BUILTIN = "deepfake-xai"


class RegistryError(KeyError):
    """An unknown or conflicting registry name."""

    def __str__(self) -> str:  # KeyError quotes its message; show it as written
        return str(self.args[0]) if self.args else ""


class PluginWarning(UserWarning):
    """A plugin that could not be loaded."""


@dataclass(frozen=True)
class Entry:
    """One registered name: the factory and where it came from."""

    name: str
    factory: Callable[..., Any]
    aliases: tuple[str, ...] = ()
    source: str = BUILTIN
    version: str | None = None

    @property
    def is_plugin(self) -> bool:
        return self.source != BUILTIN


class Registry(Generic[T]):
    """A named collection of factories of one kind (``detector``, ``explainer``).

    ``builtins`` is a module imported before the first lookup (it registers the built-ins);
    ``group`` is the entry-point group scanned for plugins at the same moment.
    """

    def __init__(self, kind: str, group: str | None = None, builtins: str | None = None):
        self.kind = kind
        self.group = group
        self.builtins = builtins
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}
        self._loaded = False
        self._lock = threading.RLock()
        self.failed_plugins: dict[str, str] = {}

    def register(
        self,
        name: str | None = None,
        *,
        aliases: Iterable[str] = (),
        override: bool = False,
        source: str = BUILTIN,
        version: str | None = None,
    ) -> Callable[[T], T]:
        """Decorator: register a factory (class or function) under ``name``."""

        def decorator(factory: T) -> T:
            self.add(
                name or factory.__name__,
                factory,
                aliases=aliases,
                override=override,
                source=source,
                version=version,
            )
            return factory

        return decorator

    def add(
        self,
        name: str,
        factory: Callable[..., Any],
        *,
        aliases: Iterable[str] = (),
        override: bool = False,
        source: str = BUILTIN,
        version: str | None = None,
    ) -> None:
        """Register ``factory`` under ``name`` and ``aliases``; a taken name needs ``override``."""
        key = _normalise(name)
        alias_keys = tuple(_normalise(a) for a in aliases)
        with self._lock:
            for taken in (key, *alias_keys):
                owner = self._aliases.get(taken, taken if taken in self._entries else None)
                if owner is not None and not override:
                    raise RegistryError(
                        f"{self.kind} name {taken!r} is already registered "
                        f"(by {self._entries[owner].source}); pass override=True to replace it"
                    )
            if override:
                self._forget(key)
            self._entries[key] = Entry(key, factory, alias_keys, source, version)
            for alias in alias_keys:
                self._aliases[alias] = key

    def remove(self, name: str, /) -> None:
        """Unregister ``name`` and its aliases (tests, and plugins replacing their own entries)."""
        with self._lock:
            self._forget(self.entry(name).name)

    def _forget(self, key: str) -> None:
        old = self._entries.pop(key, None)
        if old:
            for alias in old.aliases:
                self._aliases.pop(alias, None)
        self._aliases.pop(key, None)

    def entry(self, name: str, /) -> Entry:
        """The entry for ``name`` or an alias; unknown names list what exists."""
        self._ensure_loaded()
        key = _normalise(name)
        key = self._aliases.get(key, key)
        if key in self._entries:
            return self._entries[key]
        known = sorted([*self._entries, *self._aliases])
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "."
        failed = self.failed_plugins.get(key)
        why = f"; its plugin failed to load: {failed}" if failed else ""
        raise RegistryError(
            f"unknown {self.kind} {name!r}{why}{hint} Available: {', '.join(self.names())}"
        )

    def get(self, name: str, /) -> T:
        """The factory registered under ``name``."""
        return self.entry(name).factory  # type: ignore[return-value]

    def create(self, name: str, /, **kwargs: Any) -> Any:
        """Build an instance: ``get(name)(**kwargs)``."""
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        """Registered names (aliases excluded), sorted."""
        self._ensure_loaded()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        """All entries, sorted by name."""
        self._ensure_loaded()
        return [self._entries[n] for n in sorted(self._entries)]

    def __contains__(self, name: str) -> bool:
        self._ensure_loaded()
        key = _normalise(name)
        return key in self._entries or key in self._aliases

    def reload_plugins(self) -> None:
        """Scan the entry-point group again (after a ``pip install`` in a running process)."""
        with self._lock:
            self._loaded = False
        self._ensure_loaded()

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            if self.builtins:
                try:
                    importlib.import_module(self.builtins)
                except BaseException:
                    self._loaded = False
                    raise
            if self.group:
                for ep in entry_points(group=self.group):
                    self._load_plugin(ep)

    def _load_plugin(self, ep: EntryPoint) -> None:
        key = _normalise(ep.name)
        dist = getattr(ep, "dist", None)
        source = dist.name if dist else ep.value.split(":")[0]
        version = dist.version if dist else None
        existing = self._entries.get(self._aliases.get(key, key))
        if existing is not None:
            if existing.source != source:
                warnings.warn(
                    f"{self.kind} plugin {ep.name!r} from {source!r} was skipped: the name is "
                    f"taken by {existing.source!r}; rename the plugin's entry point",
                    PluginWarning,
                    stacklevel=3,
                )
            return
        try:
            factory = ep.load()
            if not callable(factory):
                raise TypeError(
                    f"entry point {ep.value!r} is a {type(factory).__name__}, not callable"
                )
            self.add(key, factory, source=source, version=version)
        except Exception as exc:  # a broken plugin must not break the toolkit
            reason = f"{type(exc).__name__}: {exc}"
            self.failed_plugins[key] = reason
            warnings.warn(
                f"{self.kind} plugin {ep.name!r} from {source!r} could not be loaded "
                f"and was skipped ({reason})",
                PluginWarning,
                stacklevel=3,
            )


def _normalise(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise RegistryError(f"a registry name must be a non-empty string, got {name!r}")
    return name.strip().lower()


DETECTORS: Registry = Registry("detector", "deepfake_xai.detectors", "deepfake_xai.detectors")
EXPLAINERS: Registry = Registry("explainer", "deepfake_xai.explainers", "deepfake_xai.explainers")

"""One generic registry for every pluggable kind (detectors, backends, sources).

Entries are registered three ways:

* a decorator, ``@DETECTORS.register("spectral")``, on an already imported object;
* a lazy ``"module:attr"`` string, ``DETECTORS.register_lazy("antifakeprompt",
  "afpbench.detectors.antifakeprompt:AntifakePrompt")``, so that listing names never
  imports torch or transformers;
* an entry point in the group ``afpbench.<kind>`` (``afpbench.detectors``,
  ``afpbench.backends``) so that third-party packages add entries without touching us.

Unknown names raise ``UnknownNameError`` with "Did you mean" suggestions. Names may
carry a ``.tag`` (``antifakeprompt.lama``): the registry resolves the base name and
hands the tag to the caller (timm's convention for weight variants).
"""

from __future__ import annotations

import difflib
import importlib
from importlib import metadata
from typing import Any, Callable, Generic, Iterator, TypeVar

from afpbench.errors import AfpbenchError, UnknownNameError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str], what: str, fix: str = "") -> UnknownNameError:
    """Build the standard unknown-name error, naming the nearest choices."""
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    fix = fix or f"Known {what}s: {', '.join(sorted(choices)) or '(none)'}."
    return UnknownNameError(f"Unknown {what} '{name}'.{hint} {fix}")


def split_tag(name: str) -> tuple[str, str | None]:
    """``"antifakeprompt.lama"`` -> ``("antifakeprompt", "lama")``."""
    base, _, tag = name.partition(".")
    return base, (tag or None)


def load_object(target: str) -> Any:
    """Import ``"package.module:attr.sub"`` and return the attribute."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise AfpbenchError(f"'{target}' is not a 'module:attribute' reference; write it as package.module:name.")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise AfpbenchError(f"Cannot import '{module_name}' for '{target}' ({exc}); install the package that provides it.") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise AfpbenchError(f"'{module_name}' has no attribute '{attr}'; check the reference '{target}'.") from exc
    return obj


class Registry(Generic[T]):
    """Name -> object, with lazy entries and entry-point plugins."""

    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._objects: dict[str, T] = {}
        self._lazy: dict[str, str] = {}
        self._plugins_loaded = False

    # -- registration -------------------------------------------------------------
    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; without ``obj``, return a decorator."""
        if "." in name:
            raise ValueError(f"{self.kind} names cannot contain '.', which separates tags: {name!r}")

        def deco(o: T) -> T:
            self._objects[name] = o
            self._lazy.pop(name, None)
            return o

        return deco(obj) if obj is not None else deco

    def register_lazy(self, name: str, target: str) -> None:
        """Register a ``"module:attr"`` that is imported only when first asked for."""
        if name not in self._objects:
            self._lazy[name] = target

    def _load_plugins(self) -> None:
        if self._plugins_loaded or not self.entry_point_group:
            return
        self._plugins_loaded = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            # Built-in names win: a plugin cannot silently replace a bundled detector.
            if ep.name not in self._objects and ep.name not in self._lazy:
                self._lazy[ep.name] = ep.value

    # -- lookup -------------------------------------------------------------------
    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(set(self._objects) | set(self._lazy))

    def __contains__(self, name: str) -> bool:
        return split_tag(name)[0] in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def target(self, name: str) -> str | None:
        """The lazy ``module:attr`` of a name, without importing it (None if eager)."""
        self._load_plugins()
        return self._lazy.get(split_tag(name)[0])

    def get(self, name: str) -> T:
        """The object registered under the base name of ``name`` (tags are ignored)."""
        base, _ = split_tag(name)
        self._load_plugins()
        if base in self._objects:
            return self._objects[base]
        if base in self._lazy:
            obj = load_object(self._lazy[base])
            self._objects[base] = obj
            del self._lazy[base]
            return obj
        raise did_you_mean(base, self.names(), self.kind)


# The registries of the project. Built-in entries are declared lazily by the modules
# that own each kind (afpbench.detectors, afpbench.generate) so that importing this
# module stays cheap.
DETECTORS: Registry[Any] = Registry("detector", "afpbench.detectors")
BACKENDS: Registry[Any] = Registry("backend", "afpbench.backends")

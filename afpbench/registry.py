"""One generic registry for every pluggable kind (detectors, backends, sources).

Entries are registered three ways:

* a decorator, ``@DETECTORS.register("spectral")``, on an already imported object;
* a lazy ``"module:attr"`` string, ``DETECTORS.register_lazy("antifakeprompt",
  "afpbench.detectors.antifakeprompt:AntifakePrompt")``, so that listing names never
  imports torch or transformers;
* an entry point in the group ``afpbench.<kind>`` (``afpbench.detectors``,
  ``afpbench.backends``, ``afpbench.sources``) so that third-party packages add entries
  without touching us.

A name holds one object: registering a different object (or another ``module:attr``)
under a name already taken raises, instead of silently replacing what was there; a
plugin that reuses a bundled name is ignored with a warning (bundled names win). A
registry made with ``base_cls`` checks that what ``get`` returns is a subclass of it
(given as a class, or as a ``"module:attr"`` string so that the base is imported only
when an entry is). Unknown names raise ``UnknownNameError`` with "Did you mean"
suggestions. Names may carry a ``.tag`` (``antifakeprompt.lama``): the registry resolves
the base name and hands the tag to the caller (timm's convention for weight variants).
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any, Generic, TypeVar

from afpbench.errors import AfpbenchError, UnknownNameError

T = TypeVar("T")
log = logging.getLogger(__name__)


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


def reference_of(obj: Any) -> str:
    """``"module:qualname"`` of an importable object (what a lazy entry for it would say)."""
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', type(obj).__qualname__)}"


class Registry(Generic[T]):
    """Name -> object, with lazy entries, entry-point plugins and an optional base class."""

    def __init__(self, kind: str, *, base_cls: type | str | None = None, entry_point_group: str | None = None):
        self.kind = kind
        self.base_cls = base_cls
        self.entry_point_group = entry_point_group
        self._objects: dict[str, T] = {}
        self._lazy: dict[str, str] = {}
        self._plugins: dict[str, str] = {}  # name -> the distribution that declared it
        self._plugins_loaded = False

    # -- registration -------------------------------------------------------------
    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; without ``obj``, return a decorator.

        Registering the same object again is a no-op (a module imported twice); a
        different object under a taken name raises.
        """
        self._check_name(name)

        def deco(o: T) -> T:
            self._check_free(name, o, reference_of(o))
            self._check_base(name, o, reference_of(o))
            self._objects[name] = o
            self._lazy.pop(name, None)
            return o

        return deco(obj) if obj is not None else deco

    def register_lazy(self, name: str, target: str) -> None:
        """Register a ``"module:attr"`` that is imported only when first asked for."""
        self._check_name(name)
        self._check_free(name, None, target)
        if name not in self._objects:
            self._lazy[name] = target

    def _check_name(self, name: str) -> None:
        if not name or "." in name:
            raise ValueError(f"{self.kind} names must be non-empty and cannot contain '.', which separates tags: {name!r}")

    def _check_free(self, name: str, obj: Any, target: str) -> None:
        """Refuse a second, different entry under ``name`` (the same one again is fine)."""
        if name in self._objects:
            held = self._objects[name]
            if held is obj or (obj is None and reference_of(held) == target):
                return
            where = reference_of(held)
        elif name in self._lazy:
            if self._lazy[name] == target:
                return
            where = self._lazy[name]
        else:
            return
        raise AfpbenchError(f"{self.kind} '{name}' is already registered ({where}); register {target} under another name.")

    def _load_plugins(self) -> None:
        if self._plugins_loaded or not self.entry_point_group:
            return
        self._plugins_loaded = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            dist = getattr(getattr(ep, "dist", None), "name", None) or "an installed package"
            if ep.name in self._objects or ep.name in self._lazy:
                # Bundled names win: a plugin cannot silently replace a bundled entry.
                if self._lazy.get(ep.name) != ep.value:
                    log.warning("%s: ignoring the %s '%s' of %s (%s): the name is taken by %s", self.entry_point_group, self.kind, ep.name, dist, ep.value, self.origin(ep.name))
                continue
            self._lazy[ep.name] = ep.value
            self._plugins[ep.name] = dist

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

    def origin(self, name: str) -> str:
        """Where the entry comes from, without importing it: ``module:attr``, plus the plugin's distribution."""
        base, _ = split_tag(name)
        self._load_plugins()
        if base in self._objects:
            ref = reference_of(self._objects[base])
        elif base in self._lazy:
            ref = self._lazy[base]
        else:
            raise did_you_mean(base, self.names(), self.kind)
        plugin = self._plugins.get(base)
        return f"{ref} (plugin from {plugin})" if plugin else ref

    def get(self, name: str) -> T:
        """The object registered under the base name of ``name`` (tags are ignored)."""
        base, _ = split_tag(name)
        self._load_plugins()
        if base in self._objects:
            return self._objects[base]
        if base in self._lazy:
            obj = load_object(self._lazy[base])
            self._check_base(base, obj, self.origin(base))
            self._objects[base] = obj
            del self._lazy[base]
            return obj
        raise did_you_mean(base, self.names(), self.kind)

    def _check_base(self, name: str, obj: Any, where: str) -> None:
        if self.base_cls is None:
            return
        base = load_object(self.base_cls) if isinstance(self.base_cls, str) else self.base_cls
        if not (isinstance(obj, type) and issubclass(obj, base)):
            what = obj.__name__ if isinstance(obj, type) else f"a {type(obj).__name__}"
            raise AfpbenchError(
                f"{self.kind} '{name}' ({where}) is {what}, not a subclass of {base.__module__}.{base.__qualname__}; "
                f"fix the entry (or the plugin that declares it)."
            )

    def _clear(self) -> None:
        """Forget every entry, plugins included (for tests of a registry of their own)."""
        self._objects.clear()
        self._lazy.clear()
        self._plugins.clear()
        self._plugins_loaded = False


# The registries of the project. Built-in entries are declared lazily by the modules
# that own each kind (afpbench.detectors, afpbench.generate, afpbench.sources) so that
# importing this module stays cheap.
DETECTORS: Registry[Any] = Registry("detector", entry_point_group="afpbench.detectors")
BACKENDS: Registry[Any] = Registry("backend", base_cls="afpbench.generate.base:Backend", entry_point_group="afpbench.backends")
SOURCES: Registry[Any] = Registry("source", base_cls="afpbench.sources.base:Source", entry_point_group="afpbench.sources")

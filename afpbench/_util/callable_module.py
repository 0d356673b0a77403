"""Modules that can be called as their main function.

The Python API exports ``afpbench.evaluate``, ``afpbench.build``, ``afpbench.train``,
``afpbench.audit``, ``afpbench.detect``, ``afpbench.leaderboard`` and ``afpbench.gallery``
as functions, and each is also the name of the module that defines it. Once a module is
imported, Python binds its name on the package to the module, hiding a function of the
same name. So the module itself is made callable: ``afpbench.evaluate(cfg)`` runs
``afpbench.evaluate.evaluate(cfg)`` whichever was imported first, and
``afpbench.evaluate.EvalConfig`` is still the module's attribute.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any


class CallableModule(types.ModuleType):
    """A module whose call runs its main function (``__main_function__``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__main_function__(*args, **kwargs)


def make_callable(module_name: str, function: Callable[..., Any]) -> None:
    """Make the module ``module_name`` callable as ``function`` (call at the end of that module)."""
    module = sys.modules[module_name]
    module.__main_function__ = function
    module.__class__ = CallableModule


__all__ = ["CallableModule", "make_callable"]

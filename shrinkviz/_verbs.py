"""Verbs that share their name with their module (``sv.prune`` / ``shrinkviz.prune``, ``sv.sweep`` /
``shrinkviz.sweep``, ``sv.pipeline`` / ``shrinkviz.pipeline``).

Importing a submodule binds it as an attribute of its package, replacing any function of the same name
there, so ``shrinkviz.prune`` is the module whatever ``__init__`` says. Making the module itself callable
keeps both spellings working: ``sv.prune(model, ...)`` runs the verb, ``sv.prune.mask_table(...)`` reaches
the module's other names.

Example:
    >>> import shrinkviz as sv
    >>> callable(sv.prune) and callable(sv.prune.mask_table)
    True
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any


def make_module_callable(module_name: str, verb: Callable[..., Any]) -> None:
    """Make ``sys.modules[module_name](...)`` call ``verb(...)``."""

    class _VerbModule(types.ModuleType):
        __doc__ = verb.__doc__

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return verb(*args, **kwargs)

    sys.modules[module_name].__class__ = _VerbModule

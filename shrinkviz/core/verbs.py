"""Verbs that share their name with their module (``sv.prune`` / ``shrinkviz.techniques.prune``,
``sv.sweep`` / ``shrinkviz.experiments.sweep``, ...).

Importing a submodule binds it as an attribute of its package, replacing any function of the same name
there. Making the module itself callable keeps both spellings working: ``sv.prune(model, ...)`` runs the
verb, ``sv.prune.mask_table(...)`` reaches the module's other names. The module carries the verb's
signature, and its call docstring is the verb's, so ``inspect.signature`` and Jupyter's Shift-Tab show the real parameters.

Example:
    >>> import inspect, sys, types
    >>> def scale(x, factor=2):
    ...     "Multiply x by factor."
    ...     return x * factor
    >>> module = sys.modules["scale_demo"] = types.ModuleType("scale_demo", "A module named like its verb.")
    >>> module.half = lambda x: x / 2
    >>> make_module_callable("scale_demo", scale)
    >>> module(3), module.half(3), str(inspect.signature(module))
    (6, 1.5, '(x, factor=2)')
    >>> module.__call__.__doc__, module.__doc__
    ('Multiply x by factor.', 'A module named like its verb.')
    >>> del sys.modules["scale_demo"]
"""

from __future__ import annotations

import functools
import inspect
import sys
import types
from collections.abc import Callable
from typing import Any


def make_module_callable(module_name: str, verb: Callable[..., Any]) -> None:
    """Make ``sys.modules[module_name](...)`` call ``verb(...)``; the module reports ``verb``'s signature and
    its call docstring is ``verb``'s (the module keeps its own docstring)."""
    module = sys.modules[module_name]

    class _VerbModule(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return verb(*args, **kwargs)

    functools.update_wrapper(_VerbModule.__call__, verb)
    module.__class__ = _VerbModule
    module.__signature__ = inspect.signature(verb)

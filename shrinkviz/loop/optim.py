"""torch.optim's SGD, Adam and AdamW, run without importing ``torch._dynamo`` (73 MiB of every process).

In torch 2.13 ``Optimizer.add_param_group``, ``zero_grad`` and every ``step`` are wrapped so that they
import ``torch._dynamo`` on first use, only to mark graph breaks for ``torch.compile``. In eager code the
import does nothing but cost memory: ``import torch`` leaves a process at 224 MiB resident and the first
``torch.optim.SGD(...)`` at 298 MiB (Intel Xeon and AMD EPYC alike), a large part of the peak of a sweep
worker that trains MnistNet. The classes here are torch's own optimizers (subclasses, so ``isinstance``
checks, ``param_groups``, ``state``, ``state_dict`` and the global step hooks that enforce pruning masks all
keep working) whose three methods call torch's undecorated implementations, found with
:func:`inspect.unwrap`, under the same grad mode torch's wrapper sets. The arithmetic is torch's, so the
parameters after any number of steps are bit-identical to ``torch.optim``'s (tested). Inside
``torch.compile`` (where dynamo is loaded anyway) they defer to torch's wrapped methods.

Example:
    >>> import sys, torch
    >>> from torch import nn
    >>> layer = nn.Linear(3, 2)
    >>> opt = SGD(layer.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    >>> opt.zero_grad(); layer(torch.ones(1, 3)).sum().backward(); opt.step()
    >>> isinstance(opt, torch.optim.SGD)
    True
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch.optim.optimizer import Optimizer

__all__ = ["SGD", "Adam", "AdamW"]


def _plain(method: Callable[..., Any]) -> Callable[..., Any]:
    """The undecorated function under torch's dynamo wrappers (and under the step hook wrapper, which
    ``Optimizer.__init__`` puts on a class's own ``step``: the hooks run once, from this class's step)."""
    return inspect.unwrap(method)


class _WithoutDynamo:
    """Mixed in before a ``torch.optim`` class: its three dynamo-wrapped methods, undecorated."""

    defaults: dict[str, Any]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if torch.compiler.is_compiling():
            return Optimizer.add_param_group(self, param_group)  # type: ignore[arg-type]
        return _plain(Optimizer.add_param_group)(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        if torch.compiler.is_compiling():
            return Optimizer.zero_grad(self, set_to_none)  # type: ignore[arg-type]
        return _plain(Optimizer.zero_grad)(self, set_to_none)

    def step(self, closure: Callable[[], float] | None = None) -> Any:
        torch_step = super().step  # type: ignore[misc]
        if torch.compiler.is_compiling():
            return torch_step(closure)
        with torch.set_grad_enabled(self.defaults["differentiable"]):  # what torch's wrapper sets
            return _plain(torch_step.__func__)(self, closure)


class SGD(_WithoutDynamo, torch.optim.SGD):
    """``torch.optim.SGD`` without the ``torch._dynamo`` import (see the module)."""


class Adam(_WithoutDynamo, torch.optim.Adam):
    """``torch.optim.Adam`` without the ``torch._dynamo`` import (see the module)."""


class AdamW(_WithoutDynamo, torch.optim.AdamW):
    """``torch.optim.AdamW`` without the ``torch._dynamo`` import (see the module)."""

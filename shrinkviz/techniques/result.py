"""The one result type of every compression verb: the compressed model and the history of its training.

``prune``, ``prune_channels``, ``iterative_prune``, ``finetune``, ``quantize``, ``distill`` and
``pipeline`` all return a :class:`Result` (``pipeline`` its subclass with the per-stage record). Each verb
also accepts a ``Result`` wherever it takes a model, so verbs chain: ``sv.quantize(sv.prune(m, data,
...), data)``. A ``Result`` unpacks as ``model, history = result``.

Example:
    >>> from torch import nn
    >>> res = Result(nn.Linear(2, 2), [{"stage": "finetune", "epoch": 1}])
    >>> model, history = res
    >>> isinstance(as_model(res), nn.Linear), res.history_frame()["stage"].tolist()
    (True, ['finetune'])
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass
class Result:
    """What a compression verb returns.

    Attributes:
        model: the compressed model (masked float, fake-quant or converted INT8, per the verb).
        history: one dict per training epoch (empty for a verb that did not train), with a ``stage`` label.
    """

    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.model, nn.Module):
            raise TypeError(f"Result.model must be an nn.Module, got {type(self.model).__name__}")
        self.history = [dict(row) for row in self.history]

    def __iter__(self) -> Iterator[Any]:
        yield self.model
        yield self.history

    def history_frame(self) -> Any:
        """The history as a pandas DataFrame (one row per epoch)."""
        import pandas as pd

        return pd.DataFrame(self.history)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"{type(self).__name__} has no attribute {name!r}: the compressed model is .model "
            f"(e.g. result.model.{name}) and its training record .history"
        )


def as_model(obj: Any, field_name: str = "model") -> nn.Module:
    """The model of a :class:`Result`, or ``obj`` itself when it is an ``nn.Module``.

    Raises:
        TypeError: ``obj`` is neither (naming the parameter).
    """
    if isinstance(obj, Result):
        return obj.model
    if isinstance(obj, nn.Module):
        return obj
    raise TypeError(f"{field_name}: expected an nn.Module or a shrinkviz Result, got {type(obj).__name__}")

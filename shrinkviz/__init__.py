"""shrinkviz: compress neural networks (prune, INT8 QAT, distill) and judge the result honestly.

Importing the package is cheap: the public names below load their modules on first use.

Example:
    >>> import shrinkviz as sv
    >>> "fashion_mnist" in sv.available_datasets()
    True
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    # data and models
    "load_dataset": "shrinkviz.data",
    "available_datasets": "shrinkviz.data",
    "create_model": "shrinkviz.models",
    "available_models": "shrinkviz.models",
    "register_model": "shrinkviz.models",
    # training
    "TrainConfig": "shrinkviz.train",
    "fit": "shrinkviz.train",
    "evaluate": "shrinkviz.train",
    "pretrained": "shrinkviz.zoo",
    # compression
    "prune": "shrinkviz.prune",
    "register_strategy": "shrinkviz.prune",
    "finetune": "shrinkviz.api",
    "measure": "shrinkviz.metrics",
    "quantize": "shrinkviz.quant",
    "distill": "shrinkviz.distill",
    "pipeline": "shrinkviz.pipeline",
    # experiments
    "Experiment": "shrinkviz.experiment",
    "sweep": "shrinkviz.sweep",
    "Store": "shrinkviz.store",
    "profile": "shrinkviz.profiles",
    "profiles": "shrinkviz.profiles",
    "schema": "shrinkviz.schema",
    # subpackages
    "data": "shrinkviz.data",
    "models": "shrinkviz.models",
    "viz": "shrinkviz.viz",
    "metrics": "shrinkviz.metrics",
    "quant": "shrinkviz.quant",
    "sparse": "shrinkviz.sparse",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'shrinkviz' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    value = module if module.__name__.endswith("." + name) else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

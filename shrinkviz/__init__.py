"""shrinkviz: compress neural networks (prune, INT8 QAT, distill) and judge the result honestly.

Importing the package is cheap: the public names below load their modules on first use. The package is
laid out in layers that only import downward: ``core`` (io, device, registries), ``data`` and ``models``,
``loop`` (the one training loop and its masks), ``techniques`` (prune, quant, distill, pipeline),
``deploy`` and ``metrics``, ``experiments`` (configs, runner, store, sweeps) and ``viz`` / ``cli``.

Example:
    >>> import shrinkviz as sv
    >>> "fashion_mnist" in sv.available_datasets()
    True
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
from typing import Any

from shrinkviz.core.version import __version__

_LAZY: dict[str, tuple[str, str | None]] = {
    # foundation: data, models, registries
    "load_dataset": ("shrinkviz.data", "load_dataset"),
    "available_datasets": ("shrinkviz.data", "available_datasets"),
    "register_dataset": ("shrinkviz.data", "register_dataset"),
    "create_model": ("shrinkviz.models", "create_model"),
    "available_models": ("shrinkviz.models", "available_models"),
    "register_model": ("shrinkviz.models", "register_model"),
    # the loop
    "TrainConfig": ("shrinkviz.loop.config", "TrainConfig"),
    "fit": ("shrinkviz.loop.train", "fit"),
    "evaluate": ("shrinkviz.loop.train", "evaluate"),
    "pretrained": ("shrinkviz.loop.zoo", "pretrained"),
    # techniques (verbs sharing their module's name are callable modules, see shrinkviz.core.verbs)
    "Result": ("shrinkviz.techniques.result", "Result"),
    "prune": ("shrinkviz.techniques.prune", None),
    "register_strategy": ("shrinkviz.techniques.prune", "register_strategy"),
    "available_strategies": ("shrinkviz.techniques.prune", "available_strategies"),
    "finetune": ("shrinkviz.techniques.finetune", None),
    "quantize": ("shrinkviz.techniques.quant", "quantize"),
    "distill": ("shrinkviz.techniques.distill", None),
    "pipeline": ("shrinkviz.techniques.pipeline", None),
    # measurement
    "measure": ("shrinkviz.metrics", "measure"),
    "available_runtimes": ("shrinkviz.deploy.runtimes", "available_runtimes"),
    "register_runtime": ("shrinkviz.deploy.runtimes", "register_runtime"),
    # experiments
    "Experiment": ("shrinkviz.experiments.experiment", "Experiment"),
    "sweep": ("shrinkviz.experiments.sweep", None),
    "Store": ("shrinkviz.experiments.store", "Store"),
    "register_technique": ("shrinkviz.experiments.techniques", "register_technique"),
    "available_techniques": ("shrinkviz.experiments.techniques", "available_techniques"),
    "profile": ("shrinkviz.experiments.profiles", "profile"),
    "profiles": ("shrinkviz.experiments.profiles", None),
    "schema": ("shrinkviz.experiments.schema", None),
    # subpackages
    "data": ("shrinkviz.data", None),
    "models": ("shrinkviz.models", None),
    "viz": ("shrinkviz.viz", None),
    "metrics": ("shrinkviz.metrics", None),
    "deploy": ("shrinkviz.deploy", None),
    "quant": ("shrinkviz.techniques.quant", None),
    "sparse": ("shrinkviz.sparse", None),
}

MOVED = {
    "shrinkviz.io": "shrinkviz.core.io",
    "shrinkviz.device": "shrinkviz.core.device",
    "shrinkviz.compat": "shrinkviz.core.compat",
    "shrinkviz.train": "shrinkviz.loop.train (TrainConfig and PRESETS: shrinkviz.loop.config)",
    "shrinkviz.zoo": "shrinkviz.loop.zoo",
    "shrinkviz.api": "shrinkviz.techniques.finetune",
    "shrinkviz.prune": "shrinkviz.techniques.prune (masks: shrinkviz.loop.masks)",
    "shrinkviz.quant": "shrinkviz.techniques.quant (export: shrinkviz.deploy.export)",
    "shrinkviz.distill": "shrinkviz.techniques.distill",
    "shrinkviz.pipeline": "shrinkviz.techniques.pipeline",
    "shrinkviz.stats": "shrinkviz.metrics.stats",
    "shrinkviz.report": "shrinkviz.viz.report",
    **{
        f"shrinkviz.{name}": f"shrinkviz.experiments.{name}"
        for name in ("schema", "specs", "experiment", "runner", "store", "sweep", "executors", "profiles")
    },
}
"""Modules of shrinkviz 0.1 that moved when the package was laid out in layers: importing an old path
raises an ImportError naming the new one."""

__all__ = sorted(_LAZY) + ["__version__"]


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        for old, new in MOVED.items():
            if fullname == old or fullname.startswith(old + "."):
                raise ModuleNotFoundError(f"{fullname} moved: import from {new}", name=fullname)
        return None


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'shrinkviz' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

"""The sections of an :class:`~shrinkviz.experiments.experiment.Experiment`: one frozen, validated dataclass per factor.

Each section validates on construction and names the full field path in its errors
(``Experiment.prune.compression=0.5: must be >= 1``), with the allowed values. Registries (datasets,
models, training presets, pruning strategies, latency runtimes) are consulted lazily, so a strategy
registered at run time is accepted.

Example:
    >>> PruneSpec("random", 4).compression
    4.0
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass
from typing import Any, ClassVar

from shrinkviz.core.registry import did_you_mean
from shrinkviz.loop.config import PRECISIONS, precision_label
from shrinkviz.techniques.distill import ALPHA, TEMPERATURE
from shrinkviz.techniques.pipeline import DEFAULT_EPOCHS
from shrinkviz.techniques.pipeline import STAGES as PIPELINE_STAGES
from shrinkviz.techniques.prune.strategies import SCORE_BATCHES as SCORE_BATCHES_DEFAULT

STAGES = "".join(PIPELINE_STAGES)
"""Pipeline stage letters: P = prune + finetune, Q = INT8 quantization, D = knowledge distillation."""
QUANT_METHODS = ("none", "qat", "ptq")
METHODS = ("baseline", "prune", "quant", "distill", "pipeline")
RECIPE_DEFAULT = "default"


def _bad(path: str, value: Any, why: str) -> ValueError:
    return ValueError(f"{path}={value!r}: {why}")


def _int(path: str, value: Any, lo: int | None = None, optional: bool = False) -> int | None:
    """An int (integral floats accepted, bools refused) >= lo, or None when optional."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _bad(path, value, "must be a whole number" + (" or None" if optional else ""))
    if not isinstance(value, numbers.Integral):
        if not (math.isfinite(value) and float(value).is_integer()):
            raise _bad(path, value, "must be a whole number")
    out = int(value)
    if lo is not None and out < lo:
        raise _bad(path, value, f"must be >= {lo}")
    return out


def _float(path: str, value: Any, lo: float, hi: float = math.inf, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise _bad(path, value, "must be a finite number")
    out = float(value)
    if out < lo or (lo_open and out == lo) or out > hi:
        span = (
            f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
            if math.isfinite(hi)
            else f"{'>' if lo_open else '>='} {lo:g}"
        )
        raise _bad(path, value, f"must be {'in ' if math.isfinite(hi) else ''}{span}")
    return out


def _choice(path: str, value: Any, allowed: list[str] | tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        hint = did_you_mean(value, allowed).strip()
        raise _bad(
            path, value, f"{hint + ' ' if hint else ''}allowed values: {', '.join(repr(a) for a in allowed)}"
        )
    return value


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


class _Section:
    """Shared behaviour of the config sections: dict round-trip with unknown fields rejected."""

    _path: ClassVar[str] = ""
    _primary: ClassVar[str] = ""  # the field a plain string sets (Experiment(data="digits"))
    _when_set: ClassVar[tuple[str, ...]] = ()
    """Fields added after runs were stored: written into the config (and so the run id) only when they
    differ from their default, so earlier runs keep their ids."""

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if f.name not in self._when_set or getattr(self, f.name) != f.default
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        if not isinstance(data, dict):
            raise _bad(cls._path, data, "must be a mapping of its fields")
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = [k for k in data if k not in names]
        if unknown:
            hint = did_you_mean(unknown[0], names)
            raise ValueError(
                f"{cls._path}: unknown field(s) {', '.join(f'{cls._path}.{k}' for k in unknown)};"
                f"{hint} valid fields: {', '.join(names)}"
            )
        return cls(**data)


@dataclass(frozen=True)
class DataSpec(_Section):
    """The dataset (a ``shrinkviz.data`` registry name, or ``imagefolder`` with a ``path``) and optional
    sizes of its first examples per split.

    ``path`` is written into the config (and so into the run id) only when set, so runs on registry
    datasets keep their ids; so is ``val_fraction`` when it is not the default 0.1. ``val_fraction=0`` is
    ShrinkBench's split: baseline and finetuning train on the whole official train split and validate on
    the test split (see ``shrinkviz.data.load_dataset``).
    """

    _path: ClassVar[str] = "Experiment.data"
    _when_set: ClassVar[tuple[str, ...]] = ("path", "val_fraction")
    _primary: ClassVar[str] = "name"
    name: str = "fashion_mnist"
    train: int | None = None
    val: int | None = None
    test: int | None = None
    path: str = ""
    val_fraction: float = 0.1

    def __post_init__(self) -> None:
        from shrinkviz.data import available_datasets

        _choice(f"{self._path}.name", self.name, available_datasets())
        _set(self, "val_fraction", _float(f"{self._path}.val_fraction", self.val_fraction, 0.0, 0.99))
        for split in ("train", "val", "test"):
            _set(self, split, _int(f"{self._path}.{split}", getattr(self, split), 1, optional=True))
        if not isinstance(self.path, str):
            raise _bad(f"{self._path}.path", self.path, "must be a folder path (a string)")
        if self.name == "imagefolder" and not self.path:
            raise _bad(
                f"{self._path}.path",
                self.path,
                "dataset 'imagefolder' needs path=<folder with train/ and val/>",
            )
        if self.path and self.name != "imagefolder":
            raise _bad(
                f"{self._path}.path", self.path, f"only name='imagefolder' takes a path, not {self.name!r}"
            )

    @property
    def subset(self) -> tuple[int | None, int | None, int | None] | None:
        """(train, val, test) sizes, or None for the whole dataset."""
        sizes = (self.train, self.val, self.test)
        return None if sizes == (None, None, None) else sizes


@dataclass(frozen=True)
class BaselineSpec(_Section):
    """The pretrained baseline: ``shrinkviz.pretrained(model, data, recipe, seed, epochs=..., precision=...)``.

    ``precision="bf16"`` trains it under bfloat16 autocast (see :class:`FinetuneSpec`): a different
    baseline with its own checkpoint, whose ``baseline_recipe`` column reads ``<recipe>+bf16``. Written
    into the config only when not ``fp32``."""

    _path: ClassVar[str] = "Experiment.baseline"
    _primary: ClassVar[str] = "recipe"
    _when_set: ClassVar[tuple[str, ...]] = ("precision",)
    recipe: str = RECIPE_DEFAULT
    seed: int = 0
    epochs: int | None = None
    precision: str = "fp32"

    def __post_init__(self) -> None:
        from shrinkviz.loop.train import PRESETS

        _choice(f"{self._path}.recipe", self.recipe, [RECIPE_DEFAULT, *sorted(PRESETS)])
        _set(self, "seed", _int(f"{self._path}.seed", self.seed, 0))
        _set(self, "epochs", _int(f"{self._path}.epochs", self.epochs, 1, optional=True))
        _choice(f"{self._path}.precision", self.precision, PRECISIONS)

    @property
    def label(self) -> str:
        """The ``baseline_recipe`` column: the recipe, with ``+bf16`` when trained in bfloat16."""
        return precision_label(self.recipe, self.precision)


def _strategies() -> tuple[str, ...]:
    """The names of the live pruning strategy registry."""
    from shrinkviz.techniques.prune import available_strategies

    return tuple(available_strategies())


@dataclass(frozen=True)
class PruneSpec(_Section):
    """Unstructured pruning: a ``shrinkviz.techniques.prune`` strategy and a target compression (``''`` / 1 = off)."""

    _path: ClassVar[str] = "Experiment.prune"
    _when_set: ClassVar[tuple[str, ...]] = ("bias", "score_batches")
    _primary: ClassVar[str] = "strategy"
    strategy: str = ""
    compression: float = 1.0
    bias: bool = False
    """Also prune Conv2d / Linear biases (ShrinkBench does); written into the config only when True."""
    score_batches: int = SCORE_BATCHES_DEFAULT
    """Training batches (of 128) that gradient and activation scores average over; ShrinkBench uses 1.
    Written into the config only when not the default."""

    def __post_init__(self) -> None:
        _choice(f"{self._path}.strategy", self.strategy, ("", *_strategies()))
        _set(self, "compression", _float(f"{self._path}.compression", self.compression, 1.0))
        if not isinstance(self.bias, bool):
            raise _bad(f"{self._path}.bias", self.bias, "must be True or False")
        _set(self, "score_batches", _int(f"{self._path}.score_batches", self.score_batches, 1))
        if not self.strategy and self.compression != 1.0:
            raise _bad(
                f"{self._path}.compression",
                self.compression,
                "needs Experiment.prune.strategy (no strategy means no pruning, compression 1)",
            )


@dataclass(frozen=True)
class FinetuneSpec(_Section):
    """Training of every compression stage (finetuning after pruning, QAT, distillation, pipeline stages):
    a ``shrinkviz.loop.train.PRESETS`` name, an optional epoch override, and optionally only the first
    ``examples`` training images (the baseline is always trained on the whole ``data`` spec), and the
    arithmetic of the training steps: ``precision="bf16"`` trains under bfloat16 autocast (an epoch in
    ~0.65x the time on CPUs with native bfloat16), with different (not identical) numbers; evaluation stays float32
    (``shrinkviz.loop.config.TrainConfig.precision``). Written into the config only when not ``fp32``;
    the ``finetune`` column of such a run reads ``<preset>+bf16``, so it never sits unlabelled beside
    float32 runs. The baseline has its own ``precision`` (:class:`BaselineSpec`)."""

    _path: ClassVar[str] = "Experiment.finetune"
    _primary: ClassVar[str] = "preset"
    _when_set: ClassVar[tuple[str, ...]] = ("precision",)
    preset: str = "shrinkbench"
    epochs: int | None = None
    examples: int | None = None
    precision: str = "fp32"

    def __post_init__(self) -> None:
        from shrinkviz.loop.train import PRESETS

        _choice(f"{self._path}.preset", self.preset, sorted(PRESETS))
        _set(self, "epochs", _int(f"{self._path}.epochs", self.epochs, 1, optional=True))
        _set(self, "examples", _int(f"{self._path}.examples", self.examples, 1, optional=True))
        _choice(f"{self._path}.precision", self.precision, PRECISIONS)

    @property
    def label(self) -> str:
        """The ``finetune`` column: the preset name, with ``+bf16`` when trained in bfloat16."""
        return precision_label(self.preset, self.precision)

    def train_config(self) -> Any:
        """The ``TrainConfig`` this spec stands for."""
        from shrinkviz.loop.train import TrainConfig

        cfg = TrainConfig.preset(self.preset).replace(precision=self.precision)
        return cfg if self.epochs is None else cfg.replace(epochs=self.epochs)


@dataclass(frozen=True)
class QuantSpec(_Section):
    """INT8 quantization: ``none``, ``qat`` (quantization-aware training) or ``ptq`` (post-training)."""

    _path: ClassVar[str] = "Experiment.quant"
    _primary: ClassVar[str] = "method"
    method: str = "none"
    epochs: int | None = None  # QAT epochs (None: the finetuning preset's)

    def __post_init__(self) -> None:
        _choice(f"{self._path}.method", self.method, QUANT_METHODS)
        _set(self, "epochs", _int(f"{self._path}.epochs", self.epochs, 1, optional=True))


@dataclass(frozen=True)
class DistillSpec(_Section):
    """Knowledge distillation from the baseline: ``alpha * KD + (1 - alpha) * CE`` at ``temperature``.

    On its own, ``student`` (an architecture name; ``''`` = the baseline's architecture) is trained from
    scratch with the baseline as teacher; inside a pipeline the D stage distils into the compressed model.
    """

    _path: ClassVar[str] = "Experiment.distill"
    _primary: ClassVar[str] = ""
    enabled: bool = False
    temperature: float = TEMPERATURE
    alpha: float = ALPHA
    epochs: int | None = None
    student: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise _bad(f"{self._path}.enabled", self.enabled, "allowed values: True, False")
        _set(self, "temperature", _float(f"{self._path}.temperature", self.temperature, 0.0, lo_open=True))
        _set(self, "alpha", _float(f"{self._path}.alpha", self.alpha, 0.0, 1.0))
        _set(self, "epochs", _int(f"{self._path}.epochs", self.epochs, 1, optional=True))
        if self.student:
            from shrinkviz.models import available_models

            _choice(f"{self._path}.student", self.student, available_models())
        elif not isinstance(self.student, str):
            raise _bad(f"{self._path}.student", self.student, "must be an architecture name or ''")


@dataclass(frozen=True)
class PipelineSpec(_Section):
    """Ordered stages (``"PQD"``, ``"QPD"``, ...) with one epoch count per stage (Zhou & Shen: 20/40/40)."""

    _path: ClassVar[str] = "Experiment.pipeline"
    _primary: ClassVar[str] = "order"
    order: str = ""
    epochs: tuple[int, ...] = DEFAULT_EPOCHS

    def __post_init__(self) -> None:
        path = f"{self._path}.order"
        if (
            not isinstance(self.order, str)
            or set(self.order) - set(STAGES)
            or len(set(self.order)) != len(self.order)
        ):
            raise _bad(
                path, self.order, "must be '' or distinct letters of 'PQDF' such as 'PQD', 'QPD', 'PD', 'PQF'"
            )
        if isinstance(self.epochs, str | bytes) or not hasattr(self.epochs, "__iter__"):
            raise _bad(f"{self._path}.epochs", self.epochs, "must be a list of whole numbers >= 1")
        _set(self, "epochs", tuple(_int(f"{self._path}.epochs", e, 1) for e in self.epochs))
        if self.order and len(self.epochs) != len(self.order):
            raise _bad(
                f"{self._path}.epochs",
                self.epochs,
                f"needs one entry per stage of order {self.order!r} ({len(self.order)} entries)",
            )


def _runtimes() -> tuple[str, ...]:
    from shrinkviz.deploy.runtimes import available_runtimes

    return tuple(available_runtimes())


@dataclass(frozen=True)
class LatencySpec(_Section):
    """How latency is measured (``shrinkviz.metrics.latency.measure_latency``): the runtimes (the first
    fills ``latency_ms_p50`` / ``_p90``, others add ``latency_ms_p50_<runtime>``; ``[]`` skips latency),
    pinned threads, batch size, untimed warm-up calls, and at least ``rounds`` timed calls lasting at least
    ``min_time_s`` seconds.

    ``baseline_runtime`` is the runtime the dense baseline is timed on beside the run: ``''`` (the default)
    the run's own runtime, so ``latency_vs_baseline`` is what compressing bought on that runtime (the
    ``sparse`` runtime, which refuses a model without zeros, compares with the baseline on ``eager``);
    ``'eager'`` (or another runtime) compares every runtime with one reference, so the ratios also rank the
    runtimes. It is written into the config (and the run id) only when set.
    """

    _path: ClassVar[str] = "Experiment.latency"
    _when_set: ClassVar[tuple[str, ...]] = ("baseline_runtime",)
    _primary: ClassVar[str] = ""
    runtimes: tuple[str, ...] = ("eager",)
    threads: int = 1
    batch: int = 1
    rounds: int = 50
    warmup: int = 5
    min_time_s: float = 1.0
    baseline_runtime: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.runtimes, str):
            _set(self, "runtimes", (self.runtimes,))
        if not hasattr(self.runtimes, "__iter__"):
            raise _bad(f"{self._path}.runtimes", self.runtimes, f"must be a list of {', '.join(_runtimes())}")
        runtimes = tuple(self.runtimes)
        for r in runtimes:
            _choice(f"{self._path}.runtimes", r, _runtimes())
        if len(set(runtimes)) != len(runtimes):
            raise _bad(f"{self._path}.runtimes", runtimes, "lists a runtime twice; give each runtime once")
        _set(self, "runtimes", runtimes)
        for name, lo in (("threads", 1), ("batch", 1), ("rounds", 1), ("warmup", 0)):
            _set(self, name, _int(f"{self._path}.{name}", getattr(self, name), lo))
        _set(self, "min_time_s", _float(f"{self._path}.min_time_s", self.min_time_s, 0.0))
        if self.baseline_runtime:
            from shrinkviz.deploy.runtimes import reference_runtimes

            _choice(f"{self._path}.baseline_runtime", self.baseline_runtime, reference_runtimes())


@dataclass(frozen=True)
class TechniqueSpec(_Section):
    """A registered technique of your own (``shrinkviz.register_technique``) and its parameters (a JSON
    mapping handed to the handler as ``exp.technique.params``); ``''`` = the built-in sections decide.

    A config with no technique set serialises without this section, so the run ids of built-in runs do not
    depend on it.
    """

    _path: ClassVar[str] = "Experiment.technique"
    _primary: ClassVar[str] = "name"
    name: str = ""
    params: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        from shrinkviz.experiments.techniques import BUILTIN_TECHNIQUES, available_techniques

        own = [n for n in available_techniques() if n not in BUILTIN_TECHNIQUES]
        _choice(f"{self._path}.name", self.name, ["", *own])
        if not isinstance(self.params, dict):
            raise _bad(f"{self._path}.params", self.params, "must be a mapping of parameter names to values")
        try:
            json.dumps(self.params, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise _bad(
                f"{self._path}.params", self.params, f"must be JSON (numbers, strings, lists, dicts): {exc}"
            ) from None
        _set(self, "params", json.loads(json.dumps(self.params, sort_keys=True)))
        if self.name:
            from shrinkviz.experiments.techniques import check_params

            check_params(self.name, self.params)


SECTIONS: dict[str, type[_Section]] = {
    "data": DataSpec,
    "baseline": BaselineSpec,
    "prune": PruneSpec,
    "finetune": FinetuneSpec,
    "quant": QuantSpec,
    "distill": DistillSpec,
    "pipeline": PipelineSpec,
    "latency": LatencySpec,
    "technique": TechniqueSpec,
}


def _section(name: str, value: Any) -> _Section:
    cls = SECTIONS[name]
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        return cls.from_dict(value)
    if isinstance(value, str) and cls._primary:
        return cls(**{cls._primary: value})
    raise _bad(
        f"Experiment.{name}",
        value,
        f"must be a {cls.__name__}, a dict of its fields"
        + (f" or a string (its {cls._primary})" if cls._primary else ""),
    )

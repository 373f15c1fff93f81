"""Experiment configs: frozen dataclasses for every factor of one run, validated, JSON round-trip, run ids.

An :class:`Experiment` is everything that decides one result row: the data, the architecture, the
pretrained baseline (recipe and seed), the compression technique(s) and their hyperparameters, the latency
protocol and the seed. Two equal configs hash to the same :attr:`Experiment.run_id` on any machine (the
id is a sha256 of the sorted-keys JSON with floats normalised); any change gives a new id, which is how
the store knows a run is already done.

Techniques: at most one of ``prune`` (a strategy is set), ``quant`` (method qat/ptq) or ``distill``
(enabled) on its own; several are combined with ``pipeline.order`` (e.g. ``"PQD"``), whose letters must
be exactly the techniques that are switched on (a single letter runs one technique through
``shrinkviz.pipeline`` with its epoch allocation, the ablation's single-technique baselines). :attr:`Experiment.method` names what the run does.

Example:
    >>> base = Experiment(model="tiny_mlp", data="digits")
    >>> base.method
    'baseline'
    >>> exp = base.replace(**{"prune.strategy": "random", "prune.compression": 8})
    >>> exp.method, exp.prune.compression, exp.run_id == Experiment.from_json(exp.to_json()).run_id
    ('prune', 8.0, True)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, ClassVar

STAGES = "PQD"
"""Pipeline stage letters: P = prune + finetune, Q = INT8 quantization, D = knowledge distillation."""
QUANT_METHODS = ("none", "qat", "ptq")
LATENCY_RUNTIMES = ("eager", "compiled", "onnxruntime")  # fallback when shrinkviz.metrics.runtimes is absent
METHODS = ("baseline", "prune", "quant", "distill", "pipeline")
RECIPE_DEFAULT = "default"

ALIASES: dict[str, str] = {
    "dataset": "data.name", "strategy": "prune.strategy", "compression": "prune.compression",
    "recipe": "baseline.recipe", "baseline_recipe": "baseline.recipe", "baseline_seed": "baseline.seed",
    "finetune_preset": "finetune.preset", "finetune_epochs": "finetune.epochs",
    "quantization": "quant.method", "order": "pipeline.order", "stage_epochs": "pipeline.epochs",
    "temperature": "distill.temperature", "alpha": "distill.alpha",
}
"""Friendly names accepted by :meth:`Experiment.replace` and ``sweep`` for the common dotted paths."""


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
        span = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]" if math.isfinite(hi) else f"{'>' if lo_open else '>='} {lo:g}"
        raise _bad(path, value, f"must be {'in ' if math.isfinite(hi) else ''}{span}")
    return out


def _choice(path: str, value: Any, allowed: list[str] | tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise _bad(path, value, f"allowed values: {', '.join(repr(a) for a in allowed)}")
    return value


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


class _Section:
    """Shared behaviour of the config sections: dict round-trip with unknown fields rejected."""

    _path: ClassVar[str] = ""
    _primary: ClassVar[str] = ""  # the field a plain string sets (Experiment(data="digits"))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        if not isinstance(data, dict):
            raise _bad(cls._path, data, "must be a mapping of its fields")
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = [k for k in data if k not in names]
        if unknown:
            raise ValueError(f"{cls._path}: unknown field(s) {', '.join(f'{cls._path}.{k}' for k in unknown)}; "
                             f"valid fields: {', '.join(names)}")
        return cls(**data)


@dataclass(frozen=True)
class DataSpec(_Section):
    """The dataset (a ``shrinkviz.data`` registry name) and optional sizes of its first examples per split."""

    _path: ClassVar[str] = "Experiment.data"
    _primary: ClassVar[str] = "name"
    name: str = "fashion_mnist"
    train: int | None = None
    val: int | None = None
    test: int | None = None

    def __post_init__(self) -> None:
        from shrinkviz.data import available_datasets

        _choice(f"{self._path}.name", self.name, available_datasets())
        for split in ("train", "val", "test"):
            _set(self, split, _int(f"{self._path}.{split}", getattr(self, split), 1, optional=True))

    @property
    def subset(self) -> tuple[int | None, int | None, int | None] | None:
        """(train, val, test) sizes, or None for the whole dataset."""
        sizes = (self.train, self.val, self.test)
        return None if sizes == (None, None, None) else sizes


@dataclass(frozen=True)
class BaselineSpec(_Section):
    """The pretrained baseline: ``shrinkviz.pretrained(model, data, recipe, seed, epochs=...)``."""

    _path: ClassVar[str] = "Experiment.baseline"
    _primary: ClassVar[str] = "recipe"
    recipe: str = RECIPE_DEFAULT
    seed: int = 0
    epochs: int | None = None

    def __post_init__(self) -> None:
        from shrinkviz.train import PRESETS

        _choice(f"{self._path}.recipe", self.recipe, [RECIPE_DEFAULT, *sorted(PRESETS)])
        _set(self, "seed", _int(f"{self._path}.seed", self.seed, 0))
        _set(self, "epochs", _int(f"{self._path}.epochs", self.epochs, 1, optional=True))


def _strategies() -> tuple[str, ...] | None:
    """The pruning strategy registry, or None while ``shrinkviz.prune`` does not exist yet."""
    try:
        from shrinkviz.prune import available_strategies
    except ImportError:
        return None
    return tuple(available_strategies())


@dataclass(frozen=True)
class PruneSpec(_Section):
    """Unstructured pruning: a ``shrinkviz.prune`` strategy and a target compression (``''`` / 1 = off)."""

    _path: ClassVar[str] = "Experiment.prune"
    _primary: ClassVar[str] = "strategy"
    strategy: str = ""
    compression: float = 1.0

    def __post_init__(self) -> None:
        registry = _strategies()
        if not isinstance(self.strategy, str) or (registry is not None and self.strategy not in ("", *registry)):
            allowed = ["''", *map(repr, registry or ())]
            raise _bad(f"{self._path}.strategy", self.strategy, f"allowed values: {', '.join(allowed)}")
        _set(self, "compression", _float(f"{self._path}.compression", self.compression, 1.0))
        if not self.strategy and self.compression != 1.0:
            raise _bad(f"{self._path}.compression", self.compression,
                       "needs Experiment.prune.strategy (no strategy means no pruning, compression 1)")


@dataclass(frozen=True)
class FinetuneSpec(_Section):
    """Training of every compression stage (finetuning after pruning, QAT, distillation, pipeline stages):
    a ``shrinkviz.train.PRESETS`` name, an optional epoch override, and optionally only the first
    ``examples`` training images (the baseline is always trained on the whole ``data`` spec)."""

    _path: ClassVar[str] = "Experiment.finetune"
    _primary: ClassVar[str] = "preset"
    preset: str = "shrinkbench"
    epochs: int | None = None
    examples: int | None = None

    def __post_init__(self) -> None:
        from shrinkviz.train import PRESETS

        _choice(f"{self._path}.preset", self.preset, sorted(PRESETS))
        _set(self, "epochs", _int(f"{self._path}.epochs", self.epochs, 1, optional=True))
        _set(self, "examples", _int(f"{self._path}.examples", self.examples, 1, optional=True))

    def train_config(self) -> Any:
        """The ``TrainConfig`` this spec stands for."""
        from shrinkviz.train import TrainConfig

        cfg = TrainConfig.preset(self.preset)
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
    temperature: float = 4.0
    alpha: float = 0.9
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
    epochs: tuple[int, ...] = (20, 40, 40)

    def __post_init__(self) -> None:
        path = f"{self._path}.order"
        if not isinstance(self.order, str) or set(self.order) - set(STAGES) or len(set(self.order)) != len(self.order):
            raise _bad(path, self.order, "must be '' or distinct letters of 'PQD' such as 'PQD', 'QPD', 'PD'")
        if isinstance(self.epochs, str | bytes) or not hasattr(self.epochs, "__iter__"):
            raise _bad(f"{self._path}.epochs", self.epochs, "must be a list of whole numbers >= 1")
        _set(self, "epochs", tuple(_int(f"{self._path}.epochs", e, 1) for e in self.epochs))
        if self.order and len(self.epochs) != len(self.order):
            raise _bad(f"{self._path}.epochs", self.epochs,
                       f"needs one entry per stage of order {self.order!r} ({len(self.order)} entries)")


def _runtimes() -> tuple[str, ...]:
    try:
        from shrinkviz.metrics.runtimes import RUNTIMES
    except ImportError:
        return LATENCY_RUNTIMES
    return tuple(RUNTIMES)


@dataclass(frozen=True)
class LatencySpec(_Section):
    """How latency is measured (``shrinkviz.metrics.latency.measure_latency``): the runtimes (the first
    fills ``latency_ms_p50`` / ``_p90``, others add ``latency_ms_p50_<runtime>``; ``[]`` skips latency),
    pinned threads, batch size, untimed warm-up calls, and at least ``rounds`` timed calls lasting at least
    ``min_time_s`` seconds."""

    _path: ClassVar[str] = "Experiment.latency"
    _primary: ClassVar[str] = ""
    runtimes: tuple[str, ...] = ("eager",)
    threads: int = 1
    batch: int = 1
    rounds: int = 50
    warmup: int = 5
    min_time_s: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.runtimes, str):
            _set(self, "runtimes", (self.runtimes,))
        if not hasattr(self.runtimes, "__iter__"):
            raise _bad(f"{self._path}.runtimes", self.runtimes, f"must be a list of {', '.join(_runtimes())}")
        runtimes = tuple(self.runtimes)
        for r in runtimes:
            _choice(f"{self._path}.runtimes", r, _runtimes())
        if len(set(runtimes)) != len(runtimes):
            raise _bad(f"{self._path}.runtimes", runtimes, "lists a runtime twice")
        _set(self, "runtimes", runtimes)
        for name, lo in (("threads", 1), ("batch", 1), ("rounds", 1), ("warmup", 0)):
            _set(self, name, _int(f"{self._path}.{name}", getattr(self, name), lo))
        _set(self, "min_time_s", _float(f"{self._path}.min_time_s", self.min_time_s, 0.0))


SECTIONS: dict[str, type[_Section]] = {
    "data": DataSpec, "baseline": BaselineSpec, "prune": PruneSpec, "finetune": FinetuneSpec,
    "quant": QuantSpec, "distill": DistillSpec, "pipeline": PipelineSpec, "latency": LatencySpec,
}


def _section(name: str, value: Any) -> _Section:
    cls = SECTIONS[name]
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        return cls.from_dict(value)
    if isinstance(value, str) and cls._primary:
        return cls(**{cls._primary: value})
    raise _bad(f"Experiment.{name}", value, f"must be a {cls.__name__}, a dict of its fields"
               + (f" or a string (its {cls._primary})" if cls._primary else ""))


def _normalize(obj: Any) -> Any:
    """Canonical JSON values: floats rounded to 12 significant digits (and -0.0 -> 0.0), tuples -> lists."""
    if isinstance(obj, dict):
        return {k: _normalize(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_normalize(v) for v in obj]
    if isinstance(obj, float):
        return float(f"{obj:.12g}") + 0.0
    return obj


@dataclass(frozen=True)
class Experiment:
    """One run's complete config. Sections may be given as specs, dicts of their fields, or (for data,
    baseline, prune, finetune, quant and pipeline) a string setting their main field.

    Raises:
        ValueError: naming the field path (``Experiment.prune.compression``) and the allowed values.

    Example:
        >>> exp = Experiment(model="tiny_cnn", data={"name": "digits", "train": 256},
        ...                  prune=PruneSpec("global_weight", 4), finetune=FinetuneSpec("adam_fast", 1))
        >>> exp.method, exp.data.train
        ('prune', 256)
    """

    model: str = "mnistnet"
    data: DataSpec = field(default_factory=DataSpec)
    baseline: BaselineSpec = field(default_factory=BaselineSpec)
    prune: PruneSpec = field(default_factory=PruneSpec)
    finetune: FinetuneSpec = field(default_factory=FinetuneSpec)
    quant: QuantSpec = field(default_factory=QuantSpec)
    distill: DistillSpec = field(default_factory=DistillSpec)
    pipeline: PipelineSpec = field(default_factory=PipelineSpec)
    latency: LatencySpec = field(default_factory=LatencySpec)
    seed: int = 0

    def __post_init__(self) -> None:
        from shrinkviz.models import available_models

        _choice("Experiment.model", self.model, available_models())
        for name in SECTIONS:
            _set(self, name, _section(name, getattr(self, name)))
        _set(self, "seed", _int("Experiment.seed", self.seed, 0))
        on = {"P": bool(self.prune.strategy), "Q": self.quant.method != "none", "D": self.distill.enabled}
        settings = {"P": f"prune.strategy={self.prune.strategy!r}", "Q": f"quant.method={self.quant.method!r}",
                    "D": "distill.enabled=True"}
        order = self.pipeline.order
        if not order and sum(on.values()) > 1:
            both = " and ".join(settings[k] for k in STAGES if on[k])
            raise ValueError(f"Experiment.pipeline.order='': {both} are set together; combine techniques with "
                             f"pipeline.order, one letter per technique (e.g. "
                             f"{''.join(k for k in STAGES if on[k])!r})")
        if order:
            for letter, field_path in (("P", "prune.strategy"), ("Q", "quant.method"), ("D", "distill.enabled")):
                if on[letter] != (letter in order):
                    have = settings[letter] if on[letter] else f"{field_path} is off"
                    raise ValueError(f"Experiment.pipeline.order={order!r}: {have}, but the order's letters must be "
                                     f"exactly the techniques switched on ({''.join(k for k in STAGES if on[k])!r})")
            if "Q" in order and self.quant.method != "qat":
                raise _bad("Experiment.quant.method", self.quant.method, "the pipeline's Q stage is INT8 QAT; "
                           "allowed values with a Q in pipeline.order: 'qat'")

    # -- derived -----------------------------------------------------------------------------------
    @property
    def method(self) -> str:
        """``baseline``, ``prune``, ``quant``, ``distill`` or ``pipeline``."""
        if self.pipeline.order:
            return "pipeline"
        if self.prune.strategy:
            return "prune"
        if self.quant.method != "none":
            return "quant"
        return "distill" if self.distill.enabled else "baseline"

    @functools.cached_property
    def run_id(self) -> str:
        """16 hex digits of the sha256 of :meth:`canonical_json`: equal configs, equal ids, anywhere."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()[:16]

    @property
    def label(self) -> str:
        """A short human description, e.g. ``'tiny_cnn/digits prune global_weight x4 s0'``."""
        parts = [f"{self.model}/{self.data.name}", self.method]
        if self.pipeline.order:
            parts.append(self.pipeline.order)
        if self.prune.strategy:
            parts.append(f"{self.prune.strategy} x{self.prune.compression:g}")
        if self.quant.method != "none":
            parts.append(self.quant.method)
        return " ".join(parts + [f"s{self.seed}"])

    def factors(self) -> dict[str, Any]:
        """The config columns of a result row (``shrinkviz.schema.FACTOR_COLUMNS``)."""
        return {"dataset": self.data.name, "model": self.model, "baseline_recipe": self.baseline.recipe,
                "baseline_seed": self.baseline.seed, "method": self.method, "strategy": self.prune.strategy,
                "compression": self.prune.compression, "finetune": self.finetune.preset,
                "order": self.pipeline.order, "quantization": self.quant.method, "seed": self.seed}

    # -- serialisation -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (JSON-ready)."""
        out: dict[str, Any] = {"model": self.model, "seed": self.seed}
        out.update({name: getattr(self, name).to_dict() for name in SECTIONS})
        return out

    def canonical_json(self) -> str:
        """Sorted-keys, compact JSON with normalised floats: the text the run id hashes."""
        return json.dumps(_normalize(self.to_dict()), sort_keys=True, separators=(",", ":"))

    def to_json(self, indent: int | None = None) -> str:
        """JSON text (sorted keys); ``indent`` for humans."""
        return json.dumps(_normalize(self.to_dict()), sort_keys=True, indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Experiment:
        """Build from a (possibly partial) nested dict; unknown fields raise ValueError naming them."""
        if not isinstance(data, dict):
            raise _bad("Experiment", data, "must be a mapping of its fields")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in names]
        if unknown:
            raise ValueError(f"Experiment: unknown field(s) {', '.join(f'Experiment.{k}' for k in unknown)}; "
                             f"valid fields: {', '.join(names)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> Experiment:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    # -- updates -------------------------------------------------------------------------------------
    @classmethod
    def paths(cls) -> list[str]:
        """Every settable dotted path: ``model``, ``seed``, the sections, and ``section.field``."""
        out = ["model", "seed"]
        for name, sec in SECTIONS.items():
            out += [name] + [f"{name}.{f.name}" for f in dataclasses.fields(sec)]  # type: ignore[arg-type]
        return out

    @classmethod
    def resolve_path(cls, key: str) -> str:
        """A dotted path for ``key`` (an alias such as ``strategy`` or a path); ValueError if neither."""
        path = ALIASES.get(key, key) if key not in cls.paths() else key
        if path not in cls.paths():
            raise ValueError(f"Experiment has no field {key!r}; valid: {', '.join(cls.paths())}; "
                             f"aliases: {', '.join(f'{a}={p}' for a, p in ALIASES.items())}")
        return path

    def replace(self, **changes: Any) -> Experiment:
        """A validated copy with fields changed by dotted path or alias.

        A section given a string sets its main field only (``data="digits"`` keeps the subset sizes); a
        dict updates the listed fields; a spec instance replaces the section.

        Example:
            >>> exp = Experiment(model="tiny_mlp", data="digits")
            >>> exp.replace(**{"prune.strategy": "random", "compression": 4}).prune
            PruneSpec(strategy='random', compression=4.0)
        """
        top: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            path = self.resolve_path(key)
            if "." in path:
                sec, name = path.split(".", 1)
                nested.setdefault(sec, {})[name] = value
            elif path in SECTIONS and isinstance(value, str) and SECTIONS[path]._primary:
                nested.setdefault(path, {})[SECTIONS[path]._primary] = value
            elif path in SECTIONS and isinstance(value, dict):
                nested.setdefault(path, {}).update(value)
            else:
                top[path] = value
        for sec, updates in nested.items():
            current = top.get(sec, getattr(self, sec))
            current = _section(sec, current)
            top[sec] = type(current).from_dict({**current.to_dict(), **updates})
        return dataclasses.replace(self, **top)

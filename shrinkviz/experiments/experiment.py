"""Experiment configs: frozen dataclasses for every factor of one run, validated, JSON round-trip, run ids.

An :class:`Experiment` is everything that decides one result row: the data, the architecture, the
pretrained baseline (recipe and seed), the compression technique(s) and their hyperparameters, the latency
protocol and the seed. Two equal configs hash to the same :attr:`Experiment.run_id` on any machine (the
id is a sha256 of the sorted-keys JSON with floats normalised); any change gives a new id, which is how
the store knows a run is already done.

Techniques: at most one of ``prune`` (a strategy is set), ``quant`` (method qat/ptq) or ``distill``
(enabled) on its own; several are combined with ``pipeline.order`` (e.g. ``"PQD"``), whose letters must
be exactly the techniques that are switched on (a single letter runs one technique through
``shrinkviz.techniques.pipeline`` with its epoch allocation, the ablation's single-technique baselines).
:attr:`Experiment.method` names what the run does. The sections live in :mod:`shrinkviz.experiments.specs`.

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
import re
from dataclasses import dataclass, field
from typing import Any

from shrinkviz.core.registry import did_you_mean
from shrinkviz.experiments.schema import stage_epochs_text
from shrinkviz.experiments.specs import (
    METHODS,
    QUANT_METHODS,
    RECIPE_DEFAULT,
    SECTIONS,
    STAGES,
    BaselineSpec,
    DataSpec,
    DistillSpec,
    FinetuneSpec,
    LatencySpec,
    PipelineSpec,
    PruneSpec,
    QuantSpec,
    TechniqueSpec,
    _bad,
    _choice,
    _int,
    _section,
    _set,
)
from shrinkviz.loop.config import BF16_QAT

__all__ = [
    "ALIASES",
    "METHODS",
    "QUANT_METHODS",
    "RECIPE_DEFAULT",
    "SECTIONS",
    "STAGES",
    "BaselineSpec",
    "DataSpec",
    "DistillSpec",
    "Experiment",
    "FinetuneSpec",
    "LatencySpec",
    "PipelineSpec",
    "PruneSpec",
    "QuantSpec",
    "TechniqueSpec",
]

ALIASES: dict[str, str] = {
    "dataset": "data.name",
    "strategy": "prune.strategy",
    "compression": "prune.compression",
    "recipe": "baseline.recipe",
    "baseline_recipe": "baseline.recipe",
    "baseline_seed": "baseline.seed",
    "finetune_preset": "finetune.preset",
    "finetune_epochs": "finetune.epochs",
    "finetune_precision": "finetune.precision",
    "baseline_precision": "baseline.precision",
    "quantization": "quant.method",
    "order": "pipeline.order",
    "stage_epochs": "pipeline.epochs",
    "temperature": "distill.temperature",
    "alpha": "distill.alpha",
}
"""Friendly names accepted by :meth:`Experiment.replace` and ``sweep`` for the common dotted paths."""


DESIGN_LABEL = re.compile(r"[A-Za-z0-9_/-]{0,40}")


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
    technique: TechniqueSpec = field(default_factory=TechniqueSpec)
    seed: int = 0
    design: str = ""
    """Which arm of a study the run belongs to (e.g. ``"equal-final"``, ``"control"``): a free label that
    becomes the ``design`` column, so claims and figures can select an arm by name. Part of the run id only
    when set (every run without one keeps its id)."""

    def __post_init__(self) -> None:
        from shrinkviz.models import available_models

        _choice("Experiment.model", self.model, available_models())
        if not isinstance(self.design, str) or not DESIGN_LABEL.fullmatch(self.design):
            raise _bad(
                "Experiment.design",
                self.design,
                "must be '' or up to 40 letters, digits, '_', '-' or '/' (a name for the arm of a study)",
            )
        for name in SECTIONS:
            _set(self, name, _section(name, getattr(self, name)))
        _set(self, "seed", _int("Experiment.seed", self.seed, 0))
        on = {"P": bool(self.prune.strategy), "Q": self.quant.method != "none", "D": self.distill.enabled}
        settings = {
            "P": f"prune.strategy={self.prune.strategy!r}",
            "Q": f"quant.method={self.quant.method!r}",
            "D": "distill.enabled=True",
        }
        order = self.pipeline.order
        if self.technique.name:
            from shrinkviz.experiments.techniques import USES

            applied = {"Q"} if "quant" in USES.get(self.technique.name, ()) else set()
            if order or any(v for k, v in on.items() if k not in applied):
                also = ", ".join(
                    ["prune.strategy", "distill.enabled", "pipeline.order"]
                    + ([] if applied else ["quant.method"])
                )
                raise ValueError(
                    f"Experiment.technique.name={self.technique.name!r}: a technique of your own runs alone; "
                    f"leave {also} at their defaults"
                )
        if not order and sum(on.values()) > 1:
            both = " and ".join(settings[k] for k in on if on[k])
            raise ValueError(
                f"Experiment.pipeline.order='': {both} are set together; combine techniques with "
                f"pipeline.order, one letter per technique (e.g. "
                f"{''.join(k for k in on if on[k])!r})"
            )
        if self.finetune.precision != "fp32" and self.quant.method == "qat":
            raise ValueError(
                f"Experiment.finetune.precision={self.finetune.precision!r} {BF16_QAT}; use "
                "finetune.precision='fp32' with quant.method='qat'"
            )
        if order and {"bias", "score_batches"} & set(self.prune.to_dict()):
            raise ValueError(
                "Experiment.prune.bias / prune.score_batches apply to prune runs only; leave them at "
                f"their defaults with pipeline.order={order!r}"
            )
        if order:
            for letter, field_path in (
                ("P", "prune.strategy"),
                ("Q", "quant.method"),
                ("D", "distill.enabled"),
            ):
                if on[letter] != (letter in order):
                    have = settings[letter] if on[letter] else f"{field_path} is off"
                    raise ValueError(
                        f"Experiment.pipeline.order={order!r}: {have}, but the order's letters must be "
                        f"exactly the techniques switched on ({''.join(k for k in on if on[k])!r})"
                    )
            if "Q" in order and self.quant.method != "qat":
                raise _bad(
                    "Experiment.quant.method",
                    self.quant.method,
                    "the pipeline's Q stage is INT8 QAT; allowed values with a Q in pipeline.order: 'qat'",
                )

    # -- derived -----------------------------------------------------------------------------------
    @property
    def method(self) -> str:
        """``baseline``, ``prune``, ``quant``, ``distill``, ``pipeline``, or the registered technique."""
        if self.technique.name:
            return self.technique.name
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
        """The config columns of a result row (``shrinkviz.experiments.schema.FACTOR_COLUMNS``)."""
        return {
            "dataset": self.data.name,
            "model": self.model,
            "baseline_recipe": self.baseline.label,
            "baseline_seed": self.baseline.seed,
            "method": self.method,
            "strategy": self.prune.strategy,
            "compression": self.prune.compression,
            "finetune": self.finetune.label,
            "order": self.pipeline.order,
            "stage_epochs": stage_epochs_text(self.pipeline.order, self.pipeline.epochs),
            "quantization": self.quant.method,
            "seed": self.seed,
            "design": self.design,
        }

    # -- serialisation -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (JSON-ready)."""
        out: dict[str, Any] = {"model": self.model, "seed": self.seed}
        out.update({name: getattr(self, name).to_dict() for name in SECTIONS})
        if not self.technique.name:
            del out["technique"]  # built-in runs keep the ids they had before techniques could be added
        if self.design:
            out["design"] = self.design
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
            raise ValueError(
                f"Experiment: unknown field(s) {', '.join(f'Experiment.{k}' for k in unknown)};"
                f"{did_you_mean(unknown[0], names)} valid fields: {', '.join(names)}"
            )
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> Experiment:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    # -- updates -------------------------------------------------------------------------------------
    @classmethod
    def paths(cls) -> list[str]:
        """Every settable dotted path: ``model``, ``seed``, the sections, and ``section.field``."""
        out = ["model", "seed", "design"]
        for name, sec in SECTIONS.items():
            out += [name] + [f"{name}.{f.name}" for f in dataclasses.fields(sec)]  # type: ignore[arg-type]
        return out

    @classmethod
    def resolve_path(cls, key: str) -> str:
        """A dotted path for ``key`` (an alias such as ``strategy`` or a path); ValueError if neither."""
        path = ALIASES.get(key, key) if key not in cls.paths() else key
        if path not in cls.paths():
            section, _, name = str(key).rpartition(".")
            if section in SECTIONS:  # only the valid keys at the level of the mistake
                fields = [p.split(".", 1)[1] for p in cls.paths() if p.startswith(section + ".")]
                hint = did_you_mean(name, fields).replace(" '", f" '{section}.")
                valid = [f"{section}.{f}" for f in fields]
            else:
                valid = [p for p in cls.paths() if "." not in p] + list(ALIASES)
                hint = did_you_mean(key, valid)
            raise ValueError(f"Experiment has no field {key!r};{hint} valid: {', '.join(valid)}")
        return path

    def replace(self, **changes: Any) -> Experiment:
        """A validated copy with fields changed by dotted path or alias.

        A section given a string sets its main field only (``data="digits"`` keeps the subset sizes); a
        dict updates the listed fields; a spec instance replaces the section.

        Example:
            >>> exp = Experiment(model="tiny_mlp", data="digits")
            >>> pruned = exp.replace(**{"prune.strategy": "random", "compression": 4}).prune
            >>> pruned.strategy, pruned.compression
            ('random', 4.0)
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

"""What every claim test shares: the types (Claim, Verdict, ClaimSpecError), the registry, the
Context a test reads its runs through, and the Holm-corrected decision helpers."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from shrinkviz.core.registry import Registry
from shrinkviz.experiments.schema import FACTOR_COLUMNS
from shrinkviz.metrics.paired import Bootstrap, Effect, holm, unpack_correct

__all__ = [
    "OUTCOMES",
    "TESTS",
    "Claim",
    "ClaimSpecError",
    "Context",
    "Verdict",
    "available_tests",
    "register_test",
]


OUTCOMES = ("held", "not held", "inconclusive")


class ClaimSpecError(ValueError):
    """A claim spec that cannot be evaluated as written (the message names the claim and the key)."""


@dataclass(frozen=True)
class Claim:
    """One declared claim: its id, title, test name, a filter and the test's own parameters."""

    id: str
    title: str
    test: str
    where: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class Verdict:
    """The decision on one claim: the outcome, one generated sentence with the numbers, and the table of
    every comparison it rests on (estimates, 95% intervals, raw and Holm-adjusted p-values)."""

    claim: Claim
    outcome: str
    summary: str
    details: pd.DataFrame

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"Verdict.outcome={self.outcome!r}: one of {OUTCOMES}")


@dataclass(frozen=True)
class ClaimTest:
    """A test: its parameter keys, a parameter check (raises ClaimSpecError) and the evaluator."""

    keys: tuple[str, ...]
    check: Callable[[str, Mapping[str, Any]], None]
    run: Callable[[Context], Any]


TESTS: Registry[ClaimTest] = Registry("claim test")


def register_test(name: str, keys: Sequence[str], check: Callable[[str, Mapping[str, Any]], None]):
    """Decorator: register ``run(context) -> Verdict`` as claim test ``name`` taking ``keys``."""

    def deco(run: Callable[[Context], Any]) -> Callable[[Context], Any]:
        TESTS.register(name, ClaimTest(tuple(keys), check, run))
        return run

    return deco


def available_tests() -> list[str]:
    """Names of the registered claim tests."""
    return TESTS.names()


# -- helpers ------------------------------------------------------------------------------------------


def _spec_error(where: str, message: str) -> Exception:
    return ClaimSpecError(f"{where}: {message}")


def _need(where: str, params: Mapping[str, Any], *keys: str) -> None:
    for key in keys:
        if key not in params:
            raise _spec_error(where, f"needs {key} = ...")


def _choice(where: str, params: Mapping[str, Any], key: str, valid: Sequence[str]) -> None:
    if key in params and params[key] not in valid:
        raise _spec_error(where, f"{key}={params[key]!r}: one of {', '.join(map(repr, valid))}")


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _expand(flt: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the list-valued entries of a filter (a filter without lists gives itself)."""
    keys = list(flt)
    return [
        dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(_as_list(flt[k]) for k in keys))
    ]


def _matches(runs: pd.DataFrame, flt: Mapping[str, Any]) -> pd.Series:
    mask = pd.Series(True, index=runs.index)
    for column, value in flt.items():
        if column not in runs:
            return pd.Series(False, index=runs.index)
        values = _as_list(value)
        col = runs[column]
        if pd.api.types.is_numeric_dtype(col) and all(isinstance(v, int | float) for v in values):
            mask &= col.astype(float).isin([float(v) for v in values])
        else:
            mask &= col.astype(str).isin([str(v) for v in values])
    return mask


def _fmt_value(column: str, value: Any) -> str:
    if column == "compression":
        return f"x{float(value):g}"
    return f"{value}"


def _label(flt: Mapping[str, Any]) -> str:
    return ", ".join(_fmt_value(k, v) for k, v in flt.items()) or "all"


def _signed(x: float, digits: int = 3) -> str:
    return "nan" if not math.isfinite(x) else f"{x:+.{digits}f}"


class Missing(Exception):
    """A side of a comparison has no (or too few, or ambiguous) runs: the comparison is inconclusive."""


class Context:
    """What a test reads: the spec, the claim, the runs (filtered by both wheres) and the latency rows."""

    def __init__(self, spec: Any, claim: Any, runs: pd.DataFrame, latency: pd.DataFrame) -> None:
        self.spec, self.claim, self.latency = spec, claim, latency
        self.params = claim.params
        self.alpha = spec.alpha
        self.all_runs = runs
        self.runs = runs[_matches(runs, {**spec.where, **claim.where})] if len(runs) else runs
        self._configs: dict[Hashable, dict[int, Any]] = {}
        self._quantity = str(self.params.get("quantity", "top1"))
        self.bootstrap = Bootstrap(self._configs, draws=spec.draws, seed=0)
        reps = [tuple(r) for r in self.runs[list(spec.replicate)].astype(str).itertuples(index=False)]
        self._replicates = {r: i for i, r in enumerate(sorted(set(reps)))}

    def rows(self, flt: Mapping[str, Any]) -> pd.DataFrame:
        return self.runs[_matches(self.runs, flt)]

    def config(self, flt: Mapping[str, Any], quantity: str | None = None) -> Hashable:
        """The key of the configuration ``flt`` names, registered with the bootstrap (Missing if unusable)."""
        quantity = quantity or self._quantity
        key = (quantity, tuple(sorted((k, str(v)) for k, v in flt.items())))
        if key in self._configs:
            return key
        rows = self.rows(flt)
        if rows.empty:
            raise Missing(f"no runs with {_label(flt)}")
        reps = [
            self._replicates[tuple(r)]
            for r in rows[list(self.spec.replicate)].astype(str).itertuples(index=False)
        ]
        if len(set(reps)) != len(reps):
            varying = [
                c
                for c in FACTOR_COLUMNS
                if c not in self.spec.replicate and rows[c].astype(str).nunique() > 1
            ]
            raise Missing(
                f"{_label(flt)} matches several runs per replicate; pin {', '.join(varying) or 'the config'}"
            )
        if len(reps) < self.spec.min_seeds:
            raise Missing(f"{_label(flt)} has {len(reps)} replicate(s), the spec needs {self.spec.min_seeds}")
        values: dict[int, Any] = {}
        use_bits = (
            quantity == "top1"
            and "test_correct" in rows
            and rows["test_correct"].fillna("").astype(bool).all()
        )
        for rep, (_, row) in zip(reps, rows.iterrows(), strict=True):
            if use_bits:
                values[rep] = unpack_correct(row["test_correct"])
            else:
                value = float(row[quantity])
                if not math.isfinite(value):
                    raise Missing(f"{_label(flt)} lacks {quantity} in run {row['run_id']}")
                values[rep] = value
        self._configs[key] = values
        return key

    def observed(self, key: Hashable) -> dict[int, float]:
        return self.bootstrap.observed(key)

    def mean(self, key: Hashable) -> float:
        return float(np.mean(list(self.observed(key).values())))

    def replicates_note(self, effects: Sequence[Effect]) -> str:
        """``'; 3 seeds, bootstrap over seeds and test images'`` (empty without effects)."""
        if not effects:
            return ""
        k = sorted({s for e in effects for s in e.seeds})
        images = all(e.per_example for e in effects)
        what = "replicates" if tuple(self.spec.replicate) != ("seed",) else "seeds"
        if tuple(self.spec.replicate) != ("seed",):
            what += f" ({' x '.join(self.spec.replicate)})"
        count = str(k[0]) if k[0] == k[-1] else f"{k[0]}-{k[-1]}"
        return f"; {count} {what}, bootstrap over " + ("seeds and test images" if images else "seeds only")

    def verdict(self, outcome: str, summary: str, details: pd.DataFrame) -> Verdict:
        return Verdict(self.claim, outcome, summary, details)


def _combine(outcomes: Sequence[str], family: str) -> str:
    if not outcomes:
        return "inconclusive"
    if family == "all":
        if all(o == "held" for o in outcomes):
            return "held"
        return "not held" if "not held" in outcomes else "inconclusive"
    if "held" in outcomes:
        return "held"
    return "not held" if all(o == "not held" for o in outcomes) else "inconclusive"


def _one_sided(
    effects: list[Effect | None], margin: float, sign: int, alpha: float
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Outcome per effect of the claim sign * (A - B) > margin, with Holm over the family."""
    ok = [e for e in effects if e is not None]
    p_for = np.array([e.p(sign * margin, "greater" if sign > 0 else "less") for e in ok])
    p_against = np.array([e.p(sign * margin, "less" if sign > 0 else "greater") for e in ok])
    adj_for, adj_against = holm(p_for), holm(p_against)
    outcomes, it = [], iter(range(len(ok)))
    full_for, full_against = np.full(len(effects), np.nan), np.full(len(effects), np.nan)
    for j, e in enumerate(effects):
        if e is None:
            outcomes.append("inconclusive")
            continue
        i = next(it)
        full_for[j], full_against[j] = adj_for[i], adj_against[i]
        outcomes.append(
            "held" if adj_for[i] < alpha else "not held" if adj_against[i] < alpha else "inconclusive"
        )
    return outcomes, full_for, full_against

"""The tests a claim spec can name, each with its parameters and its decision rule.

Every test compares *configurations*: the runs matching a filter (a table of runs column = value), one run
per replicate (``seed`` unless the spec says e.g. ``replicate = ["baseline_seed", "seed"]``). Accuracy
differences are bootstrapped over seeds and test examples (:class:`shrinkviz.metrics.paired.Bootstrap`);
all the comparisons inside one claim form a family whose p-values are Holm-corrected, so a claim's
error rate is ``alpha`` however many comparisons it makes. Outcomes:

* ``difference``: ``A - B > margin`` (``direction = "greater"``, default) or ``< -margin`` (``"less"``)
  for every level of ``over`` (and every value of a list in ``a`` / ``b``, unless that side is in
  ``pool``, which averages them). A comparison *holds* when the corrected one-sided test of the claimed
  direction rejects, is *not held* when the test of the opposite rejects, else is inconclusive.
  ``family = "all"`` (default): held when every comparison holds, not held when any is not held;
  ``"any"``: held when one holds, not held when all are not held. ``at_speedup = "highest_common"``
  compares the sides at the highest theoretical speedup both reach, each interpolated (log2 speedup)
  between its two bracketing ``over`` levels. ``quantity`` other than ``top1`` (e.g.
  ``speedup_theoretical``) bootstraps over seeds only.
* ``flip``: does the ranking of two methods (``pairs`` of ``compare`` values, or ``"all"``) change with
  ``factor`` between its two ``levels``? ``mode = "within"``: A - B under level 1 against A - B under
  level 2. ``mode = "across"``: A - B on a common level against A on one level - B on the other (e.g.
  methods reported on different baselines). A *flip* is a case where the effects compared are all
  significant (two-sided, corrected) with opposite signs. Held: at least one flip; not held: every case
  has significant effects and none flips; else inconclusive.
* ``spread``: the seed-to-seed standard deviation of ``by`` groups grows from the ``low`` level to the
  ``high`` level by more than ``margin`` times (pooled variances, F test; held / not held when the
  one-sided test of ratio > margin / < margin rejects).
* ``any_difference``: do the ``levels`` of ``compare`` differ at all? Every pair is tested two-sided;
  held when one pair differs (corrected), not held when every pair is shown equivalent within
  ``+-margin`` (two one-sided tests, corrected), else inconclusive.
* ``latency_ratio`` / ``size_ratio``: the stored side-by-side latency ratio on ``runtimes`` (or an
  artefact size relative to the baseline run's, ``quantity`` e.g. ``size_bytes_gzip``) of each ``by`` group
  lies within ``bounds``. Held when every run's figure does, not held when a group's median does not,
  else inconclusive. The interval shown is the range over runs (and, for latency, over rounds).
"""

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
from shrinkviz.metrics.paired import Bootstrap, Effect, flip_rate, holm, unpack_correct

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


# -- difference -----------------------------------------------------------------------------------------


def _check_difference(where: str, params: Mapping[str, Any]) -> None:
    _need(where, params, "a", "b")
    for side in ("a", "b"):
        if not isinstance(params[side], Mapping):
            raise _spec_error(where, f"{side} must be a table of column = value(s)")
    _choice(where, params, "direction", ("greater", "less"))
    _choice(where, params, "family", ("all", "any"))
    _choice(where, params, "at_speedup", ("highest_common",))
    for side in params.get("pool", []):
        if side not in ("a", "b"):
            raise _spec_error(where, f"pool={params['pool']!r}: list the sides to average, 'a' and/or 'b'")
    if "at_speedup" in params and list(params.get("over", {})) != ["compression"]:
        raise _spec_error(
            where, "at_speedup needs over = { compression = [...] } (the levels to interpolate between)"
        )


def _side(
    ctx: Context, flt: Mapping[str, Any], over: Mapping[str, Any], pooled: bool
) -> list[list[tuple[float, Hashable]]]:
    """The side's configurations: one weighted side per expansion, or one pooled side."""
    expansions = _expand(flt)
    sides = [[(1.0, ctx.config({**over, **e}))] for e in expansions]
    if pooled:
        return [[(1.0 / len(sides), s[0][1]) for s in sides]]
    return sides


def _interpolated(
    ctx: Context, flt: Mapping[str, Any], levels: Sequence[float], target: float
) -> list[tuple[float, Hashable]]:
    speed = []
    for level in levels:
        key = ctx.config({**flt, "compression": level}, "speedup_theoretical")
        speed.append((ctx.mean(key), level))
    speed.sort()
    xs = np.log2([s for s, _ in speed])
    x = math.log2(target)
    for (_, l0), (_, l1), x0, x1 in zip(speed, speed[1:], xs, xs[1:], strict=False):
        if x0 <= x <= x1:
            w = 0.0 if x1 == x0 else (x - x0) / (x1 - x0)
            return [
                (1 - w, ctx.config({**flt, "compression": l0})),
                (w, ctx.config({**flt, "compression": l1})),
            ]
    raise Missing(f"{_label(flt)} does not reach a theoretical speedup of {target:.3g}x")


@register_test(
    "difference",
    ("a", "b", "over", "margin", "direction", "family", "pool", "quantity", "at_speedup"),
    _check_difference,
)
def difference(ctx: Context) -> Any:
    p = ctx.params
    margin, sign = float(p.get("margin", 0.0)), (1 if p.get("direction", "greater") == "greater" else -1)
    pool = set(p.get("pool", []))
    rows, effects, labels = [], [], []
    levels = _expand(p.get("over", {}))
    targets: list[tuple[dict[str, Any], Any]] = []
    if "at_speedup" in p:
        comp = [float(c) for c in _as_list(p["over"]["compression"])]
        try:
            reach = []
            for flt in (p["a"], p["b"]):
                reach.append(
                    max(ctx.mean(ctx.config({**flt, "compression": c}, "speedup_theoretical")) for c in comp)
                )
            target = min(reach)
            a_side = _interpolated(ctx, p["a"], comp, target)
            b_side = _interpolated(ctx, p["b"], comp, target)
            targets.append(({"theoretical speedup": f"{target:.3g}x"}, (a_side, b_side)))
        except Missing as exc:
            targets.append(({"theoretical speedup": "highest common"}, exc))
    else:
        for level in levels:
            try:
                a_sides = _side(ctx, p["a"], level, "a" in pool)
                b_sides = _side(ctx, p["b"], level, "b" in pool)
                for (ia, a_side), (ib, b_side) in itertools.product(enumerate(a_sides), enumerate(b_sides)):
                    extra = {}
                    if len(a_sides) > 1:
                        extra["a"] = _label(
                            {k: v for k, v in _expand(p["a"])[ia].items() if isinstance(p["a"][k], list)}
                        )
                    if len(b_sides) > 1:
                        extra["b"] = _label(
                            {k: v for k, v in _expand(p["b"])[ib].items() if isinstance(p["b"][k], list)}
                        )
                    targets.append(
                        ({**{k: _fmt_value(k, v) for k, v in level.items()}, **extra}, (a_side, b_side))
                    )
            except Missing as exc:
                targets.append(({k: _fmt_value(k, v) for k, v in level.items()}, exc))
    for label, item in targets:
        labels.append(label)
        if isinstance(item, Missing):
            effects.append(None)
            rows.append({**label, "missing": str(item)})
            continue
        a_side, b_side = item
        e = ctx.bootstrap.effect(a_side, b_side)
        effects.append(e)
        obs_a = {
            s: sum(w * ctx.observed(k)[s] for w, k in a_side)
            for s in set.intersection(*(set(ctx.observed(k)) for _, k in a_side))
        }
        obs_b = {
            s: sum(w * ctx.observed(k)[s] for w, k in b_side)
            for s in set.intersection(*(set(ctx.observed(k)) for _, k in b_side))
        }
        wins = flip_rate(obs_a, obs_b) if sign > 0 else flip_rate(obs_b, obs_a)
        rows.append(
            {
                **label,
                "a_mean": float(np.mean(list(obs_a.values()))),
                "b_mean": float(np.mean(list(obs_b.values()))),
                "estimate": e.estimate,
                "ci95_low": e.low,
                "ci95_high": e.high,
                "se": e.se,
                "replicates": e.seeds[0],
                "claimed_side_wins": wins,
                "missing": "",
            }
        )
    outcomes, adj_for, adj_against = _one_sided(effects, margin, sign, ctx.alpha)
    details = pd.DataFrame(rows)
    details["p_claim_holm"], details["p_opposite_holm"], details["outcome"] = adj_for, adj_against, outcomes
    family = p.get("family", "all")
    outcome = _combine(outcomes, family)
    parts = []
    for label, e, r, o in zip(labels, effects, rows, outcomes, strict=True):
        name = ", ".join(str(v) for v in label.values())
        if e is None:
            parts.append(r["missing"])
        else:
            parts.append(
                f"{name}: {r['a_mean']:.3f} vs {r['b_mean']:.3f}, {_signed(e.estimate)} "
                f"[{_signed(e.low)}, {_signed(e.high)}], claimed side ahead in {r['claimed_side_wins']:.0%} "
                f"of replicates ({o})"
            )
    n_held = outcomes.count("held")
    claim = f"{'A - B' if sign > 0 else 'B - A'} > {margin:g}"
    summary = (
        f"{_label(p['a'])} vs {_label(p['b'])} — "
        + "; ".join(parts)
        + f". {n_held} of {len(outcomes)} comparisons held ({claim}, family '{family}', Holm, "
        f"alpha {ctx.alpha:g}{ctx.replicates_note([e for e in effects if e is not None])})."
    )
    return ctx.verdict(outcome, summary, details)


# -- flip -----------------------------------------------------------------------------------------------


def _check_flip(where: str, params: Mapping[str, Any]) -> None:
    _need(where, params, "compare", "factor", "levels")
    if len(_as_list(params["levels"])) != 2:
        raise _spec_error(
            where, f"levels={params['levels']!r}: give the two levels of {params['factor']!r} to compare"
        )
    _choice(where, params, "mode", ("within", "across"))
    pairs = params.get("pairs", "all")
    if pairs != "all" and not all(isinstance(x, list) and len(x) == 2 for x in pairs):
        raise _spec_error(where, f"pairs={pairs!r}: 'all' or a list of [A, B] pairs")


@register_test("flip", ("compare", "factor", "levels", "pairs", "over", "mode", "values"), _check_flip)
def flip(ctx: Context) -> Any:
    p = ctx.params
    compare, factor, (l1, l2) = p["compare"], p["factor"], _as_list(p["levels"])
    mode = p.get("mode", "within")
    values = _as_list(p["values"]) if "values" in p else sorted(ctx.runs[compare].dropna().unique().tolist())
    pairs = (
        list(itertools.combinations(values, 2))
        if p.get("pairs", "all") == "all"
        else [tuple(x) for x in p["pairs"]]
    )

    def effect(level: Mapping[str, Any], a: Any, la: Any, b: Any, lb: Any) -> Effect:
        ka = ctx.config({**level, compare: a, factor: la})
        kb = ctx.config({**level, compare: b, factor: lb})
        return ctx.bootstrap.effect([(1.0, ka)], [(1.0, kb)])

    cases: list[tuple[dict[str, Any], Any, Any, list[tuple[str, Effect]]]] = []
    missing: list[str] = []
    for level in _expand(p.get("over", {})):
        for a, b in pairs:
            try:
                effects = [
                    (f"both {l1}", effect(level, a, l1, b, l1)),
                    (f"both {l2}", effect(level, a, l2, b, l2)),
                ]
                if mode == "across":
                    effects += [
                        (f"{a} {l1} vs {b} {l2}", effect(level, a, l1, b, l2)),
                        (f"{a} {l2} vs {b} {l1}", effect(level, a, l2, b, l1)),
                    ]
                cases.append((level, a, b, effects))
            except Missing as exc:
                missing.append(f"{_label(level)} {a} vs {b}: {exc}")
    flat = [e for *_, effs in cases for _, e in effs]
    adj = iter(holm([e.p(0.0, "two-sided") for e in flat]))
    rows, flips, settled = [], [], 0
    for level, a, b, effs in cases:
        signs = []
        for name, e in effs:
            padj = next(adj)
            significant = bool(padj < ctx.alpha)
            signs.append(int(np.sign(e.estimate)) if significant else 0)
            rows.append(
                {
                    **{k: _fmt_value(k, v) for k, v in level.items()},
                    "a": a,
                    "b": b,
                    "effect": name,
                    "estimate": e.estimate,
                    "ci95_low": e.low,
                    "ci95_high": e.high,
                    "p_holm": padj,
                    "significant": significant,
                }
            )
        if mode == "within":  # the two levels rank the pair in opposite orders
            flipped = signs[0] * signs[1] < 0
        else:  # both common levels agree, and a comparison across levels says the opposite
            flipped = signs[0] == signs[1] != 0 and any(s == -signs[0] for s in signs[2:])
        if flipped:
            flips.append(f"{a} vs {b}" + (f" at {_label(level)}" if level else ""))
        settled += 0 not in signs
    if flips:
        outcome = "held"
    elif cases and not missing and settled == len(cases):
        outcome = "not held"
    else:
        outcome = "inconclusive"
    # descriptive: replicate by replicate, how often a pair is ordered differently under the two levels
    disagree = total = 0
    for level, a, b, _ in cases:
        obs = {
            lv: [ctx.observed(ctx.config({**level, compare: v, factor: lv})) for v in (a, b)]
            for lv in (l1, l2)
        }
        for s in set.intersection(*(set(o) for lv in (l1, l2) for o in obs[lv])):
            total += 1
            disagree += bool(np.sign(obs[l1][0][s] - obs[l1][1][s]) != np.sign(obs[l2][0][s] - obs[l2][1][s]))
    levels_note = f" at {len(_expand(p['over']))} levels" if p.get("over") else ""
    shown = "; ".join(flips[:6]) + ("; ..." if len(flips) > 6 else "")
    summary = (
        f"{len(cases)} cases ({len(pairs)} pairs of {compare}{levels_note}; {factor} {l1} vs {l2}, {mode}); "
        f"significant flips: {len(flips)}"
        + (f" ({shown})" if flips else "")
        + f"; cases with every effect significant: {settled}. Replicate by replicate, a pair is ordered "
        f"differently under the two levels in {disagree} of {total} comparisons"
        + (f" ({disagree / total:.0%})" if total else "")
        + (f". Missing: {'; '.join(missing[:3])}" if missing else "")
        + f". Two-sided tests, Holm over {len(flat)}, alpha {ctx.alpha:g}{ctx.replicates_note(flat)}."
    )
    return ctx.verdict(outcome, summary, pd.DataFrame(rows))


# -- spread ---------------------------------------------------------------------------------------------


def _check_spread(where: str, params: Mapping[str, Any]) -> None:
    _need(where, params, "by", "low", "high")
    if float(params.get("margin", 1.0)) <= 0:
        raise _spec_error(where, "margin must be > 0 (a ratio of standard deviations)")


@register_test("spread", ("by", "low", "high", "margin", "quantity"), _check_spread)
def spread(ctx: Context) -> Any:
    import scipy.stats

    p = ctx.params
    margin = float(p.get("margin", 1.0))
    quantity = str(p.get("quantity", "top1"))
    rows, ss, dof = [], {"low": 0.0, "high": 0.0}, {"low": 0, "high": 0}
    for group in sorted(ctx.runs[p["by"]].dropna().unique().tolist()):
        row: dict[str, Any] = {p["by"]: group}
        for end in ("low", "high"):
            vals = ctx.rows({**p[end], p["by"]: group})[quantity].astype(float).dropna()
            row[f"std_{end}"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
            row[f"n_{end}"] = len(vals)
            if len(vals) > 1:
                ss[end] += float(((vals - vals.mean()) ** 2).sum())
                dof[end] += len(vals) - 1
        row["ratio"] = row["std_high"] / row["std_low"] if row["std_low"] else math.inf
        rows.append(row)
    details = pd.DataFrame(rows)
    if min(dof.values()) < 1:
        return ctx.verdict("inconclusive", f"needs >= 2 replicates per {p['by']} at both levels", details)
    pooled = {k: math.sqrt(ss[k] / dof[k]) for k in ss}
    ratio = pooled["high"] / pooled["low"] if pooled["low"] > 0 else math.inf
    f = (ratio / margin) ** 2 if math.isfinite(ratio) else math.inf
    p_for = float(scipy.stats.f.sf(f, dof["high"], dof["low"]))
    p_against = float(scipy.stats.f.cdf(f, dof["high"], dof["low"]))
    outcome = "held" if p_for < ctx.alpha else "not held" if p_against < ctx.alpha else "inconclusive"
    grow = details.dropna(subset=["ratio"])
    per = ", ".join(f"{r[p['by']]} {r['std_low']:.4f} -> {r['std_high']:.4f}" for _, r in grow.iterrows())
    summary = (
        f"seed standard deviation of {quantity} from {_label(p['low'])} to {_label(p['high'])}, pooled over "
        f"{len(details)} {p['by']} groups: {pooled['low']:.4f} -> {pooled['high']:.4f} ({ratio:.1f}x; claim > "
        f"{margin:g}x, F test p = {p_for:.2g}, dof {dof['high']}/{dof['low']}). Per {p['by']}: {per}; it grows in "
        f"{int((grow['ratio'] > 1).sum())} of {len(grow)}."
    )
    return ctx.verdict(outcome, summary, details)


# -- any_difference -------------------------------------------------------------------------------------


def _check_any(where: str, params: Mapping[str, Any]) -> None:
    _need(where, params, "compare", "levels", "margin")
    if len(_as_list(params["levels"])) < 2:
        raise _spec_error(where, "levels: give at least two")


@register_test("any_difference", ("compare", "levels", "margin"), _check_any)
def any_difference(ctx: Context) -> Any:
    p = ctx.params
    compare, levels, margin = p["compare"], _as_list(p["levels"]), float(p["margin"])
    try:
        keys = {v: ctx.config({compare: v}) for v in levels}
    except Missing as exc:
        return ctx.verdict("inconclusive", str(exc), pd.DataFrame())
    pairs = list(itertools.combinations(levels, 2))
    effects = [ctx.bootstrap.effect([(1.0, keys[a])], [(1.0, keys[b])]) for a, b in pairs]
    p_diff = holm([e.p(0.0, "two-sided") for e in effects])
    # equivalence within +-margin: both one-sided tests reject; the larger p is the pair's p
    p_equiv = holm([max(e.p(-margin, "greater"), e.p(margin, "less")) for e in effects])
    details = pd.DataFrame(
        [
            {
                "a": a,
                "b": b,
                "estimate": e.estimate,
                "ci95_low": e.low,
                "ci95_high": e.high,
                "p_differ_holm": pd_,
                "p_equivalent_holm": pe,
            }
            for (a, b), e, pd_, pe in zip(pairs, effects, p_diff, p_equiv, strict=True)
        ]
    )
    differ = details[details["p_differ_holm"] < ctx.alpha]
    if len(differ):
        outcome = "held"
    elif (details["p_equivalent_holm"] < ctx.alpha).all():
        outcome = "not held"
    else:
        outcome = "inconclusive"
    means = {v: ctx.mean(keys[v]) for v in levels}
    ranked = sorted(levels, key=lambda v: -means[v])
    spread_ = means[ranked[0]] - means[ranked[-1]]
    summary = (
        f"means {', '.join(f'{v} {means[v]:.4f}' for v in ranked)} (spread {spread_:.4f}); "
        f"{len(differ)} of {len(pairs)} pairs differ"
        + (
            f" ({'; '.join(f'{r.a} vs {r.b} {_signed(r.estimate)} [{_signed(r.ci95_low)}, {_signed(r.ci95_high)}]' for r in differ.itertuples())})"
            if len(differ)
            else ""
        )
        + f", {int((details['p_equivalent_holm'] < ctx.alpha).sum())} shown equivalent within +-{margin:g} "
        f"(two-sided and TOST, Holm over {len(pairs)}, alpha {ctx.alpha:g}{ctx.replicates_note(effects)})."
    )
    return ctx.verdict(outcome, summary, details)


# -- latency_ratio / size_ratio -------------------------------------------------------------------------


def _check_bounds(where: str, params: Mapping[str, Any]) -> None:
    _need(where, params, "bounds")
    b = params["bounds"]
    if not (isinstance(b, list) and len(b) == 2 and float(b[0]) < float(b[1])):
        raise _spec_error(where, f"bounds={b!r}: give [low, high] with low < high")


def _within(
    ctx: Context, table: pd.DataFrame, value: str, low: str, high: str, by: list[str], unit: str
) -> Any:
    lo, hi = (float(x) for x in ctx.params["bounds"])
    rows = []
    for key, group in table.groupby(by, sort=True) if by else [((), table)]:
        key = key if isinstance(key, tuple) else (key,)
        vals = group[value].astype(float)
        med = float(vals.median())
        rows.append(
            {
                **dict(zip(by, key, strict=True)),
                "median": med,
                "low": float(group[low].astype(float).min()),
                "high": float(group[high].astype(float).max()),
                "runs": len(vals),
                "all_within": bool(vals.between(lo, hi).all()),
                "median_within": lo <= med <= hi,
            }
        )
    details = pd.DataFrame(rows)
    if details.empty:
        return ctx.verdict("inconclusive", "no runs with a figure for this claim", details)
    if details["all_within"].all():
        outcome = "held"
    elif not details["median_within"].all():
        outcome = "not held"
    else:
        outcome = "inconclusive"
    parts = "; ".join(
        f"{', '.join(_fmt_value(c, r[c]) for c in by) or 'all runs'}: {r['median']:.3f}{unit} "
        f"({r['low']:.3f}-{r['high']:.3f})"
        for _, r in details.iterrows()
    )
    return details, outcome, f"{parts}; claimed within [{lo:g}, {hi:g}]"


@register_test("latency_ratio", ("by", "runtimes", "bounds"), _check_bounds)
def latency_ratio(ctx: Context) -> Any:
    p = ctx.params
    table = ctx.latency.merge(
        ctx.runs.drop(columns=[c for c in ctx.latency if c != "run_id" and c in ctx.runs]), on="run_id"
    )
    table = table[(table["error"].fillna("") == "") & table["latency_vs_baseline"].notna()]
    if "runtimes" in p:
        table = table[table["runtime"].isin(_as_list(p["runtimes"]))]
    by = [*_as_list(p.get("by", [])), "runtime"]
    result = _within(
        ctx, table, "latency_vs_baseline", "latency_vs_baseline_min", "latency_vs_baseline_max", by, "x"
    )
    if not isinstance(result, tuple):
        return result
    details, outcome, text = result
    machines = ", ".join(sorted(set(table["cpu_model"].astype(str))))
    return ctx.verdict(
        outcome,
        f"latency vs the dense baseline, timed side by side (median over runs; range over "
        f"runs and rounds): {text}. Measured on {machines}.",
        details,
    )


@register_test("size_ratio", ("by", "quantity", "bounds"), _check_bounds)
def size_ratio(ctx: Context) -> Any:
    p = ctx.params
    quantity = str(p.get("quantity", "size_bytes_gzip"))
    table = ctx.runs[ctx.runs["method"] != "baseline"].copy()
    # the baseline run lies outside the claim's filter: find it in the whole table, same data and baseline
    keys = ["dataset", "model", "baseline_recipe", "baseline_seed"]
    baseline = ctx.all_runs[ctx.all_runs["method"] == "baseline"]
    baseline = baseline.merge(table[keys].drop_duplicates(), on=keys)
    if table.empty or baseline.empty:
        return ctx.verdict("inconclusive", "no baseline run (method 'baseline') to divide by", pd.DataFrame())
    ref = float(baseline[quantity].astype(float).median())
    table["ratio"] = table[quantity].astype(float) / ref
    by = _as_list(p.get("by", []))
    result = _within(ctx, table, "ratio", "ratio", "ratio", by, "x")
    if not isinstance(result, tuple):
        return result
    details, outcome, text = result
    return ctx.verdict(outcome, f"{quantity} relative to the baseline's: {text}.", details)

"""Rankings and spread: ``flip`` (does a factor reverse the order of two methods) and ``spread`` (does
the seed-to-seed standard deviation grow)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from shrinkviz.experiments.claimtests.base import (
    Context,
    Missing,
    _as_list,
    _choice,
    _expand,
    _fmt_value,
    _label,
    _need,
    _spec_error,
    register_test,
)
from shrinkviz.metrics.paired import Effect, holm

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

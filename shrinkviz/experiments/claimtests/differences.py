"""Accuracy differences between configurations: ``difference`` (A beats B, per level, optionally at equal
theoretical speedup) and ``any_difference`` (do any of several levels differ at all)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from shrinkviz.experiments.claimtests.base import (
    Context,
    Missing,
    _as_list,
    _choice,
    _combine,
    _expand,
    _fmt_value,
    _label,
    _need,
    _one_sided,
    _signed,
    _spec_error,
    register_test,
)
from shrinkviz.metrics.paired import flip_rate, holm

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
        name = ", ".join(str(v) for v in label.values()) or "pooled"
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

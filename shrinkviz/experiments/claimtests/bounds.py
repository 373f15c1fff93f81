"""Costs within bounds: ``latency_ratio`` (the stored side-by-side latency ratio) and ``size_ratio`` (an
artefact size relative to the baseline run's)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from shrinkviz.experiments.claimtests.base import (
    Context,
    _as_list,
    _fmt_value,
    _need,
    _spec_error,
    register_test,
)

# -- latency_ratio / size_ratio -------------------------------------------------------------------------


def _check_bounds(where: str, params: Mapping[str, Any]) -> None:
    _need(where, params, "bounds")
    b = params["bounds"]
    if not (isinstance(b, list) and len(b) == 2 and float(b[0]) < float(b[1])):
        raise _spec_error(where, f"bounds={b!r}: give [low, high] with low < high")


def _within(
    ctx: Context,
    table: pd.DataFrame,
    value: str,
    low: str,
    high: str,
    by: list[str],
    lead: str,
    tail: str = "",
) -> Any:
    """The verdict on ``value`` of every ``by`` group lying within the claim's bounds, its text
    ``lead + <groups> + tail``; the interval shown per group is min(``low``) - max(``high``)."""
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
        f"{', '.join(_fmt_value(c, r[c]) for c in by) or 'all runs'}: {r['median']:.3f}x "
        f"({r['low']:.3f}-{r['high']:.3f})"
        for _, r in details.iterrows()
    )
    return ctx.verdict(outcome, f"{lead}{parts}; claimed within [{lo:g}, {hi:g}]{tail}.", details)


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
    machines = ", ".join(sorted(set(table["cpu_model"].astype(str))))
    return _within(
        ctx,
        table,
        "latency_vs_baseline",
        "latency_vs_baseline_min",
        "latency_vs_baseline_max",
        by,
        "latency vs the dense baseline, timed side by side (median over runs; range over runs and rounds): ",
        f". Measured on {machines}",
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
    return _within(ctx, table, "ratio", "ratio", "ratio", by, f"{quantity} relative to the baseline's: ")

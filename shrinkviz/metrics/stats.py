"""Statistics over results tables: seed aggregates with 95% confidence intervals, Pareto sets, crossings.

Plain functions over pandas DataFrames (no plotting; the t quantile comes from scipy). The figures, the widgets and the store
all use these, so a number shown in a figure is the number a notebook computes with them.

Example:
    >>> import pandas as pd
    >>> runs = pd.DataFrame({"strategy": ["a", "a"], "top1": [0.90, 0.92]})
    >>> aggregate(runs, by=["strategy"], metrics=["top1"])["top1_mean"].round(4).tolist()
    [0.91]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
import pandas as pd

__all__ = ["aggregate", "curve_crossings", "pareto_mask", "t_quantile"]


@lru_cache(maxsize=512)
def t_quantile(p: float, dof: int) -> float:
    """Quantile of Student's t distribution for an integer number of degrees of freedom
    (``scipy.stats.t.ppf``, with the arguments checked).

    Args:
        p: probability in (0, 1), e.g. 0.975 for a two-sided 95% interval.
        dof: degrees of freedom (>= 1); ``n - 1`` for a mean over ``n`` seeds.

    Returns:
        t such that P(T <= t) = p.

    Raises:
        ValueError: ``p`` outside (0, 1) or ``dof < 1``.

    Example:
        >>> round(t_quantile(0.975, 2), 6)
        4.302653
        >>> round(t_quantile(0.025, 2), 6), t_quantile(0.5, 7)
        (-4.302653, 0.0)
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile: p must be in (0, 1), got {p}")
    dof = int(dof)
    if dof < 1:
        raise ValueError(f"t_quantile: dof must be >= 1, got {dof}")
    import scipy.stats  # on first use: it takes longer to import than the rest of this module

    return float(scipy.stats.t.ppf(p, dof))


def _require(df: pd.DataFrame, columns: Sequence[str], func: str) -> None:
    missing = [c for c in dict.fromkeys(columns) if c not in df.columns]
    if missing:
        raise ValueError(f"{func}() needs column(s) {missing} that the DataFrame lacks")


def _numeric(df: pd.DataFrame, column: str, func: str) -> pd.Series:
    """The column as float64 with +-inf turned into NaN; ValueError when it is not numeric."""
    col = df[column]
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        out = col.astype("float64")
    else:
        try:
            out = pd.to_numeric(col, errors="raise").astype("float64")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{func}(): column {column!r} is not numeric") from exc
    return out.where(np.isfinite(out))


FRACTIONS = ("top1", "top5", "val_top1", "baseline_top1")
"""Accuracy columns (fractions): their confidence intervals are clipped to [0, 1] by :func:`aggregate`."""


def aggregate(
    runs: pd.DataFrame,
    by: Sequence[str] | str,
    metrics: Sequence[str] | str,
    bounds: Mapping[str, tuple[float, float]] | None = None,
) -> pd.DataFrame:
    """Mean, sample standard deviation and 95% Student-t confidence interval of metrics over seeds.

    Rows are grouped by the ``by`` columns (NaN keys form their own group; groups come out sorted). For
    every metric ``m`` the result has ``m_mean``, ``m_std`` (ddof=1), ``m_ci95_low``, ``m_ci95_high`` and
    ``m_n``, the number of finite values used; NaN and +-inf values are ignored. The interval is
    ``mean -+ t(0.975, k - 1) * std / sqrt(k)`` over the ``k`` finite values. With one value the standard
    deviation is reported as 0.0 and the band collapses to the mean; with none every statistic is NaN.
    ``n`` is the number of rows in the group (failed runs included; filter them first if needed).
    An interval never leaves the range its quantity can take: accuracies (:data:`FRACTIONS`) are clipped to
    [0, 1], and ``bounds`` clips any other metric.

    Args:
        runs: a runs table (any DataFrame).
        by: grouping column(s); ``[]`` aggregates the whole table into one row.
        metrics: numeric column(s) to summarise.
        bounds: ``{metric: (low, high)}`` limits of the intervals (added to the [0, 1] of accuracies).

    Returns:
        One row per group: the ``by`` columns, ``n``, then the five columns of each metric.

    Raises:
        ValueError: a column is missing or a metric is not numeric.

    Example:
        >>> runs = pd.DataFrame({"c": [2.0, 2.0, 4.0], "top1": [0.9, 0.8, 0.7]})
        >>> agg = aggregate(runs, by="c", metrics="top1")
        >>> agg[["c", "n", "top1_mean", "top1_n"]].round(4).values.tolist()
        [[2.0, 2.0, 0.85, 2.0], [4.0, 1.0, 0.7, 1.0]]
        >>> agg["top1_ci95_high"].round(4).tolist()  # 0.85 + 12.7 * 0.0707 would pass 1: clipped
        [1.0, 0.7]
    """
    by = [by] if isinstance(by, str) else list(by)
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    _require(runs, by + metrics, "aggregate")
    limits = {**{m: (0.0, 1.0) for m in FRACTIONS}, **dict(bounds or {})}
    work = pd.DataFrame({f"__key{i}": runs[k] for i, k in enumerate(by)}, index=runs.index)
    for i, m in enumerate(metrics):
        work[f"__m{i}"] = _numeric(runs, m, "aggregate")
    keys = [f"__key{i}" for i in range(len(by))]
    if keys:
        grouped = work.groupby(keys, dropna=False, sort=True)
        out = grouped.size().rename("n").to_frame()
    else:
        grouped = None
        out = pd.DataFrame({"n": [len(work)]})
    for i, m in enumerate(metrics):
        col = f"__m{i}"
        if grouped is not None:
            g = grouped[col]
            mean, std, cnt = g.mean(), g.std(ddof=1), g.count()
        else:
            vals = work[col]
            mean, std, cnt = (pd.Series([f(vals)]) for f in (pd.Series.mean, pd.Series.std, pd.Series.count))
        cnt = cnt.astype("int64")
        std = std.where(cnt != 1, 0.0)
        tq = cnt.map(lambda k: t_quantile(0.975, k - 1) if k >= 2 else 0.0).astype("float64")
        half = tq * std / np.sqrt(cnt.where(cnt > 0, 1))
        out[f"{m}_mean"] = mean
        out[f"{m}_std"] = std
        low, high = limits.get(m, (-np.inf, np.inf))
        out[f"{m}_ci95_low"] = (mean - half).clip(lower=low)
        out[f"{m}_ci95_high"] = (mean + half).clip(upper=high)
        out[f"{m}_n"] = cnt
    out = out.reset_index(drop=not keys).rename(columns=dict(zip(keys, by, strict=True)))
    return out[by + [c for c in out.columns if c not in by]]


def pareto_mask(
    df: pd.DataFrame,
    maximize: Sequence[str] = ("top1",),
    minimize: Sequence[str] = ("latency_ms_p50", "size_bytes_gzip"),
    tolerance: Mapping[str, float] | None = None,
) -> pd.Series:
    """Which rows are Pareto-optimal (not dominated by any other row).

    Row ``j`` dominates row ``i`` when it is at least as good in every objective and strictly better in
    one. Rows with a NaN / inf objective are never optimal and dominate nothing; exact duplicates of an
    optimal point are all optimal. ``tolerance`` makes values of a column that differ by less than that
    fraction of row ``i``'s value a tie (neither better): a measured latency is only known to a few percent,
    and a front drawn from its noise changes from one sitting to the next.

    Args:
        df: the table (e.g. runs, or an :func:`aggregate` result with ``_mean`` columns).
        maximize: columns where larger is better.
        minimize: columns where smaller is better.
        tolerance: column -> relative tie tolerance (e.g. ``{"latency_vs_baseline": 0.05}``).

    Returns:
        Boolean Series named ``pareto`` aligned with ``df.index``.

    Raises:
        ValueError: no objective given, or a column is missing / not numeric.

    Example:
        >>> t = pd.DataFrame({"top1": [0.9, 0.8, 0.7], "latency_ms_p50": [3.0, 1.0, 2.0]})
        >>> pareto_mask(t, maximize=["top1"], minimize=["latency_ms_p50"]).tolist()
        [True, True, False]
    """
    maximize, minimize = (
        [maximize] if isinstance(maximize, str) else list(maximize),
        ([minimize] if isinstance(minimize, str) else list(minimize)),
    )
    if not maximize and not minimize:
        raise ValueError("pareto_mask() needs at least one column to maximize or minimize")
    _require(df, maximize + minimize, "pareto_mask")
    tolerance = dict(tolerance or {})
    unknown = sorted(set(tolerance) - set(maximize) - set(minimize))
    if unknown or any(not 0 <= float(t) < 1 for t in tolerance.values()):
        raise ValueError(
            f"pareto_mask(tolerance={tolerance!r}): give objectives' columns with fractions in [0, 1)"
            + (f"; {unknown} are not objectives" if unknown else "")
        )
    cols = [-_numeric(df, c, "pareto_mask").to_numpy() for c in maximize]
    cols += [_numeric(df, c, "pareto_mask").to_numpy() for c in minimize]
    vals = np.column_stack(cols) if len(df) else np.empty((0, len(cols)))
    rel = np.array([float(tolerance.get(c, 0.0)) for c in [*maximize, *minimize]])
    finite = np.isfinite(vals).all(axis=1)
    idx = np.flatnonzero(finite)
    v = vals[idx]
    slack = np.abs(v) * rel  # per row i and objective: differences below it are ties
    mask = np.zeros(len(df), dtype=bool)
    chunk = max(1, 4_000_000 // max(1, len(v) * v.shape[1]))
    for start in range(0, len(v), chunk):
        block = v[start : start + chunk, None, :]
        tie = slack[start : start + chunk, None, :]
        not_worse = (v[None] <= block + tie).all(-1)
        better = (v[None] < block - tie).any(-1)
        mask[idx[start : start + chunk]] = ~(not_worse & better).any(-1)
    return pd.Series(mask, index=df.index, name="pareto")


def curve_crossings(
    ax: Sequence[float], ay: Sequence[float], bx: Sequence[float], by: Sequence[float], *, log_x: bool = False
) -> list[tuple[float, float]]:
    """Points where two polylines (e.g. two accuracy curves) intersect.

    Each curve is a sequence of vertices joined by straight segments; with ``log_x`` the segments are
    straight in log2(x), as drawn on a log axis, and the returned x is mapped back. Segments that overlap
    collinearly are not reported; a point shared by consecutive segments is reported once.

    Args:
        ax, ay: vertices of the first curve.
        bx, by: vertices of the second curve.
        log_x: intersect in log2(x) space (x must then be > 0).

    Returns:
        ``(x, y)`` pairs sorted by x.

    Example:
        >>> [(round(x, 6), round(y, 6)) for x, y in curve_crossings([2, 4], [0.9, 0.7], [2, 4], [0.8, 0.8])]
        [(3.0, 0.8)]
    """
    tx = np.log2 if log_x else np.asarray
    a = np.column_stack([tx(np.asarray(ax, dtype=float)), np.asarray(ay, dtype=float)])
    b = np.column_stack([tx(np.asarray(bx, dtype=float)), np.asarray(by, dtype=float)])
    found: list[tuple[float, float]] = []
    eps = 1e-12
    for i in range(len(a) - 1):
        p, r = a[i], a[i + 1] - a[i]
        for j in range(len(b) - 1):
            q, s = b[j], b[j + 1] - b[j]
            denom = r[0] * s[1] - r[1] * s[0]
            if abs(denom) <= eps * max(1.0, float(np.abs(r).max() * np.abs(s).max())):
                continue  # parallel or collinear
            qp = q - p
            t = (qp[0] * s[1] - qp[1] * s[0]) / denom
            u = (qp[0] * r[1] - qp[1] * r[0]) / denom
            if -eps <= t <= 1 + eps and -eps <= u <= 1 + eps:
                pt = p + t * r
                if not any(abs(pt[0] - f[0]) <= 1e-9 and abs(pt[1] - f[1]) <= 1e-9 for f in found):
                    found.append((float(pt[0]), float(pt[1])))
    found.sort()
    return [(float(2.0**x) if log_x else x, y) for x, y in found]

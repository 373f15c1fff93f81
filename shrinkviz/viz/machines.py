"""Latency figures name their machine and never mix machines silently.

A latency is a property of a model on one machine (INT8 speed alone differs 2-3x between AVX2 and VNNI
CPUs). Every figure that plots a latency calls :func:`check_one_machine`: runs timed on more than one
machine (``machine_id``) are refused unless the figure splits them by machine (``by_machine=True``). The
machine is named under the plot (:func:`machine_note`) and on hover (``machine``). Latency axes default to
``latency_vs_baseline`` (:func:`latency_x`), the per-run ratio to the dense baseline timed in the same
rounds, with its range over rounds as error bars (:func:`latency_error_x`).

Example:
    >>> import pandas as pd
    >>> runs = pd.DataFrame({"latency_ms_p50": [1.0, 2.0], "latency_vs_baseline": [1.0, 0.5],
    ...                      "machine_id": ["aa", "bb"], "cpu_model": ["X", "Y"]})
    >>> latency_x(runs)
    'latency_vs_baseline'
    >>> check_one_machine(runs, "frontier")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: frontier: these latencies were measured on 2 machines (aa: X, bb: Y) ...
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from shrinkviz.core.machine import describe
from shrinkviz.viz._style import (
    axis_title,
    color_for,
    display_label,
    empty_figure,
    finish,
    numeric,
    require_columns,
    usable,
)

LATENCY_PREFIXES = ("latency_",)


def is_latency(column: str | None) -> bool:
    """True for a latency column (absolute or ratio)."""
    return bool(column) and str(column).startswith(LATENCY_PREFIXES)


def latency_x(runs: pd.DataFrame, x: str | None = None) -> str:
    """``x`` when given, else ``latency_vs_baseline`` where the runs have it, else ``latency_ms_p50``."""
    if x:
        return x
    if (
        "latency_vs_baseline" in runs.columns
        and pd.to_numeric(runs["latency_vs_baseline"], errors="coerce").notna().any()
    ):
        return "latency_vs_baseline"
    return "latency_ms_p50"


def machines(df: pd.DataFrame) -> dict[str, str]:
    """machine_id -> one-line description, for the rows that name a machine."""
    if "machine_id" not in df.columns:
        return {}
    out: dict[str, str] = {}
    for row in df.to_dict("records"):
        mid = row.get("machine_id")
        if isinstance(mid, str) and mid and mid not in out:
            out[mid] = (
                describe(row) if row.get("cpu_isa") else f"{row.get('cpu_model') or 'unknown CPU'} [{mid}]"
            )
    return out


def check_one_machine(df: pd.DataFrame, where: str, by_machine: bool = False) -> None:
    """Refuse latencies from several machines in one figure unless it is split by machine.

    Raises:
        ValueError: more than one ``machine_id`` and ``by_machine`` is False.
    """
    found = machines(df)
    if len(found) > 1 and not by_machine:
        names = ", ".join(f"{k}: {v.split(' (')[0].split(' [')[0]}" for k, v in found.items())
        raise ValueError(
            f"{where}: these latencies were measured on {len(found)} machines ({names}) and are not "
            "comparable; keep one (runs[runs.machine_id == '...']) or split by machine (by_machine=True)"
        )


def machine_note(df: pd.DataFrame) -> str | None:
    """``'latency measured on <machine>'`` for the figure's note (None when the rows name none)."""
    found = machines(df)
    if not found:
        return None
    return "latency measured on " + "; ".join(found.values())


def by_machine_column(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a ``machine`` column (short machine name, shown on hover)."""
    if "machine_id" not in df.columns:
        return df
    names = machines(df)
    return df.assign(machine=df["machine_id"].map(lambda m: names.get(m, "") if isinstance(m, str) else ""))


def latency_error_x(sub: pd.DataFrame, x: str) -> dict | None:
    """Asymmetric error bars from ``<x>_min`` / ``<x>_max`` (the range over rounds), where present."""
    lo, hi = f"{x}_min", f"{x}_max"
    if lo not in sub.columns or hi not in sub.columns:
        return None
    vals = pd.to_numeric(sub[x], errors="coerce").to_numpy(dtype=float)
    low = pd.to_numeric(sub[lo], errors="coerce").to_numpy(dtype=float)
    high = pd.to_numeric(sub[hi], errors="coerce").to_numpy(dtype=float)
    if np.isnan(low).all():
        return None
    return {
        "type": "data",
        "symmetric": False,
        "array": np.nan_to_num(high - vals, nan=0.0),
        "arrayminus": np.nan_to_num(vals - low, nan=0.0),
        "thickness": 1,
        "width": 3,
    }


def latency_by_runtime(
    latency_df: pd.DataFrame, label: str | None = None, title: str | None = None
) -> go.Figure:
    """Measured latency per model (or label) and runtime: grouped bars of p50, whiskers up to p90.

    Args:
        latency_df: columns ``label`` or ``model``, ``latency_runtime``, ``latency_ms_p50`` and
            optionally ``latency_ms_p90``; several rows of one (label, runtime) are averaged.
        label: the column naming the bars' groups; default ``label`` if present, else ``model``.
        title: figure title.

    Returns:
        One bar trace per runtime (named after it), eager / compiled / onnxruntime first.

    Example:
        >>> fig = latency_by_runtime(pd.DataFrame({"model": ["resnet20"], "latency_runtime": ["eager"],
        ...                                        "latency_ms_p50": [1.5], "latency_ms_p90": [1.8]}))
        >>> fig.data[0].y.tolist()
        [1.5]
    """
    title = title or "Measured latency by runtime (bar: p50, whisker: p90)"
    if len(latency_df) == 0:
        return empty_figure(title, "No latency measurements: the table is empty.")
    if label is None:
        label = "label" if "label" in latency_df.columns else "model"
    require_columns(latency_df, [label, "latency_runtime", "latency_ms_p50"], "latency_by_runtime")
    ok, note = usable(latency_df, ["latency_ms_p50"])
    if ok.empty:
        return empty_figure(title, "No rows with a value for latency_ms_p50.", note)
    ok = ok.assign(
        __label=ok[label].map(display_label).to_numpy(),
        __rt=ok["latency_runtime"].map(display_label).to_numpy(),
    )
    if "latency_ms_p90" in ok.columns:
        ok["latency_ms_p90"] = numeric(ok, "latency_ms_p90")
    metrics = ["latency_ms_p50"] + (["latency_ms_p90"] if "latency_ms_p90" in ok.columns else [])
    agg = ok.groupby(["__rt", "__label"], sort=True)[metrics].mean().reset_index()
    labels = list(dict.fromkeys(ok["__label"]))
    from shrinkviz.deploy.runtimes import available_runtimes

    known = available_runtimes()
    runtimes = sorted(agg["__rt"].unique(), key=lambda r: (known.index(r) if r in known else len(known), r))
    fig = go.Figure()
    for rt in runtimes:
        sub = agg.loc[agg["__rt"] == rt].set_index("__label")
        sub = sub.loc[[lb for lb in labels if lb in sub.index]]
        p50 = sub["latency_ms_p50"].to_numpy()
        err = None
        if "latency_ms_p90" in sub.columns:
            up = np.nan_to_num(sub["latency_ms_p90"].to_numpy() - p50, nan=0.0)
            err = {
                "type": "data",
                "symmetric": False,
                "array": up,
                "arrayminus": np.zeros_like(up),
                "color": "#333",
            }
        fig.add_trace(
            go.Bar(
                x=sub.index.to_list(),
                y=p50,
                name=rt,
                marker_color=color_for(rt),
                error_y=err,
                customdata=sub["latency_ms_p90"].to_numpy() if "latency_ms_p90" in sub else None,
                hovertemplate="<b>%{x}</b> "
                + rt
                + "<br>p50: %{y:.3g} ms"
                + ("<br>p90: %{customdata:.3g} ms" if "latency_ms_p90" in sub else "")
                + "<extra></extra>",
            )
        )
    fig.update_layout(barmode="group", legend_title_text="runtime")
    fig.update_xaxes(title_text=label, categoryorder="array", categoryarray=labels)
    fig.update_yaxes(title_text=axis_title("latency_ms_p50"), rangemode="tozero")
    return finish(fig, title, [note])

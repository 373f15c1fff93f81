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

LATENCY_TIE = 0.05
"""Latencies within 5% of each other are a tie for the frontier's Pareto set (:func:`pareto_mask`'s
``tolerance``): re-timing a store in two sittings moved a run's side-by-side ratio by a median 1-3%, and up to
8-15%, so a front drawn from smaller differences would be drawn from the machine's noise."""


def is_latency(column: str | None) -> bool:
    """True for a latency column (absolute or ratio)."""
    return bool(column) and str(column).startswith(LATENCY_PREFIXES)


def latency_ties(objectives: list[str]) -> dict[str, float]:
    """The Pareto tie tolerance of each latency column among ``objectives`` (:data:`LATENCY_TIE`).

    Example:
        >>> latency_ties(["top1", "latency_vs_baseline", "size_bytes_gzip"])
        {'latency_vs_baseline': 0.05}
    """
    return {m: LATENCY_TIE for m in objectives if is_latency(m)}


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


def speedup_by_runtime(
    latency: pd.DataFrame,
    label: str = "design",
    facet: str | None = None,
    title: str | None = None,
    by_machine: bool = False,
) -> go.Figure:
    """Measured speedup over the dense baseline per variant and runtime, from stored latency rows
    (``Store.latency()`` / ``latest_latency``): grouped bars of ``1 / latency_vs_baseline``, whiskers the
    range over the interleaved rounds; absolute ms, both runtimes and the machine on hover. Rows with an
    ``error`` (a runtime that could not run the model) are left out and counted in the note.

    Args:
        latency: long-form latency rows merged with the runs column named by ``label`` (and ``facet``).
        label: the column naming the bars' groups.
        facet: optional column of one subplot row each (e.g. ``model``).
        title: figure title.
        by_machine: allow rows of several machines (they must then differ in ``facet``).

    Example:
        >>> rows = pd.DataFrame({"design": ["dense", "int8"], "runtime": ["eager", "eager"],
        ...                      "latency_vs_baseline": [1.0, 0.25], "latency_ms_p50": [4.0, 1.0]})
        >>> [round(float(y), 2) for y in speedup_by_runtime(rows).data[0].y]
        [1.0, 4.0]
    """
    title = (
        title or "Measured speedup over the dense baseline, timed side by side (whisker: range over rounds)"
    )
    require_columns(latency, [label, "runtime", "latency_vs_baseline"], "speedup_by_runtime")
    check_one_machine(latency, "speedup_by_runtime", by_machine)
    failed = latency["error"].fillna("").astype(bool) if "error" in latency.columns else False
    ok = latency[~failed] if "error" in latency.columns else latency
    ok = ok[pd.to_numeric(ok["latency_vs_baseline"], errors="coerce").notna()]
    left = int(len(latency) - len(ok))
    note = (
        f"{left} measurement(s) left out: the runtime could not run the model (see 'error')" if left else None
    )
    if ok.empty:
        return empty_figure(title, "No stored latency ratio to plot.", note)
    ratio = numeric(ok, "latency_vs_baseline")
    frame = pd.DataFrame(
        {
            "label": ok[label].map(display_label).to_numpy(),
            "runtime": ok["runtime"].astype(str).to_numpy(),
            "facet": ok[facet].astype(str).to_numpy() if facet else "",
            "speedup": 1 / ratio.to_numpy(),
            "fast": 1 / numeric(ok, "latency_vs_baseline_min").to_numpy()
            if "latency_vs_baseline_min" in ok
            else np.nan,
            "slow": 1 / numeric(ok, "latency_vs_baseline_max").to_numpy()
            if "latency_vs_baseline_max" in ok
            else np.nan,
            "ms": numeric(ok, "latency_ms_p50").to_numpy() if "latency_ms_p50" in ok else np.nan,
            "base_ms": numeric(ok, "baseline_ms_p50").to_numpy() if "baseline_ms_p50" in ok else np.nan,
            "base_rt": ok["baseline_runtime"].astype(str).to_numpy() if "baseline_runtime" in ok else "",
        }
    )
    keys = ["facet", "runtime", "label"]
    frame = frame.groupby(keys, sort=False).agg(
        {**{c: "median" for c in ("speedup", "fast", "slow", "ms", "base_ms")}, "base_rt": "first"}
    )
    frame = frame.reset_index()
    from plotly.subplots import make_subplots

    from shrinkviz.deploy.runtimes import available_runtimes

    known = available_runtimes()
    runtimes = sorted(
        frame["runtime"].unique(), key=lambda r: (known.index(r) if r in known else len(known), r)
    )
    facets = list(dict.fromkeys(frame["facet"]))
    labels = list(dict.fromkeys(ok[label].map(display_label)))
    fig = make_subplots(rows=len(facets), cols=1, shared_xaxes=True, subplot_titles=facets if facet else None)
    for row, fval in enumerate(facets, start=1):
        for rt in runtimes:
            sub = frame[(frame["facet"] == fval) & (frame["runtime"] == rt)]
            if sub.empty:
                continue
            fig.add_trace(
                go.Bar(
                    x=sub["label"],
                    y=sub["speedup"],
                    name=rt,
                    legendgroup=rt,
                    showlegend=row == 1,
                    marker_color=color_for(rt),
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": np.nan_to_num(sub["fast"] - sub["speedup"], nan=0.0),
                        "arrayminus": np.nan_to_num(sub["speedup"] - sub["slow"], nan=0.0),
                        "color": "#333",
                    },
                    customdata=np.stack([sub["ms"], sub["base_ms"], sub["base_rt"]], axis=-1),
                    hovertemplate="<b>%{x}</b> on "
                    + rt
                    + "<br>%{y:.2f}x the baseline (%{customdata[1]:.3g} ms on %{customdata[2]})"
                    + "<br>p50: %{customdata[0]:.3g} ms<extra></extra>",
                ),
                row=row,
                col=1,
            )
    fig.update_layout(barmode="group", legend_title_text="runtime", height=max(360, 260 * len(facets)))
    fig.update_xaxes(categoryorder="array", categoryarray=labels)
    fig.update_yaxes(title_text="speedup over the dense baseline (x)", rangemode="tozero")
    fig.add_hline(y=1, line_dash="dot", line_color="#999")
    return finish(fig, title, [machine_note(ok), note])

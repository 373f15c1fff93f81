"""Figures: pure functions from a results DataFrame to a plotly ``go.Figure``.

Accuracy curves (ShrinkBench's two views and the confounder overlay, built on them, are in
:mod:`shrinkviz.viz.confounders`) and, re-exported from :mod:`shrinkviz.viz.panels`, the frontier, the
ordering ablation, per-layer sparsity and latency by runtime. Every function follows the same input rules: an empty table gives an empty figure that says so,
a missing column raises ValueError naming it and the function, and failed runs or runs with a NaN in a
plotted metric are left out and counted in a note under the plot.

Example:
    >>> import pandas as pd
    >>> runs = pd.DataFrame({"strategy": ["global_weight"] * 2, "compression": [2.0, 4.0],
    ...                      "compression_ratio": [2.0, 4.0], "top1": [0.9, 0.8]})
    >>> fig = curves(runs)
    >>> [t.name for t in fig.data]
    ['global_weight 95% CI', 'global_weight', 'global_weight runs']
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from shrinkviz.metrics.stats import aggregate
from shrinkviz.viz._style import (
    DASHES,
    REFERENCE_LINE,
    axis_props,
    colors_for,
    display_label,
    empty_figure,
    finish,
    name_of,
    require_columns,
    rgba,
    run_hover,
    usable,
)
from shrinkviz.viz.machines import check_one_machine, is_latency, machine_note
from shrinkviz.viz.panels import frontier, latency_by_runtime, layer_sparsity, ordering_ablation

__all__ = [
    "curves",
    "frontier",
    "latency_by_runtime",
    "layer_sparsity",
    "ordering_ablation",
]

CONTEXT_COLUMNS = ("dataset", "model")


def context_columns(df: pd.DataFrame, exclude: Sequence[str]) -> list[str]:
    """Context columns that vary in the table: curves must not average across them."""
    return [
        c for c in CONTEXT_COLUMNS if c in df.columns and c not in exclude and df[c].nunique(dropna=False) > 1
    ]


def curve_table(ok: pd.DataFrame, x: str, y: str, keys: list[str], group: str | None) -> pd.DataFrame:
    """One row per (line, operating point): seed statistics of x and y plus the seeds and run ids.

    Rows are sorted by the line keys, then by the mean of x (the drawing order of each line).
    """
    g = group or x
    agg = aggregate(ok, by=[*keys, g], metrics=list(dict.fromkeys([x, y])))
    grouped = ok.groupby([*keys, g], dropna=False, sort=True)
    for col, out in (("seed", "seeds"), ("run_id", "run_ids")):
        if col in ok.columns:
            agg[out] = grouped[col].agg(lambda s: ", ".join(sorted(map(display_label, s)))).to_numpy()
        else:
            agg[out] = ""
    agg["__pos"] = np.arange(len(agg))
    return agg.sort_values([*keys, f"{x}_mean", "__pos"], kind="stable").drop(columns="__pos")


def _lines(table: pd.DataFrame, keys: list[str]) -> list[tuple[tuple, pd.DataFrame]]:
    if not keys:
        return [((), table)]
    return [
        (k if isinstance(k, tuple) else (k,), sub) for k, sub in table.groupby(keys, dropna=False, sort=True)
    ]


def _line_traces(
    sub: pd.DataFrame,
    runs: pd.DataFrame,
    label: str,
    x: str,
    y: str,
    group: str | None,
    color: str,
    dash: str,
    legend: bool,
) -> list[go.Scatter]:
    """CI band, mean line and faint per-run markers of one curve."""
    g = group or x
    xs = sub[f"{x}_mean"].to_numpy()
    lo, hi = sub[f"{y}_ci95_low"].to_numpy(), sub[f"{y}_ci95_high"].to_numpy()
    band = go.Scatter(
        x=np.concatenate([xs, xs[::-1]]),
        y=np.concatenate([hi, lo[::-1]]),
        fill="toself",
        fillcolor=rgba(color, 0.18),
        line={"width": 0},
        mode="lines",
        hoverinfo="skip",
        name=f"{label} 95% CI",
        legendgroup=label,
        showlegend=False,
    )
    custom = np.column_stack(
        [
            np.full(len(sub), label, dtype=object),
            sub[g].map(display_label).to_numpy(),
            sub[f"{y}_n"].to_numpy(),
            lo,
            hi,
            sub["seeds"].to_numpy(),
            sub["run_ids"].to_numpy(),
        ]
    )
    fmt = ":.2%" if y in {"top1", "top5", "val_top1"} else ":.4g"
    template = (
        "<b>%{customdata[0]}</b><br>"
        + f"{g}: %{{customdata[1]}}<br>"
        + f"{y}: %{{y{fmt}}} (95% CI %{{customdata[3]{fmt}}} to %{{customdata[4]{fmt}}}, "
        + "n=%{customdata[2]})<br>"
        + f"{x}: %{{x:.4g}}<br>"
        + "seeds: %{customdata[5]}<br>runs: %{customdata[6]}<extra></extra>"
    )
    line = go.Scatter(
        x=xs,
        y=sub[f"{y}_mean"].to_numpy(),
        mode="lines+markers",
        name=label,
        legendgroup=label,
        showlegend=legend,
        line={"color": color, "dash": dash, "width": 2},
        marker={"size": 7, "color": color},
        customdata=custom,
        hovertemplate=template,
    )
    data, run_template = run_hover(runs, x, y)
    points = go.Scatter(
        x=runs[x].to_numpy(),
        y=runs[y].to_numpy(),
        mode="markers",
        name=f"{label} runs",
        legendgroup=label,
        showlegend=False,
        opacity=0.45,
        marker={"size": 5, "color": color, "symbol": "circle-open"},
        customdata=data,
        hovertemplate=run_template,
    )
    return [band, line, points]


def add_curves(
    fig: go.Figure,
    ok: pd.DataFrame,
    x: str,
    y: str,
    keys: list[str],
    group: str | None,
    *,
    prefix: str = "",
    legend: bool = True,
    row: int | None = None,
    col: int | None = None,
) -> list[tuple[tuple, str, pd.DataFrame]]:
    """Add all curves (colour by the first key, dash by the rest); return (key, label, table) per line."""
    table = curve_table(ok, x, y, keys, group)
    lines = _lines(table, keys)
    colours = colors_for(k[0] for k, _ in lines) if keys else {}
    rests = sorted({tuple(map(display_label, k[1:])) for k, _ in lines})
    out = []
    for key, sub in lines:
        parts = [f"{prefix}{display_label(key[0])}" if key else "runs", *map(display_label, key[1:])]
        label = " · ".join(parts)
        colour = colours.get(display_label(key[0]), "#1f77b4") if key else "#1f77b4"
        dash = DASHES[rests.index(tuple(map(display_label, key[1:]))) % len(DASHES)]
        mask = np.ones(len(ok), dtype=bool)
        for k, v in zip(keys, key, strict=True):
            mask &= (
                ok[k].isna().to_numpy() if pd.isna(v) else (ok[k] == v).to_numpy(dtype=bool, na_value=False)
            )
        for trace in _line_traces(sub, ok.loc[mask], label, x, y, group, colour, dash, legend):
            fig.add_trace(trace, row=row, col=col)
        out.append((key, label, sub))
    return out


def baseline_line(fig: go.Figure, ok: pd.DataFrame, y: str, keys_vary: bool, **where) -> None:
    """Dotted line at the dense baseline's top-1 when the table has one baseline context."""
    if y != "top1" or keys_vary or "baseline_top1" not in ok.columns:
        return
    b = pd.to_numeric(ok["baseline_top1"], errors="coerce").mean()
    if np.isfinite(b):
        fig.add_hline(
            y=float(b),
            line=REFERENCE_LINE,
            name="baseline",
            annotation_text=f"dense baseline {b:.2%}",
            annotation_position="bottom left",
            **where,
        )


def curves(
    runs: pd.DataFrame,
    x: str = "compression_ratio",
    y: str = "top1",
    color: str = "strategy",
    group: str | None = "compression",
    title: str | None = None,
) -> go.Figure:
    """Accuracy (or any metric) against compression or speedup: one line per ``color`` value.

    Runs of one line are grouped into operating points by ``group`` (the target compression, so the
    seeds of one setting fall together even though their achieved ratios differ); each point is drawn at
    the mean x and mean y over its seeds, with a shaded 95% Student-t band (see :func:`aggregate`) and
    the individual runs as faint markers. When the table mixes datasets or models, lines are split by
    them too (same colour, other dash). Compression and speedup axes are log2.

    Args:
        runs: runs table (``schema.RUN_COLUMNS``).
        x: column on the x axis, e.g. ``"compression_ratio"`` or ``"speedup_theoretical"``.
        y: metric on the y axis.
        color: column giving one line per value.
        group: column defining operating points; ``None`` groups by x itself.
        title: figure title (a default is derived from the axes).

    Returns:
        Figure with three traces per line, named ``"<label> 95% CI"``, ``"<label>"`` and ``"<label> runs"``.

    Example:
        >>> import pandas as pd
        >>> runs = pd.DataFrame({"strategy": "random", "compression": [2.0, 4.0], "top1": [0.9, 0.8],
        ...                      "speedup_theoretical": [1.8, 3.1]})
        >>> fig = curves(runs, x="speedup_theoretical")
        >>> fig.data[1].name, fig.data[1].x.tolist(), fig.layout.xaxis.type
        ('random', [1.8, 3.1], 'log')
    """
    title = title or f"{name_of(y)} vs {name_of(x)}: mean and 95% CI over seeds"
    if len(runs) == 0:
        return empty_figure(title, "No runs to plot: the table is empty.")
    require_columns(runs, [x, y, color, group], "curves")
    latency = is_latency(x) or is_latency(y)
    if latency:  # a curve averages over runs: all of them must come from one machine
        check_one_machine(runs, "curves")
    ok, note = usable(runs, [y, x])
    if ok.empty:
        return empty_figure(title, f"No runs with a value for {x} and {y}.", note)
    fig = go.Figure()
    ctx = context_columns(ok, [color])
    add_curves(fig, ok, x, y, [color, *ctx], group)
    fig.update_xaxes(**axis_props(x))
    fig.update_yaxes(**axis_props(y))
    baseline_line(fig, ok, y, bool(ctx))
    fig.update_layout(legend_title_text=color)
    return finish(fig, title, [note, machine_note(ok) if latency else None])

"""Figures of deployment cost: the accuracy-size-latency frontier, the P/Q/D ordering ablation,
per-layer sparsity of one run and measured latency by runtime. Same input rules as
:mod:`shrinkviz.viz.figures` (which re-exports these).

Example:
    >>> import pandas as pd
    >>> runs = pd.DataFrame({"method": ["prune", "quant"], "top1": [0.9, 0.8],
    ...                      "latency_ms_p50": [2.0, 1.0], "size_bytes_gzip": [100, 50]})
    >>> frontier(runs).data[-1].name
    'Pareto-optimal (2)'
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from shrinkviz.metrics.stats import aggregate, pareto_mask
from shrinkviz.viz._style import (
    MAXIMIZE_COLUMNS,
    REFERENCE_LINE,
    axis_props,
    axis_title,
    color_for,
    colors_for,
    display_label,
    empty_figure,
    finish,
    fraction_range,
    is_fraction,
    name_of,
    numeric,
    require_columns,
    run_hover,
    technique,
    usable,
)
from shrinkviz.viz.machines import (
    by_machine_column,
    check_one_machine,
    is_latency,
    latency_by_runtime,
    latency_error_x,
    latency_ties,
    latency_x,
    machine_note,
)

__all__ = ["frontier", "latency_by_runtime", "layer_sparsity", "ordering_ablation"]

ORDERS = ("PQD", "PDQ", "QPD", "QDP", "DPQ", "DQP")
SINGLES = ("prune", "quant", "distill")


def frontier_parts(
    runs: pd.DataFrame,
    x: str | None = None,
    y: str = "top1",
    size: str | None = "size_bytes_gzip",
    color: str | None = None,
    pareto: bool = True,
    title: str | None = None,
    by_machine: bool = False,
) -> tuple[go.Figure, pd.DataFrame]:
    """:func:`frontier` plus the plotted rows (with a boolean ``pareto`` column) for widgets and tests."""
    x = latency_x(runs, x)
    latency = is_latency(x) or is_latency(y)
    if latency:
        check_one_machine(runs, "frontier", by_machine)
        runs = by_machine_column(runs)
    title = title or f"{name_of(y)} vs {name_of(x)}" + (f", marker area ~ {name_of(size)}" if size else "")
    if len(runs) == 0:
        return empty_figure(title, "No runs to plot: the table is empty."), runs.iloc[0:0]
    if color == "technique" and "technique" not in runs.columns:
        color = None  # derived below from order / method
    require_columns(runs, [x, y, size, color], "frontier")
    metrics = list(dict.fromkeys(m for m in (y, x, size) if m))
    ok, note = usable(runs, metrics)
    if ok.empty:
        return empty_figure(title, f"No runs with a value for {', '.join(metrics)}.", note), ok
    label_col = color or "technique"
    labels = ok[color].map(display_label) if color else technique(ok).map(display_label)
    split = latency and by_machine and "machine_id" in ok.columns
    if split:
        labels = labels + " @ " + ok["machine_id"].astype(str)
    ok = ok.assign(**{"__label": labels.to_numpy()})
    objectives = list(dict.fromkeys(metrics))
    keys = ok["machine_id"].astype(str).to_numpy() if split else np.zeros(len(ok), dtype=str)
    front = np.zeros(len(ok), dtype=bool)
    for key in dict.fromkeys(keys):  # one front per machine: latencies of different machines do not compete
        where = keys == key
        front[where] = pareto_mask(
            ok.loc[where],
            maximize=[m for m in objectives if m in MAXIMIZE_COLUMNS],
            minimize=[m for m in objectives if m not in MAXIMIZE_COLUMNS],
            tolerance=latency_ties(objectives),
        ).to_numpy(dtype=bool)
    ok["pareto"] = front
    if size:
        smax = float(ok[size].abs().max()) or 1.0
        sizes = 8.0 + 22.0 * np.sqrt(ok[size].abs().to_numpy() / smax)
    else:
        sizes = np.full(len(ok), 10.0)
    ok["__size"] = sizes
    fig = go.Figure()
    colours = colors_for(ok["__label"])
    extra = [c for c in (size, "technique") if c] if not color else [c for c in (size, color) if c]
    for label, sub in ok.groupby("__label", sort=True):
        data, template = run_hover(sub.assign(technique=sub["__label"]), x, y, extra)
        fig.add_trace(
            go.Scatter(
                x=sub[x].to_numpy(),
                y=sub[y].to_numpy(),
                mode="markers",
                name=str(label),
                marker={
                    "color": colours[str(label)],
                    "size": sub["__size"].to_numpy(),
                    "opacity": 0.8,
                    "line": {"width": 0.5, "color": "white"},
                },
                error_x=latency_error_x(sub, x) if is_latency(x) else None,
                customdata=data,
                hovertemplate=template,
            )
        )
    if pareto:
        front = ok.loc[ok["pareto"]].sort_values([x, y], kind="stable")
        fig.add_trace(
            go.Scatter(
                x=front[x].to_numpy(),
                y=front[y].to_numpy(),
                name=f"Pareto-optimal ({len(front)})",
                mode="markers" if size else "lines+markers",
                line={"color": "#111", "width": 1, "dash": "dot", "shape": "hv"},
                marker={
                    "size": front["__size"].to_numpy() + 6,
                    "color": "rgba(0,0,0,0)",
                    "symbol": "circle",
                    "line": {"width": 2, "color": "#111"},
                },
                customdata=front["run_id"].to_numpy() if "run_id" in front.columns else None,
                hovertemplate="Pareto-optimal<br>run: %{customdata}<extra></extra>",
            )
        )
    fig.update_xaxes(**axis_props(x))
    fig.update_yaxes(**axis_props(y))
    fig.update_layout(legend_title_text=label_col)
    notes = [note, machine_note(ok) if latency else None]
    return finish(fig, title, notes), ok.drop(columns=["__label", "__size"])


def frontier(
    runs: pd.DataFrame,
    x: str | None = None,
    y: str = "top1",
    size: str | None = "size_bytes_gzip",
    color: str | None = None,
    pareto: bool = True,
    title: str | None = None,
    by_machine: bool = False,
) -> go.Figure:
    """Accuracy-size-latency frontier: one marker per run, Pareto-optimal runs circled.

    The Pareto set is computed over x, y and size (when given) with :func:`pareto_mask`: accuracies,
    compression and speedup are maximised, everything else (latency, size) minimised; latencies within 5%
    of each other are a tie (:data:`~shrinkviz.viz.machines.LATENCY_TIE`: the machine's noise). Marker area is
    proportional to ``size``. Colours are the runs' technique (pipeline order such as ``PQD``, else the
    method) unless ``color`` names a column.

    Args:
        runs: runs table.
        x: cost on the x axis (default ``latency_vs_baseline``: latency as a ratio to the dense baseline
            timed side by side, with its range over rounds as error bars; ``latency_ms_p50`` for tables
            without it); y: accuracy on the y axis. Hover shows absolute ms, runtime and machine.
        size: column encoded as marker area and used as a third objective; ``None`` for neither.
        color: categorical column for colours; ``None`` (or ``"technique"``) for the technique.
        pareto: add the ``"Pareto-optimal (k)"`` trace (last trace; joined by a step line when 2-D).
        title: figure title.
        by_machine: allow latencies of several machines, one trace group and one Pareto front per machine
            (otherwise such runs are refused with a ValueError). The machine is named under the plot.

    Example:
        >>> import pandas as pd
        >>> runs = pd.DataFrame({"method": ["prune", "quant", "pipeline"], "top1": [0.9, 0.8, 0.7],
        ...                      "latency_ms_p50": [2.0, 1.0, 1.5], "size_bytes_gzip": [100, 50, 80]})
        >>> fig = frontier(runs, x="latency_ms_p50", y="top1", size="size_bytes_gzip")
        >>> [t.name for t in fig.data], fig.data[-1].x.tolist()  # quant beats pipeline on all three
        (['pipeline', 'prune', 'quant', 'Pareto-optimal (2)'], [1.0, 2.0])
    """
    return frontier_parts(runs, x, y, size, color, pareto, title, by_machine)[0]


def _ablation_labels(ok: pd.DataFrame) -> pd.Series:
    """Bar label: technique, plus the strategy / compression / quantization when they vary within it."""
    base = technique(ok).map(display_label)
    labels = base.copy()
    for col in ("strategy", "compression", "quantization"):
        if col not in ok.columns:
            continue
        varies = ok.groupby(base)[col].transform(lambda s: s.nunique(dropna=False) > 1).astype(bool)
        labels = labels.where(
            ~varies, labels + " " + ok[col].map(display_label) + ("×" if col == "compression" else "")
        )
    return labels


def _bar_order(label: str) -> tuple[int, str]:
    head = label.split(" ")[0]
    if head == "baseline":
        return (0, label)
    if head in SINGLES:
        return (1 + SINGLES.index(head), label)
    if head in ORDERS:
        return (10 + ORDERS.index(head), label)
    return (100, label)


def ordering_ablation(
    runs: pd.DataFrame,
    y: str = "top1",
    cost: str = "latency_ms_p50",
    include_baseline: bool = True,
    title: str | None = None,
) -> go.Figure:
    """The six P/Q/D orders against the single techniques: y and cost as bars with 95% CI error bars.

    Rows kept: those with a pipeline ``order`` (``PQD`` ...), those with ``method`` in
    {prune, quant, distill} and no order, and (``include_baseline``) ``method == 'baseline'``. Each bar
    is the mean over seeds (see :func:`aggregate`); a technique whose runs differ in strategy, target
    compression or quantization gets one bar per value. Order: baseline, prune, quant, distill, then
    PQD, PDQ, QPD, QDP, DPQ, DQP.

    Returns:
        Two panels, traces named ``y`` (left) and ``cost`` (right); ``error_y.array`` / ``arrayminus``
        hold the distances from the mean to the CI bounds.

    Example:
        >>> import pandas as pd
        >>> runs = pd.DataFrame({"method": ["baseline", "prune", "prune", "pipeline", "pipeline"],
        ...                      "order": ["", "", "", "PQ", "PQ"], "top1": [0.92, 0.90, 0.88, 0.85, 0.87],
        ...                      "latency_ms_p50": [2.0, 1.8, 1.8, 0.9, 1.1]})
        >>> fig = ordering_ablation(runs)
        >>> top1, latency = fig.data
        >>> list(top1.x), top1.y.round(4).tolist(), latency.y.round(4).tolist()
        (['baseline', 'prune', 'PQ'], [0.92, 0.89, 0.86], [2.0, 1.8, 1.0])
    """
    title = title or f"Ordering ablation: {name_of(y)} and {name_of(cost)} (mean and 95% CI over seeds)"
    if len(runs) == 0:
        return empty_figure(title, "No runs to plot: the table is empty.")
    require_columns(runs, ["method", "order", y, cost], "ordering_ablation")
    method = runs["method"].astype("string").fillna("")
    order = runs["order"].astype("string").fillna("")
    keep = (order != "") | (method.isin(SINGLES) & (order == ""))
    if include_baseline:
        keep |= (method == "baseline") & (order == "")
    scope = runs.loc[keep.to_numpy(dtype=bool)]
    if scope.empty:
        return empty_figure(title, "No pipeline or single-technique runs (method prune/quant/distill).")
    ok, note = usable(scope, [y, cost])
    if ok.empty:
        return empty_figure(title, f"No runs with a value for {y} and {cost}.", note)
    ok = ok.assign(bar=_ablation_labels(ok).to_numpy())
    agg = aggregate(ok, by="bar", metrics=[y, cost])
    agg = agg.iloc[sorted(range(len(agg)), key=lambda i: _bar_order(agg["bar"].iloc[i]))]
    bars = agg["bar"].tolist()
    colours = [color_for(b.split(" ")[0]) for b in bars]
    fig = make_subplots(
        rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=(axis_title(y), axis_title(cost))
    )
    for col, m in enumerate((y, cost), start=1):
        mean = agg[f"{m}_mean"].to_numpy()
        custom = np.column_stack([agg[f"{m}_n"].to_numpy(), agg[f"{m}_ci95_low"], agg[f"{m}_ci95_high"]])
        fmt = ":.2%" if m in {"top1", "top5", "val_top1"} else ":.4g"
        fig.add_trace(
            go.Bar(
                x=bars,
                y=mean,
                name=m,
                marker_color=colours,
                showlegend=False,
                customdata=custom,
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "color": "#333",
                    "array": agg[f"{m}_ci95_high"].to_numpy() - mean,
                    "arrayminus": mean - agg[f"{m}_ci95_low"].to_numpy(),
                },
                hovertemplate=f"<b>%{{x}}</b><br>{m}: %{{y{fmt}}}<br>95% CI %{{customdata[1]{fmt}}} to "
                f"%{{customdata[2]{fmt}}}<br>seeds: %{{customdata[0]}}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        props = axis_props(m)
        if is_fraction(m):  # accuracies differ by points: zoom on the data (CI whiskers clipped at 100%)
            props["range"] = fraction_range(agg[f"{m}_ci95_low"], agg[f"{m}_ci95_high"].clip(upper=1.0))
        fig.update_yaxes(**props, row=1, col=col)
    fig.update_xaxes(categoryorder="array", categoryarray=bars)
    return finish(fig, title, [note])


def layer_sparsity(layers: pd.DataFrame, run_id: str, title: str | None = None) -> go.Figure:
    """Per-layer sparsity of one run as bars, in the table's layer order, with the overall sparsity.

    Args:
        layers: layers table (``schema.LAYER_COLUMNS``).
        run_id: the run to show.
        title: figure title.

    Returns:
        One bar trace named ``"sparsity"`` (x: layer names, y: sparsity fractions); a dotted line at
        the overall weight sparsity ``1 - sum(nonzero) / sum(params)`` when those columns exist.

    Example:
        >>> import pandas as pd
        >>> layers = pd.DataFrame({"run_id": "a", "layer": ["conv1", "fc"], "sparsity": [0.5, 0.25],
        ...                        "params": [100, 300], "nonzero": [50, 225]})
        >>> fig = layer_sparsity(layers, run_id="a")
        >>> list(fig.data[0].x), fig.data[0].y.tolist(), fig.layout.shapes[0].y0  # overall: 1 - 275 / 400
        (['conv1', 'fc'], [0.5, 0.25], 0.3125)
    """
    title = title or f"Per-layer sparsity, run {run_id}"
    if len(layers) == 0:
        return empty_figure(title, "No per-layer rows: the table is empty.")
    require_columns(layers, ["run_id", "layer", "sparsity"], "layer_sparsity")
    rows = layers.loc[(layers["run_id"] == run_id).to_numpy(dtype=bool, na_value=False)]
    if rows.empty:
        return empty_figure(title, f"No per-layer rows for run {run_id!r}.")
    ok, note = usable(rows, ["sparsity"])
    note = note.replace("runs", "layers").replace("run ", "layer ") if note else None
    fig = go.Figure()
    cols = [c for c in ("kind", "shape", "params", "nonzero") if c in ok.columns]
    custom = ok[cols].astype(object).to_numpy() if cols else None
    template = (
        "<b>%{x}</b><br>sparsity: %{y:.2%}"
        + "".join(f"<br>{c}: %{{customdata[{i}]}}" for i, c in enumerate(cols))
        + "<extra></extra>"
    )
    kinds = ok["kind"].map(display_label) if "kind" in ok.columns else pd.Series("layer", index=ok.index)
    kind_colours = {"Conv2d": "#4c72b0", "Linear": "#dd8452"}
    fig.add_trace(
        go.Bar(
            x=ok["layer"].astype(str).to_numpy(),
            y=ok["sparsity"].to_numpy(),
            name="sparsity",
            marker_color=[kind_colours.get(k, "#8c8c8c") for k in kinds],
            customdata=custom,
            hovertemplate=template,
        )
    )
    if {"params", "nonzero"} <= set(ok.columns):
        total = numeric(ok, "params").sum()
        if total > 0:
            overall = 1.0 - numeric(ok, "nonzero").sum() / total
            fig.add_hline(
                y=float(overall),
                line=REFERENCE_LINE,
                name="overall",
                annotation_text=f"overall {overall:.1%}",
                annotation_position="top left",
            )
    fig.update_yaxes(range=[0, 1], tickformat=".0%", title_text="sparsity (fraction of weights = 0)")
    fig.update_xaxes(title_text="layer", tickangle=-45)
    return finish(fig, title, [note])

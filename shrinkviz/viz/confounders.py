"""ShrinkBench's views of a sweep: accuracy vs compression and vs theoretical speedup side by side, and the
same method's curve from different baselines or finetuning presets overlaid with the points where the
curves cross. Statistics and input rules as :func:`shrinkviz.viz.figures.curves`.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from shrinkviz.metrics.stats import curve_crossings
from shrinkviz.viz._style import (
    LOG2_COLUMNS,
    axis_props,
    display_label,
    empty_figure,
    finish,
    name_of,
    require_columns,
    usable,
)
from shrinkviz.viz.figures import add_curves, baseline_line, context_columns

__all__ = ["baseline_confounder", "shrinkbench_views"]


def shrinkbench_views(
    runs: pd.DataFrame,
    y: str = "top1",
    color: str = "strategy",
    group: str | None = "compression",
    title: str | None = None,
) -> go.Figure:
    """ShrinkBench's two views side by side: y vs compression ratio and y vs theoretical speedup.

    Same statistics as :func:`curves`. A run needs both ``compression_ratio`` and
    ``speedup_theoretical`` (and ``y``) to appear, so both panels show the same runs.

    Returns:
        Figure with two subplots sharing the y axis; the right panel's traces have no legend entries.

    Example:
        >>> import pandas as pd
        >>> runs = pd.DataFrame({"strategy": "random", "compression": [2.0, 4.0], "top1": [0.9, 0.8],
        ...                      "compression_ratio": [2.0, 4.0], "speedup_theoretical": [1.8, 3.1]})
        >>> fig = shrinkbench_views(runs)
        >>> [(t.name, t.x.tolist(), t.showlegend) for t in fig.data if t.name == "random"]
        [('random', [2.0, 4.0], True), ('random', [1.8, 3.1], False)]
    """
    xs = ("compression_ratio", "speedup_theoretical")
    title = title or f"{name_of(y)} vs compression and vs theoretical speedup"
    if len(runs) == 0:
        return empty_figure(title, "No runs to plot: the table is empty.")
    require_columns(runs, [*xs, y, color, group], "shrinkbench_views")
    ok, note = usable(runs, [y, *xs])
    if ok.empty:
        return empty_figure(title, f"No runs with a value for {y}, {xs[0]} and {xs[1]}.", note)
    fig = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        horizontal_spacing=0.05,
        subplot_titles=("accuracy vs compression ratio", "accuracy vs theoretical speedup"),
    )
    ctx = context_columns(ok, [color])
    for col, x in enumerate(xs, start=1):
        add_curves(fig, ok, x, y, [color, *ctx], group, legend=col == 1, row=1, col=col)
        fig.update_xaxes(**axis_props(x), row=1, col=col)
        fig.update_yaxes(**axis_props(y), row=1, col=col)
    fig.update_yaxes(title_text=None, row=1, col=2)
    baseline_line(fig, ok, y, bool(ctx), row="all", col="all")
    fig.update_layout(legend_title_text=color)
    return finish(fig, title, [note])


def baseline_confounder(
    runs: pd.DataFrame,
    by: str = "baseline_recipe",
    x: str = "compression_ratio",
    y: str = "top1",
    strategy: str | None = None,
    group: str | None = "compression",
    title: str | None = None,
) -> go.Figure:
    """The same method's curve from different baselines or finetuning presets, overlaid, with crossings.

    One curve (mean and 95% CI over seeds, as in :func:`curves`) per value of ``by``; colour encodes
    ``by``, dash the strategy when several are shown. Where two curves of the same strategy cross (in
    the drawn, log2 space), an ``x`` marker is placed: a crossing means the verdict "A beats B" depends
    on the baseline. The markers are the trace named ``"crossings"`` (always present, maybe empty).

    Args:
        runs: runs table.
        by: the confounder: ``"baseline_recipe"``, ``"baseline_seed"`` or ``"finetune"``.
        x: x column; y: metric.
        strategy: keep only this pruning strategy (``None`` keeps all, one dash each).
        group: operating-point column (see :func:`curves`).
        title: figure title.

    Example:
        >>> import pandas as pd
        >>> runs = pd.DataFrame({"strategy": "global_weight", "finetune": ["short", "short", "long", "long"],
        ...                      "compression": [2.0, 8.0] * 2, "compression_ratio": [2.0, 8.0] * 2,
        ...                      "top1": [0.9, 0.6, 0.8, 0.7]})
        >>> fig = baseline_confounder(runs, by="finetune", strategy="global_weight")
        >>> crossings = fig.data[-1]  # the lines cross halfway between x2 and x8 on the log2 axis
        >>> crossings.name, crossings.x.tolist(), crossings.y.round(4).tolist()
        ('crossings', [4.0], [0.75])
    """
    title = title or f"{name_of(y)} vs {name_of(x)} by {by}"
    if len(runs) == 0:
        return empty_figure(title, "No runs to plot: the table is empty.")
    require_columns(
        runs, [by, x, y, group, "strategy" if strategy is not None else None], "baseline_confounder"
    )
    if strategy is not None:
        runs = runs.loc[(runs["strategy"] == strategy).to_numpy(dtype=bool, na_value=False)]
        title = f"{title} ({strategy})"
    ok, note = usable(runs, [y, x])
    if ok.empty:
        why = f"No runs of strategy {strategy!r}." if strategy is not None else f"No runs with {x} and {y}."
        return empty_figure(title, why, note)
    rest = (
        ["strategy"] if "strategy" in ok.columns and by != "strategy" and ok["strategy"].nunique() > 1 else []
    )
    rest += context_columns(ok, [by, *rest])
    fig = go.Figure()
    lines = add_curves(fig, ok, x, y, [by, *rest], group, prefix=f"{by}=")
    pts: list[tuple[float, float, str]] = []
    for (ka, la, a), (kb, lb, b) in itertools.combinations(lines, 2):
        if tuple(map(display_label, ka[1:])) != tuple(map(display_label, kb[1:])):
            continue
        for cx, cy in curve_crossings(
            a[f"{x}_mean"], a[f"{y}_mean"], b[f"{x}_mean"], b[f"{y}_mean"], log_x=x in LOG2_COLUMNS
        ):
            pts.append((cx, cy, f"{la} × {lb}"))
    pts.sort()
    fig.add_trace(
        go.Scatter(
            x=np.array([p[0] for p in pts], dtype=float),
            y=np.array([p[1] for p in pts], dtype=float),
            mode="markers",
            name="crossings",
            showlegend=bool(pts),
            customdata=np.array([p[2] for p in pts], dtype=object),
            marker={"symbol": "x", "size": 12, "color": "#111", "line": {"width": 1}},
            hovertemplate="curves cross: %{customdata}<br>"
            + f"{x}: %{{x:.3g}}<br>{y}: %{{y:.4g}}"
            + "<extra></extra>",
        )
    )
    crossing_note = (
        f"{len(pts)} crossing{'s' if len(pts) != 1 else ''}: which {by} looks better depends on {x}"
        if pts
        else None
    )
    fig.update_xaxes(**axis_props(x))
    fig.update_yaxes(**axis_props(y))
    fig.update_layout(legend_title_text=by)
    return finish(fig, title, [crossing_note, note])

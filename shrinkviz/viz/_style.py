"""Shared look and input handling of the figures: palette, axis labels, hover text, bad-input rules.

Private to :mod:`shrinkviz.viz`; the palette is public through :func:`color_for`.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from shrinkviz.experiments.schema import LAYER_COLUMNS, RUN_COLUMNS

TEMPLATE = "plotly_white"

#: Fixed colours so a strategy, order, technique or runtime looks the same in every figure.
PALETTE: dict[str, str] = {
    # pruning strategies
    "global_weight": "#1f77b4",
    "layer_weight": "#ff7f0e",
    "global_gradient": "#2ca02c",
    "layer_gradient": "#d62728",
    "random": "#7f7f7f",
    # single techniques and the dense reference
    "baseline": "#222222",
    "prune": "#4c72b0",
    "quant": "#dd8452",
    "distill": "#55a868",
    # the six pipeline orders
    "PQD": "#8c564b",
    "PDQ": "#e377c2",
    "QPD": "#17becf",
    "QDP": "#bcbd22",
    "DPQ": "#9467bd",
    "DQP": "#393b79",
    # latency runtimes
    "eager": "#636efa",
    "compiled": "#ef553b",
    "onnxruntime": "#00cc96",
}
_FALLBACK = (
    "#1b9e77",
    "#d95f02",
    "#7570b3",
    "#e7298a",
    "#66a61e",
    "#e6ab02",
    "#a6761d",
    "#666666",
    "#a6cee3",
    "#fb9a99",
    "#b2df8a",
    "#fdbf6f",
    "#cab2d6",
    "#6a3d9a",
    "#b15928",
    "#1f78b4",
)
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")

#: Axes drawn in log2 (ratios of sizes or speeds).
LOG2_COLUMNS = frozenset({"compression", "compression_ratio", "speedup_theoretical", "latency_vs_baseline"})
#: Columns where larger is better; every other numeric column is a cost.
MAXIMIZE_COLUMNS = frozenset(
    {"top1", "top5", "val_top1", "baseline_top1", "compression_ratio", "speedup_theoretical", "compression"}
)
_TITLES = {
    "top1": "top-1 accuracy",
    "top5": "top-5 accuracy",
    "val_top1": "validation top-1 accuracy",
    "baseline_top1": "baseline top-1 accuracy",
    "compression": "target compression (×)",
    "compression_ratio": "compression ratio (×)",
    "speedup_theoretical": "theoretical speedup (×)",
    "size_bytes_raw": "size on disk (bytes)",
    "size_bytes_gzip": "size on disk, gzip (bytes)",
    "latency_ms_p50": "latency p50 (ms)",
    "latency_ms_p90": "latency p90 (ms)",
    "latency_vs_baseline": "latency vs dense baseline (×, timed side by side)",
    "params_nonzero": "nonzero parameters (count)",
    "macs_nonzero": "nonzero MACs (count)",
    "sparsity": "sparsity",
}
#: Config columns shown in hover text when present, in this order.
HOVER_COLUMNS = (
    "strategy",
    "compression",
    "seed",
    "method",
    "order",
    "quantization",
    "finetune",
    "baseline_recipe",
    "baseline_seed",
    "model",
    "dataset",
    "run_id",
    "latency_ms_p50",
    "latency_runtime",
    "machine",
)


def display_label(value: object) -> str:
    """Legend text of a category value: '' and missing values read as '(none)'."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value == "":
        return "(none)"
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    return str(value)


def color_for(value: object) -> str:
    """The fixed colour of a strategy / order / technique / runtime name (a stable hash otherwise).

    Example:
        >>> color_for("global_weight")
        '#1f77b4'
    """
    key = display_label(value)
    if key in PALETTE:
        return PALETTE[key]
    return _FALLBACK[zlib.crc32(key.encode()) % len(_FALLBACK)]


def colors_for(values: Iterable[object]) -> dict[str, str]:
    """Colours of several labels: fixed ones from the palette, others hashed with collisions resolved."""
    out: dict[str, str] = {}
    used = set()
    for v in sorted({display_label(v) for v in values}):
        c = color_for(v)
        if v not in PALETTE and c in used:
            start = _FALLBACK.index(c)
            for k in range(1, len(_FALLBACK) + 1):
                c = _FALLBACK[(start + k) % len(_FALLBACK)]
                if c not in used:
                    break
        out[v] = c
        used.add(c)
    return out


def rgba(hex_color: str, alpha: float) -> str:
    """'#rrggbb' -> 'rgba(r,g,b,alpha)'."""
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def axis_title(column: str) -> str:
    """Axis label with unit, from the schema when the column is not one of the curated names."""
    if column in _TITLES:
        return _TITLES[column]
    spec = RUN_COLUMNS.get(column) or LAYER_COLUMNS.get(column)
    unit = spec.unit if spec is not None else ""
    if unit == "fraction":
        unit = ""
    return f"{column.replace('_', ' ')} ({unit})" if unit else column.replace("_", " ")


def name_of(column: str) -> str:
    """Readable name of a column for titles: the axis title without its unit."""
    return re.sub(r" \([^)]*\)$", "", axis_title(column))


def fraction_range(lows: Iterable[float], highs: Iterable[float], pad: float = 0.02) -> list[float]:
    """Axis range for fractions (accuracies) around the data, clipped to [0, 1], on a 0.05 grid."""
    lo = min(float(v) for v in lows if np.isfinite(v)) - pad
    hi = max(float(v) for v in highs if np.isfinite(v)) + pad
    return [max(0.0, math.floor(lo * 20) / 20), min(1.0, math.ceil(hi * 20) / 20)]


def is_fraction(column: str) -> bool:
    spec = RUN_COLUMNS.get(column) or LAYER_COLUMNS.get(column)
    return spec is not None and spec.unit == "fraction"


def axis_props(column: str) -> dict:
    """Plotly axis settings for a column: title with unit, log2 ticks for ratios, % for fractions."""
    props: dict = {"title": {"text": axis_title(column)}}
    if column in LOG2_COLUMNS:
        props.update(type="log", dtick=math.log10(2), ticksuffix="×")
    elif is_fraction(column):
        props.update(tickformat=".1%")
    elif column.startswith("size_bytes") or column in {"params", "params_nonzero", "macs", "macs_nonzero"}:
        props.update(tickformat="~s")
    return props


def require_columns(df: pd.DataFrame, columns: Iterable[str | None], func: str) -> None:
    """Raise ValueError naming the missing columns and the function that needs them."""
    missing = [c for c in dict.fromkeys(c for c in columns if c) if c not in df.columns]
    if missing:
        raise ValueError(f"{func}() needs column(s) {missing} that the DataFrame lacks")


def numeric(df: pd.DataFrame, column: str) -> pd.Series:
    """The column as float64; unparsable values and +-inf become NaN."""
    vals = pd.to_numeric(df[column], errors="coerce").astype("float64")
    return vals.where(np.isfinite(vals))


def usable(df: pd.DataFrame, metrics: Sequence[str]) -> tuple[pd.DataFrame, str | None]:
    """Rows that can be plotted, and a note counting those left out.

    A row is left out when ``status == 'failed'``, when a plotted metric is NaN / inf / unparsable, or
    when it is not positive on a log2 axis. The metric columns of the returned copy are float64.
    """
    metrics = list(dict.fromkeys(metrics))
    bad = pd.Series(False, index=df.index)
    if "status" in df.columns:
        bad |= df["status"].astype("string").fillna("").eq("failed").to_numpy(dtype=bool)
    values = {}
    for m in metrics:
        v = numeric(df, m)
        bad |= v.isna()
        if m in LOG2_COLUMNS:
            bad |= v.le(0).fillna(False)
        values[m] = v
    ok = df.loc[~bad].copy()
    for m, v in values.items():
        ok[m] = v.loc[~bad]
    n_bad = int(bad.sum())
    note = None
    if n_bad:
        note = f"{n_bad} run{'s' if n_bad != 1 else ''} left out: failed or missing {', '.join(metrics)}"
    return ok, note


def finish(fig: go.Figure, title: str, notes: Iterable[str | None] = ()) -> go.Figure:
    """Apply the template and title, and put notes (left-out runs etc.) under the plot area."""
    fig.update_layout(template=TEMPLATE, title={"text": title}, hovermode="closest")
    notes = [n for n in notes if n]
    for i, note in enumerate(notes):
        fig.add_annotation(
            text=note,
            xref="paper",
            yref="paper",
            x=0,
            y=-0.18 - 0.06 * i,
            xanchor="left",
            yanchor="top",
            showarrow=False,
            font={"size": 11, "color": "#666"},
            name="note",
        )
    if notes:
        fig.update_layout(margin={"b": 90 + 20 * len(notes)})
    return fig


def empty_figure(title: str, message: str, note: str | None = None) -> go.Figure:
    """A figure without data that says why (empty input, nothing left after filtering)."""
    fig = go.Figure()
    fig.add_annotation(
        text=message,
        xref="paper",
        yref="paper",
        x=0.5,
        y=0.5,
        showarrow=False,
        font={"size": 14},
        name="empty",
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return finish(fig, title, [note])


def _fmt(col: str) -> str:
    return ":.4~s" if col.startswith("size_bytes") else (":.4g" if not is_fraction(col) else ":.2%")


def run_hover(df: pd.DataFrame, x: str, y: str, extra: Sequence[str] = ()) -> tuple[np.ndarray, str]:
    """customdata and hovertemplate showing one run's config and plotted values."""
    cols = [c for c in dict.fromkeys([*HOVER_COLUMNS, *extra]) if c in df.columns and c not in (x, y)]
    lines = [f"{x}: %{{x{_fmt(x)}}}", f"{y}: %{{y{_fmt(y)}}}"]
    lines += [f"{c}: %{{customdata[{i}]}}" for i, c in enumerate(cols)]
    data = df[cols].astype(object).where(df[cols].notna(), "").to_numpy(dtype=object)
    return data, "<br>".join(lines) + "<extra></extra>"


def technique(df: pd.DataFrame) -> pd.Series:
    """What was done to a run: its pipeline order when it has one, else its method ('prune', ...)."""
    method = (
        df["method"].astype("string").fillna("")
        if "method" in df.columns
        else pd.Series("run", index=df.index)
    )
    if "order" not in df.columns:
        return method.astype(object)
    order = df["order"].astype("string").fillna("")
    return order.where(order != "", method).astype(object)


REFERENCE_LINE = {"dash": "dot", "color": "#222", "width": 1}
"""Style of horizontal reference lines (dense baseline accuracy, overall sparsity)."""

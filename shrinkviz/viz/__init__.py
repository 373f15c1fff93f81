"""Plots and explorers of compression results: figures (DataFrame -> go.Figure), widgets, statistics, export.

Example:
    >>> import shrinkviz.viz as viz  # doctest: +SKIP
    >>> viz.curves(runs, x="compression_ratio", y="top1")  # doctest: +SKIP
    >>> viz.CompressionExplorer(store)  # doctest: +SKIP
"""

from shrinkviz.metrics.stats import aggregate, curve_crossings, pareto_mask, t_quantile
from shrinkviz.viz._style import PALETTE, color_for
from shrinkviz.viz.export import report_html, to_html
from shrinkviz.viz.figures import (
    baseline_confounder,
    curves,
    frontier,
    latency_by_runtime,
    layer_sparsity,
    ordering_ablation,
    shrinkbench_views,
)
from shrinkviz.viz.widgets import CompressionExplorer, FrontierExplorer

__all__ = [
    "PALETTE",
    "CompressionExplorer",
    "FrontierExplorer",
    "aggregate",
    "baseline_confounder",
    "color_for",
    "curve_crossings",
    "curves",
    "frontier",
    "latency_by_runtime",
    "layer_sparsity",
    "ordering_ablation",
    "pareto_mask",
    "report_html",
    "shrinkbench_views",
    "t_quantile",
    "to_html",
]

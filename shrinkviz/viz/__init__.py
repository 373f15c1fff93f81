"""Plots and explorers of compression results: figures (DataFrame -> go.Figure), widgets, statistics, export.

Example:
    >>> import pandas as pd
    >>> import shrinkviz.viz as viz
    >>> runs = pd.DataFrame({"run_id": ["a", "b", "c"], "strategy": "random", "compression": [2.0, 2.0, 4.0],
    ...                      "compression_ratio": [2.0, 2.0, 4.0], "top1": [0.90, 0.80, 0.70]})
    >>> fig = viz.curves(runs, x="compression_ratio", y="top1")
    >>> [trace.name for trace in fig.data], fig.data[1].y.round(4).tolist()  # the line: mean over seeds
    (['random 95% CI', 'random', 'random runs'], [0.85, 0.7])
    >>> viz.CompressionExplorer(runs).slider.options
    (('2×', 2.0), ('4×', 4.0))
"""

from shrinkviz.metrics.stats import aggregate, curve_crossings, pareto_mask, t_quantile
from shrinkviz.viz._style import PALETTE, color_for
from shrinkviz.viz.confounders import baseline_confounder, shrinkbench_views
from shrinkviz.viz.export import report_html, to_html
from shrinkviz.viz.figures import (
    curves,
    frontier,
    latency_by_runtime,
    layer_sparsity,
    ordering_ablation,
)
from shrinkviz.viz.machines import speedup_by_runtime
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
    "speedup_by_runtime",
    "layer_sparsity",
    "ordering_ablation",
    "pareto_mask",
    "report_html",
    "shrinkbench_views",
    "t_quantile",
    "to_html",
]

"""Statistics over results tables, re-exported from :mod:`shrinkviz.viz.stats` (one implementation).

``aggregate(runs, by, metrics)`` gives mean, std, 95% Student-t CI and n over seeds; ``pareto_mask(runs,
maximize=("top1",), minimize=("latency_ms_p50", "size_bytes_gzip"))`` marks the non-dominated runs.

Example:
    >>> import pandas as pd
    >>> runs = pd.DataFrame({"strategy": ["a", "a"], "top1": [0.90, 0.92]})
    >>> aggregate(runs, by="strategy", metrics="top1")["top1_n"].tolist()
    [2]
"""

from shrinkviz.viz.stats import aggregate, curve_crossings, pareto_mask, t_quantile

__all__ = ["aggregate", "curve_crossings", "pareto_mask", "t_quantile"]

"""FrontierExplorer: pick axes, colour and marker size of the frontier, filter runs, toggle the Pareto front,
and take the selected run's deployed model out of the store (state_dict or ONNX).

Example:
    >>> import pandas as pd
    >>> runs = pd.DataFrame({"run_id": ["a", "b", "c"], "method": ["prune", "quant", "pipeline"],
    ...                      "top1": [0.9, 0.8, 0.85], "latency_ms_p50": [2.0, 1.0, 1.5],
    ...                      "size_bytes_gzip": [100, 50, 120]})
    >>> ex = FrontierExplorer(runs)
    >>> ex.state["pareto_run_ids"]  # each run is best at something: accuracy, latency, or the trade-off
    ['a', 'b', 'c']
    >>> ex.x_picker.value = "size_bytes_gzip"  # accuracy vs size only: c is larger and less accurate than a
    >>> ex.state["pareto_run_ids"]
    ['a', 'b']
"""

from __future__ import annotations

import re
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from shrinkviz.experiments.schema import FACTOR_COLUMNS, METRIC_COLUMNS
from shrinkviz.viz._source import resolve_source
from shrinkviz.viz._style import display_label, require_columns, technique
from shrinkviz.viz.export_control import ExportControl
from shrinkviz.viz.machines import latency_x
from shrinkviz.viz.panels import frontier_parts

__all__ = ["FrontierExplorer"]


def _run_ids(trace: Any) -> list[str]:
    """The run id of each point of a frontier trace (read from its hover data), [] when it has none."""
    found = re.search(r"run_id: %\{customdata\[(\d+)\]\}", trace.hovertemplate or "")
    data = trace.customdata
    if data is None:
        return []
    if found is None:  # the Pareto trace carries the run ids themselves
        return [str(v) for v in data] if "run:" in (trace.hovertemplate or "") else []
    return [str(row[int(found.group(1))]) for row in data]


class FrontierExplorer(widgets.VBox):
    """Pick the axes, colour and marker size of :func:`frontier`, filter runs, toggle the Pareto front.

    Controls: ``x_picker``, ``y_picker`` and ``size_picker`` (numeric columns; size may be ``None``),
    ``color_picker`` (``technique`` and the config columns), ``filters`` (dict column -> Dropdown with
    ``'all'``, for dataset / model / method) and ``pareto`` (Checkbox). ``figure`` is redrawn in place.
    ``x`` defaults to ``latency_vs_baseline`` where the runs have it. Export: ``run_picker`` (the selected
    run; clicking a point selects it), ``export_format`` (``state_dict`` / ``onnx``), ``export_folder``
    and ``export_button``, which calls :func:`shrinkviz.experiments.artefacts.export_artefact` (given a
    store; the button is disabled for a bare DataFrame) and reports the file in ``export_status``.

    Example:
        >>> import pandas as pd
        >>> runs = pd.DataFrame({"run_id": ["a", "b", "c"], "method": ["prune", "quant", "pipeline"],
        ...                      "top1": [0.9, 0.8, 0.85], "latency_ms_p50": [2.0, 1.0, 1.5],
        ...                      "size_bytes_gzip": [100, 50, 120]})
        >>> ex = FrontierExplorer(runs, x="size_bytes_gzip", size=None)
        >>> ex.state["pareto_run_ids"], ex.filters["method"].options
        (['a', 'b'], ('all', 'pipeline', 'prune', 'quant'))
        >>> ex.filters["method"].value = "pipeline"
        >>> ex.state["n_runs"], ex.state["pareto_run_ids"]
        (1, ['c'])
    """

    FILTER_COLUMNS = ("dataset", "model", "method")

    def __init__(
        self,
        runs_or_store: Any,
        x: str | None = None,
        y: str = "top1",
        color: str = "technique",
        size: str | None = "size_bytes_gzip",
        pareto: bool = True,
        by_machine: bool = False,
    ) -> None:
        super().__init__()
        runs, _ = resolve_source(runs_or_store, "FrontierExplorer")
        x = latency_x(runs, x)
        self.store = runs_or_store if hasattr(runs_or_store, "artefact") else None
        self.by_machine = by_machine
        self._trace_ids: list[list[str]] = []
        if "technique" not in runs.columns:
            runs = runs.assign(technique=technique(runs).to_numpy() if len(runs) else [])
        self.runs = runs
        numeric = [
            c
            for c in runs.columns
            if pd.api.types.is_numeric_dtype(runs[c]) and not pd.api.types.is_bool_dtype(runs[c])
        ]
        numeric = [c for c in METRIC_COLUMNS if c in numeric] + [
            c for c in numeric if c not in METRIC_COLUMNS
        ]
        categorical = ["technique"] + [c for c in FACTOR_COLUMNS if c in runs.columns]
        if len(runs):
            require_columns(runs, [x, y, size, color], "FrontierExplorer")
            for name, col in (("x", x), ("y", y), ("size", size)):
                if col is not None and col not in numeric:
                    raise ValueError(f"FrontierExplorer: {name}={col!r} is not a numeric column")
        else:
            numeric = list(dict.fromkeys(c for c in (x, y, size) if c))
        self.x_picker = widgets.Dropdown(options=numeric, value=x, description="x")
        self.y_picker = widgets.Dropdown(options=numeric, value=y, description="y")
        self.size_picker = widgets.Dropdown(
            options=[("(none)", None), *((c, c) for c in numeric)], value=size, description="size"
        )
        self.color_picker = widgets.Dropdown(
            options=list(dict.fromkeys([color, *categorical])), value=color, description="colour"
        )
        self.filters = {
            col: widgets.Dropdown(
                options=["all", *sorted(map(display_label, runs[col].unique()))], value="all", description=col
            )
            for col in self.FILTER_COLUMNS
            if col in runs.columns
        }
        self.pareto = widgets.Checkbox(value=pareto, description="highlight Pareto front", indent=False)
        self.run_picker = widgets.Dropdown(options=[], description="run")
        self.exporter = ExportControl(self.store, lambda: self.run_picker.value)
        self.export_format, self.export_folder = self.exporter.format, self.exporter.folder
        self.export_button, self.export_status = self.exporter.button, self.exporter.status
        # A plain figure until the initial state is drawn, then a FigureWidget: edits sent to a FigureWidget
        # before JupyterLab renders it reach plotly's front end corrupted (see CompressionExplorer).
        self.figure = go.Figure()
        self.rows = runs.iloc[0:0]
        for w in [
            self.x_picker,
            self.y_picker,
            self.size_picker,
            self.color_picker,
            self.pareto,
            *self.filters.values(),
        ]:
            w.observe(self._redraw, names="value")
        self._redraw()
        self.figure = go.FigureWidget(self.figure)
        self._wire_clicks()
        self.children = [
            widgets.HBox([self.x_picker, self.y_picker, self.color_picker, self.size_picker]),
            widgets.HBox([*self.filters.values(), self.pareto]),
            self.figure,
            widgets.HBox([self.run_picker, *self.exporter.widgets]),
            self.export_status,
        ]

    def _wire_clicks(self) -> None:
        if not isinstance(self.figure, go.FigureWidget):
            return
        for trace, ids in zip(self.figure.data, self._trace_ids, strict=False):
            trace.on_click(
                lambda _t, points, _s, ids=ids: (
                    self.select(ids[points.point_inds[0]]) if points.point_inds else None
                )
            )

    def select(self, run_id: str) -> None:
        """Make ``run_id`` (one of the plotted runs) the selected run."""
        if run_id not in self.run_picker.options:
            raise ValueError(f"run {run_id!r} is not plotted; plotted: {', '.join(self.run_picker.options)}")
        self.run_picker.value = run_id

    def export(self) -> Any:
        """Export the selected run's deployed model (:class:`~shrinkviz.viz.export_control.ExportControl`);
        the file, or None on error (the reason is shown in ``export_status``)."""
        return self.exporter.export()

    def filtered(self) -> pd.DataFrame:
        """The runs that pass the filters."""
        keep = np.ones(len(self.runs), dtype=bool)
        for col, w in self.filters.items():
            if w.value != "all":
                keep &= (self.runs[col].map(display_label) == w.value).to_numpy(dtype=bool)
        return self.runs.loc[keep]

    def _redraw(self, change: dict | None = None) -> None:
        fig, self.rows = frontier_parts(
            self.filtered(),
            x=self.x_picker.value,
            y=self.y_picker.value,
            size=self.size_picker.value,
            color=self.color_picker.value,
            pareto=self.pareto.value,
            by_machine=self.by_machine,
        )
        ids = [str(r) for r in self.rows["run_id"]] if "run_id" in self.rows.columns else []
        keep = self.run_picker.value if self.run_picker.value in ids else None
        pareto_ids = (
            [str(r) for r in self.rows.loc[self.rows["pareto"], "run_id"]]
            if ids and "pareto" in self.rows
            else []
        )
        self.run_picker.options = ids
        self.run_picker.value = keep or (pareto_ids[0] if pareto_ids else (ids[0] if ids else None))
        self._trace_ids = [_run_ids(t) for t in fig.data]
        with self.figure.batch_update():
            self.figure.data = []
            if fig.data:
                self.figure.add_traces(list(fig.data))
            self.figure.layout = fig.layout
        self._wire_clicks()

    @property
    def state(self) -> dict[str, Any]:
        """Pickers, filters, Pareto toggle, number of plotted runs and the Pareto-optimal run ids."""
        rows = self.rows
        ids = (
            sorted(map(str, rows.loc[rows["pareto"], "run_id"]))
            if len(rows) and "run_id" in rows.columns and "pareto" in rows.columns
            else []
        )
        return {
            "x": self.x_picker.value,
            "y": self.y_picker.value,
            "size": self.size_picker.value,
            "color": self.color_picker.value,
            "filters": {c: w.value for c, w in self.filters.items()},
            "pareto": self.pareto.value,
            "n_runs": len(rows),
            "pareto_run_ids": ids,
            "selected_run_id": self.run_picker.value,
        }

    def snapshot(self) -> list[tuple[str, Any]]:
        """Report sections of the current view: the frontier and its settings."""
        s = self.state
        settings = pd.DataFrame(
            [{k: (", ".join(v) if isinstance(v, list) else str(v)) for k, v in s.items()}]
        )
        return [("Frontier", go.Figure(self.figure)), ("Settings", settings)]

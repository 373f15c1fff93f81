"""Interactive explorers for JupyterLab: ipywidgets 8 controls driving plotly FigureWidgets in place.

Both explorers are ``ipywidgets.VBox`` subclasses (display them as the last expression of a cell),
accept a runs DataFrame or a store (anything with ``.runs()`` / ``.layers()`` methods or ``runs`` /
``layers`` DataFrame attributes, such as a sweep result), and expose their controls and a ``state``
dict so notebooks and tests can drive and check them from code. :class:`FrontierExplorer` lives in
:mod:`shrinkviz.viz.frontier_explorer` and is re-exported here.

Example:
    >>> import pandas as pd
    >>> runs = pd.DataFrame({"run_id": ["r2", "r8"], "strategy": "random", "compression": [2.0, 8.0],
    ...                      "compression_ratio": [2.0, 8.0], "top1": [0.9, 0.6]})
    >>> explorer = CompressionExplorer(runs)
    >>> explorer.slider.value = 8.0
    >>> explorer.state["run_id"], explorer.state["readouts"]["top1"]
    ('r8', 0.6)
"""

from __future__ import annotations

import html
import math
from typing import Any

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go

from shrinkviz.metrics.stats import aggregate
from shrinkviz.viz._source import one_context, py_scalar, resolve_source
from shrinkviz.viz._style import TEMPLATE, display_label, require_columns, usable
from shrinkviz.viz.export_control import ExportControl
from shrinkviz.viz.figures import curves
from shrinkviz.viz.frontier_explorer import FrontierExplorer
from shrinkviz.viz.panels import layer_sparsity

__all__ = ["CompressionExplorer", "FrontierExplorer", "resolve_source"]

READOUT_COLUMNS = (
    "top1",
    "size_bytes_raw",
    "size_bytes_gzip",
    "latency_ms_p50",
    "speedup_theoretical",
    "compression_ratio",
)


def _human_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000.0
    return f"{n:.2f} GB"


class CompressionExplorer(widgets.VBox):
    """Slide through compression ratios of one strategy: curve, highlighted point, readouts, layers.

    Controls: ``strategy`` (Dropdown) and ``slider`` (SelectionSlider over the target compressions
    stored for that strategy, so it snaps to runs). Views: ``figure`` (FigureWidget of :func:`curves`
    with a last trace named ``"selected"``), ``readout`` (HTML) and ``layer_figure`` (FigureWidget with
    the per-layer sparsity bars). Changes update the figures in place with ``batch_update``.

    Export: ``export_format``, ``export_folder``, ``export_button`` and ``export_status`` take the selected
    (representative) run's deployed model out of the store as a state_dict or ONNX file; the button is
    disabled for a bare DataFrame.

    Several seeds at one compression: the highlighted point is the mean over seeds (the vertex of the
    curve); the readouts and the layer chart show one representative run, the one with the lowest
    seed (ties broken by run id); ``state`` also carries the mean and 95% CI of ``y`` over the seeds.

    Args:
        runs_or_store: runs DataFrame or store-like object.
        layers: layers table; by default the store's ``layers()`` (none for a bare DataFrame).
        x: x column of the curve (``compression_ratio`` or ``speedup_theoretical``); y: metric.
        strategy: initial strategy (default: the first, sorted).
        dataset, model: pick one when the runs cover several (ValueError otherwise).

    Example:
        >>> import pandas as pd
        >>> runs = pd.DataFrame({"run_id": ["r2", "r8"], "strategy": "random", "compression": [2.0, 8.0],
        ...                      "compression_ratio": [2.0, 8.0], "top1": [0.9, 0.6]})
        >>> layers = pd.DataFrame({"run_id": ["r2", "r8"], "layer": "fc", "sparsity": [0.5, 0.875]})
        >>> ex = CompressionExplorer(runs, layers)
        >>> ex.slider.value = 8.0
        >>> ex.state["run_id"], ex.state["highlight"], ex.layer_figure.data[0].y.tolist()
        ('r8', {'x': 8.0, 'y': 0.6}, [0.875])
    """

    def __init__(
        self,
        runs_or_store: Any,
        layers: pd.DataFrame | None = None,
        x: str = "compression_ratio",
        y: str = "top1",
        *,
        strategy: str | None = None,
        dataset: str | None = None,
        model: str | None = None,
    ) -> None:
        super().__init__()
        runs, store_layers = resolve_source(runs_or_store, "CompressionExplorer")
        self.exporter = ExportControl(runs_or_store, lambda: self._state.get("run_id"))
        self.export_format, self.export_folder = self.exporter.format, self.exporter.folder
        self.export_button, self.export_status = self.exporter.button, self.exporter.status
        self.layers = layers if layers is not None else store_layers
        if self.layers is not None and len(self.layers):
            require_columns(self.layers, ["run_id", "layer", "sparsity"], "CompressionExplorer")
        self.x, self.y = x, y
        if len(runs):
            require_columns(runs, ["run_id", "strategy", "compression", x, y], "CompressionExplorer")
            runs = one_context(runs, "CompressionExplorer", dataset=dataset, model=model)
        ok, self.note = usable(runs, [y, x, "compression"]) if len(runs) else (runs, None)
        sort_cols = [c for c in ("strategy", "compression", "seed", "run_id") if c in ok.columns]
        self.runs = ok.sort_values(sort_cols, kind="stable") if len(ok) else ok
        self.points = (
            aggregate(self.runs, by=["strategy", "compression"], metrics=[x, y])
            if len(self.runs)
            else pd.DataFrame()
        )
        # Plain figures until __init__ has drawn the initial state, then FigureWidgets: edits sent to a
        # FigureWidget before JupyterLab renders its first view reach plotly's front end corrupted (the
        # restyled mean lines lost their x/y and were not drawn; caught by tests/browser).
        self.figure = go.Figure(curves(runs, x=x, y=y, color="strategy", group="compression"))
        self.figure.add_trace(
            go.Scatter(
                x=[],
                y=[],
                mode="markers",
                name="selected",
                showlegend=False,
                hoverinfo="skip",
                marker={"size": 18, "symbol": "circle-open", "color": "#111", "line": {"width": 3}},
            )
        )
        base = go.Figure(go.Bar(x=[], y=[], name="sparsity"))
        base.update_layout(template=TEMPLATE, height=320, yaxis={"range": [0, 1], "tickformat": ".0%"})
        self.layer_figure = go.Figure(base)
        strategies = (
            sorted(map(str, self.runs["strategy"].dropna().unique()), key=lambda s: (s == "", s))
            if len(self.runs)
            else []
        )
        if strategy is not None and strategy not in strategies:
            raise ValueError(f"CompressionExplorer: strategy {strategy!r} not among {strategies}")
        self.strategy = widgets.Dropdown(
            options=[(display_label(s), s) for s in strategies] or [("(no runs)", "")],
            value=strategy if strategy is not None else (strategies or [""])[0],
            description="strategy",
            disabled=not strategies,
        )
        self.slider = widgets.SelectionSlider(
            options=self._slider_options(self.strategy.value),
            description="compression",
            style={"description_width": "initial"},  # the default width cuts the label to "compressi…"
            continuous_update=False,
            disabled=not strategies,
            layout={"width": "420px"},
        )
        self.readout = widgets.HTML()
        self._syncing = False
        self._state: dict[str, Any] = {}
        self.strategy.observe(self._on_strategy, names="value")
        self.slider.observe(self._on_slider, names="value")
        self._update()
        self.figure = go.FigureWidget(self.figure)
        self.layer_figure = go.FigureWidget(self.layer_figure)
        self.children = [
            widgets.HBox([self.strategy, self.slider]),
            self.readout,
            widgets.HBox(self.exporter.widgets),
            self.export_status,
            self.figure,
            self.layer_figure,
        ]

    def _slider_options(self, strategy: str) -> list[tuple[str, float]]:
        if not len(self.runs):
            return [("(no runs)", 0.0)]
        values = sorted(self.runs.loc[self.runs["strategy"] == strategy, "compression"].unique())
        return [(f"{v:g}×", float(v)) for v in values]

    def _on_strategy(self, change: dict) -> None:
        previous = self.slider.value
        options = self._slider_options(change["new"])
        self._syncing = True
        try:
            self.slider.options = options
            values = [v for _, v in options]
            self.slider.value = min(
                values,
                key=lambda v: (
                    abs(math.log2(v / previous)) if previous > 0 and v > 0 else abs(v - previous),
                    v,
                ),
            )
        finally:
            self._syncing = False
        self._update()

    def _on_slider(self, change: dict) -> None:
        if not self._syncing:
            self._update()

    def _update(self) -> None:
        strategy, compression = self.strategy.value, self.slider.value
        if not len(self.runs):
            self._state = {
                "strategy": None,
                "compression": None,
                "run_id": None,
                "seed": None,
                "n_seeds": 0,
                "seeds": [],
                "run_ids": [],
                "readouts": {},
                "highlight": {"x": None, "y": None},
                "x": self.x,
                "y": self.y,
            }
            self.readout.value = "<i>No runs to explore.</i>"
            return
        sel = self.runs.loc[(self.runs["strategy"] == strategy) & (self.runs["compression"] == compression)]
        rep = sel.iloc[0]
        pt = self.points.loc[
            (self.points["strategy"] == strategy) & (self.points["compression"] == compression)
        ].iloc[0]
        hx, hy = float(pt[f"{self.x}_mean"]), float(pt[f"{self.y}_mean"])
        label = display_label(strategy)
        with self.figure.batch_update():
            self.figure.data[-1].x, self.figure.data[-1].y = [hx], [hy]
            for trace in self.figure.data[:-1]:
                if trace.mode == "lines+markers":
                    trace.line.width = 4 if trace.name == label else 1.5
        run_id = str(rep["run_id"])
        self._update_layers(run_id)
        readouts = {c: py_scalar(rep[c]) for c in READOUT_COLUMNS if c in self.runs.columns}
        seeds = [py_scalar(s) for s in sel["seed"]] if "seed" in sel.columns else []
        self._state = {
            "strategy": strategy,
            "compression": float(compression),
            "run_id": run_id,
            "seed": py_scalar(rep["seed"]) if "seed" in rep.index else None,
            "n_seeds": len(sel),
            "seeds": seeds,
            "run_ids": [str(r) for r in sel["run_id"]],
            "readouts": readouts,
            "highlight": {"x": hx, "y": hy},
            "x": self.x,
            "y": self.y,
            "mean": {
                "x": hx,
                "y": hy,
                "y_ci95_low": float(pt[f"{self.y}_ci95_low"]),
                "y_ci95_high": float(pt[f"{self.y}_ci95_high"]),
            },
        }
        self.readout.value = self._readout_html()

    def _update_layers(self, run_id: str) -> None:
        layers = self.layers if self.layers is not None else pd.DataFrame()
        fig = layer_sparsity(layers, run_id)
        with self.layer_figure.batch_update():
            bars = self.layer_figure.data[0]
            if fig.data:
                src = fig.data[0]
                bars.update(
                    x=src.x,
                    y=src.y,
                    marker=src.marker,
                    customdata=src.customdata,
                    hovertemplate=src.hovertemplate,
                )
            else:
                bars.update(x=[], y=[])
            self.layer_figure.layout.title = fig.layout.title
            self.layer_figure.layout.shapes = fig.layout.shapes
            self.layer_figure.layout.annotations = fig.layout.annotations
            self.layer_figure.layout.xaxis.visible = bool(fig.data)

    def export(self) -> Any:
        """Export the selected run's deployed model; the file, or None (the reason is in ``export_status``)."""
        return self.exporter.export()

    @property
    def state(self) -> dict[str, Any]:
        """Selected strategy, compression, representative run (id, seed), seeds, readouts, highlight x/y."""
        return dict(self._state)

    def _readout_html(self) -> str:
        s, r = self._state, self._state["readouts"]
        top1 = r.get("top1")
        rows = [("top-1", f"{top1:.2%}" if top1 is not None else "n/a")]
        if s["n_seeds"] > 1 and self.y == "top1":
            m = s["mean"]
            rows.append(
                (
                    f"top-1 mean of {s['n_seeds']} seeds",
                    f"{m['y']:.2%} (95% CI {m['y_ci95_low']:.2%} to {m['y_ci95_high']:.2%})",
                )
            )
        rows += [
            ("size raw", _human_bytes(r.get("size_bytes_raw"))),
            ("size gzip", _human_bytes(r.get("size_bytes_gzip"))),
            (
                "latency p50",
                f"{r['latency_ms_p50']:.3g} ms" if r.get("latency_ms_p50") is not None else "n/a",
            ),
            (
                "theoretical speedup",
                f"{r['speedup_theoretical']:.3g}×" if r.get("speedup_theoretical") is not None else "n/a",
            ),
            (
                "compression achieved",
                f"{r['compression_ratio']:.3g}×" if r.get("compression_ratio") is not None else "n/a",
            ),
        ]
        cells = "".join(
            f"<tr><td style='padding-right:1em'>{html.escape(k)}</td><td><b>{html.escape(v)}</b></td></tr>"
            for k, v in rows
        )
        who = f"run {s['run_id']}" + (f", seed {s['seed']}" if s["seed"] is not None else "")
        return (
            f"<div><b>{html.escape(display_label(s['strategy']))}</b> at {s['compression']:g}× "
            f"({html.escape(who)}; lowest seed of {s['n_seeds']})<table>{cells}</table></div>"
        )

    def snapshot(self) -> list[tuple[str, Any]]:
        """Report sections of the current view: readouts table, curve and per-layer chart."""
        s = self._state
        table = pd.DataFrame(
            [
                {
                    "strategy": s["strategy"],
                    "compression": s["compression"],
                    "run_id": s["run_id"],
                    "seed": s["seed"],
                    "n_seeds": s["n_seeds"],
                    **s["readouts"],
                }
            ]
        )
        return [
            ("Selected run", table),
            ("Accuracy curve", go.Figure(self.figure)),
            ("Per-layer sparsity", go.Figure(self.layer_figure)),
        ]

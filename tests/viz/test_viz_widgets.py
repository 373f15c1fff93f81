"""shrinkviz.viz widgets driven from code: controls change the highlighted point, readouts and charts."""

from __future__ import annotations

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go
import pytest

from shrinkviz.viz import CompressionExplorer, FrontierExplorer


def highlight(explorer: CompressionExplorer) -> tuple[list[float], list[float]]:
    sel = explorer.figure.data[-1]
    assert sel.name == "selected"
    return list(sel.x), list(sel.y)


def test_compression_explorer_slider_drives_views(store, runs: pd.DataFrame, layers: pd.DataFrame) -> None:
    ex = CompressionExplorer(store)
    assert isinstance(ex, widgets.VBox) and isinstance(ex.figure, go.FigureWidget)
    assert isinstance(ex.slider, widgets.SelectionSlider) and isinstance(ex.strategy, widgets.Dropdown)
    assert ex.slider.options == (("2×", 2.0), ("4×", 4.0), ("8×", 8.0))  # the failed 16x run is no stop
    assert ex.strategy.options == (("global_weight", "global_weight"), ("random", "random"))
    assert ex.state["compression"] == 2.0 and ex.state["run_id"] == "gl-2-0"

    ex.slider.value = 8.0
    s = ex.state
    assert (s["strategy"], s["compression"], s["run_id"], s["seed"]) == ("global_weight", 8.0, "gl-8-0", 0)
    assert s["n_seeds"] == 3 and s["seeds"] == [0, 1, 2] and s["run_ids"] == ["gl-8-0", "gl-8-1", "gl-8-2"]
    # highlighted point = mean over seeds = the curve's vertex
    hx, hy = highlight(ex)
    assert hx == pytest.approx([8.0], abs=1e-12) and hy == pytest.approx([0.82], abs=1e-12)
    assert s["highlight"] == {"x": hx[0], "y": hy[0]}
    line = next(t for t in ex.figure.data if t.name == "global_weight")
    assert line.x[2] == hx[0] and line.y[2] == hy[0]
    # readouts = the representative (lowest seed) run's row
    rep = runs.loc[runs["run_id"] == "gl-8-0"].iloc[0]
    assert s["readouts"] == {
        c: rep[c].item()
        for c in (
            "top1",
            "size_bytes_raw",
            "size_bytes_gzip",
            "latency_ms_p50",
            "speedup_theoretical",
            "compression_ratio",
        )
    }
    assert s["readouts"]["top1"] == 0.80
    assert "80.00%" in ex.readout.value and "gl-8-0" in ex.readout.value and "125.00 kB" in ex.readout.value
    # per-layer chart shows that run's layers
    rows = layers.loc[layers["run_id"] == "gl-8-0"]
    bars = ex.layer_figure.data[0]
    assert list(bars.x) == ["conv1", "layer1.conv", "fc"] and list(bars.y) == rows["sparsity"].tolist()
    assert "gl-8-0" in ex.layer_figure.layout.title.text

    ex.slider.value = 4.0
    assert ex.state["run_id"] == "gl-4-0"
    assert highlight(ex)[1] == pytest.approx([0.88], abs=1e-12)
    assert list(ex.layer_figure.data[0].y) == layers.loc[layers["run_id"] == "gl-4-0", "sparsity"].tolist()


def test_compression_explorer_strategy_switch_keeps_compression(store, layers: pd.DataFrame) -> None:
    ex = CompressionExplorer(store)
    ex.slider.value = 8.0
    ex.strategy.value = "random"
    s = ex.state
    assert (s["strategy"], s["compression"], s["run_id"], s["n_seeds"]) == ("random", 8.0, "ra-8-0", 2)
    assert highlight(ex) == (pytest.approx([8.2], abs=1e-12), pytest.approx([0.62], abs=1e-12))
    assert s["mean"]["y_ci95_high"] == pytest.approx(0.62 + 12.706204736174705 * 0.02, abs=1e-12)
    assert list(ex.layer_figure.data[0].y) == layers.loc[layers["run_id"] == "ra-8-0", "sparsity"].tolist()
    widths = {t.name: t.line.width for t in ex.figure.data if t.mode == "lines+markers"}
    assert widths == {"global_weight": 1.5, "random": 4}


def test_compression_explorer_speedup_axis_and_plain_dataframe(runs: pd.DataFrame) -> None:
    ex = CompressionExplorer(runs, x="speedup_theoretical", strategy="random")
    ex.slider.value = 4.0
    assert highlight(ex)[0] == pytest.approx([4.1 * 0.8], abs=1e-12)
    assert ex.layers is None and len(ex.layer_figure.data[0].x) == 0
    assert "No per-layer rows" in ex.layer_figure.layout.annotations[0].text


def test_compression_explorer_bad_input(runs: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"CompressionExplorer\(\) needs column\(s\) \['strategy'\]"):
        CompressionExplorer(runs.drop(columns="strategy"))
    two = pd.concat([runs, runs.assign(model="vgg16_bn")], ignore_index=True)
    with pytest.raises(ValueError, match=r"several model values \['resnet20', 'vgg16_bn'\]"):
        CompressionExplorer(two)
    assert CompressionExplorer(two, model="vgg16_bn").state["run_id"] == "gl-2-0"
    with pytest.raises(TypeError, match="needs a runs DataFrame"):
        CompressionExplorer(object())
    empty = CompressionExplorer(pd.DataFrame())
    assert empty.state["run_id"] is None and empty.slider.disabled and "No runs" in empty.readout.value


class ResultWithAttributes:
    """A sweep result exposing DataFrames as attributes rather than methods."""

    def __init__(self, runs: pd.DataFrame, layers: pd.DataFrame) -> None:
        self.runs, self.layers = runs, layers


def test_compression_explorer_accepts_attribute_store(runs: pd.DataFrame, layers: pd.DataFrame) -> None:
    ex = CompressionExplorer(ResultWithAttributes(runs, layers))
    assert len(ex.layer_figure.data[0].x) == 3


def test_frontier_explorer_pickers_filters_and_pareto(ablation_runs: pd.DataFrame) -> None:
    ex = FrontierExplorer(ablation_runs, size=None)
    assert isinstance(ex, widgets.VBox) and isinstance(ex.pareto, widgets.Checkbox)
    assert "top1" in ex.y_picker.options and "latency_ms_p50" in ex.x_picker.options
    assert ex.color_picker.options[0] == "technique" and "order" in ex.color_picker.options
    assert ex.filters["method"].options == ("all", "baseline", "distill", "pipeline", "prune", "quant")
    s = ex.state
    assert s["n_runs"] == 12 and s["pareto"] is True
    # maximise top1, minimise latency over the 12 ok runs
    assert s["pareto_run_ids"] == ["distill--0", "pipeline-PQD-0", "pipeline-QPD-1", "quant--0"]
    assert ex.figure.data[-1].name == "Pareto-optimal (4)"

    ex.filters["method"].value = "pipeline"
    assert ex.state["n_runs"] == 4
    assert ex.state["pareto_run_ids"] == ["pipeline-PQD-0", "pipeline-QPD-1"]
    assert [t.name for t in ex.figure.data] == ["PQD", "QPD", "Pareto-optimal (2)"]

    ex.pareto.value = False
    assert [t.name for t in ex.figure.data] == ["PQD", "QPD"]

    ex.color_picker.value = "seed"
    assert [t.name for t in ex.figure.data] == ["0", "1"]
    ex.y_picker.value = "size_bytes_gzip"
    assert ex.figure.layout.yaxis.title.text == "size on disk, gzip (bytes)"
    assert set(ex.figure.data[0].y) == {1000}


def test_frontier_explorer_bad_input(ablation_runs: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="x='method' is not a numeric column"):
        FrontierExplorer(ablation_runs, x="method")
    with pytest.raises(ValueError, match=r"FrontierExplorer\(\) needs column\(s\) \['latency_ms_p90'\]"):
        FrontierExplorer(ablation_runs, x="latency_ms_p90")
    empty = FrontierExplorer(pd.DataFrame())
    assert empty.state["n_runs"] == 0 and empty.figure.data == ()
    assert "empty" in empty.figure.layout.annotations[0].text

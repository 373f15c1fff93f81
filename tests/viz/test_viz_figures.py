"""shrinkviz.viz figures: trace data against hand computations, and the bad-input rules."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pytest

from shrinkviz.viz import (
    PALETTE,
    baseline_confounder,
    color_for,
    curves,
    frontier,
    latency_by_runtime,
    layer_sparsity,
    ordering_ablation,
    shrinkbench_views,
)

T975_2 = 4.302652729749464  # t(0.975, 2 dof): 3 seeds
T975_1 = 12.706204736174705  # t(0.975, 1 dof): 2 seeds


def trace(fig, name: str):
    found = [t for t in fig.data if t.name == name]
    assert len(found) == 1, [t.name for t in fig.data]
    return found[0]


def notes(fig) -> list[str]:
    return [a.text for a in fig.layout.annotations if a.name == "note"]


def band(vals: list[float]) -> tuple[float, float, float]:
    m, sd = statistics.fmean(vals), statistics.stdev(vals)
    t = {3: T975_2, 2: T975_1}[len(vals)]
    half = t * sd / math.sqrt(len(vals))
    return m, m - half, m + half


def test_curves_mean_line_and_ci_band(runs: pd.DataFrame) -> None:
    fig = curves(runs, x="compression_ratio", y="top1")
    assert [t.name for t in fig.data] == [
        "global_weight 95% CI",
        "global_weight",
        "global_weight runs",
        "random 95% CI",
        "random",
        "random runs",
    ]
    line = trace(fig, "global_weight")
    assert line.x.tolist() == pytest.approx([2.0, 4.0, 8.0], abs=1e-12)  # mean achieved ratio of 3 seeds
    assert line.y.tolist() == pytest.approx([0.91, 0.88, 0.82], abs=1e-12)
    stats = [band(v) for v in ([0.90, 0.92, 0.91], [0.88, 0.89, 0.87], [0.80, 0.84, 0.82])]
    ci = trace(fig, "global_weight 95% CI")
    assert ci.fill == "toself"
    assert ci.x.tolist() == pytest.approx([2.0, 4.0, 8.0, 8.0, 4.0, 2.0], abs=1e-12)
    expected = [s[2] for s in stats] + [s[1] for s in reversed(stats)]
    assert ci.y.tolist() == pytest.approx(expected, abs=1e-12)
    # random: 2 seeds with factors 1.0 and 1.05 -> x = 1.025 * target; t with one dof
    rnd = trace(fig, "random")
    assert rnd.x.tolist() == pytest.approx([2.05, 4.1, 8.2], abs=1e-12)
    lo8, hi8 = band([0.60, 0.64])[1:]
    assert trace(fig, "random 95% CI").y[2:4].tolist() == pytest.approx([hi8, lo8], abs=1e-12)
    # individual runs, with config in hover data
    pts = trace(fig, "random runs")
    assert pts.y.tolist() == [0.85, 0.87, 0.80, 0.78, 0.60, 0.64]
    assert "seed" in pts.hovertemplate and "run_id" in pts.hovertemplate and "strategy" in pts.hovertemplate
    assert "ra-8-1" in pts.customdata[5].tolist()
    assert line.customdata[0].tolist()[:3] == ["global_weight", "2", 3]
    # fixed colours, log2 x axis, baseline reference line, failed run counted
    assert line.line.color == PALETTE["global_weight"] == color_for("global_weight")
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis.dtick == pytest.approx(math.log10(2))
    assert fig.layout.xaxis.title.text == "compression ratio (×)"
    assert [s.y0 for s in fig.layout.shapes] == [0.92]
    assert notes(fig) == ["1 run left out: failed or missing top1, compression_ratio"]


def test_curves_vs_speedup_group_by_target(runs: pd.DataFrame) -> None:
    fig = curves(runs, x="speedup_theoretical", y="top1", color="strategy")
    assert trace(fig, "global_weight").x.tolist() == pytest.approx([1.6, 3.2, 6.4], abs=1e-12)
    fig = curves(runs, x="compression", group=None)
    assert trace(fig, "random").x.tolist() == [2.0, 4.0, 8.0]


def test_curves_split_lines_by_model(runs: pd.DataFrame) -> None:
    other = runs.assign(model="vgg16_bn", top1=runs["top1"] - 0.1)
    fig = curves(pd.concat([runs, other], ignore_index=True))
    names = [t.name for t in fig.data if t.mode == "lines+markers"]
    assert names == [
        "global_weight · resnet20",
        "global_weight · vgg16_bn",
        "random · resnet20",
        "random · vgg16_bn",
    ]
    assert trace(fig, "global_weight · vgg16_bn").y.tolist() == pytest.approx([0.81, 0.78, 0.72], abs=1e-12)
    assert trace(fig, "global_weight · vgg16_bn").line.dash == "dash"


def test_shrinkbench_views_two_panels(runs: pd.DataFrame) -> None:
    fig = shrinkbench_views(runs)
    lines = [t for t in fig.data if t.name == "global_weight"]
    assert [t.xaxis for t in lines] == ["x", "x2"]
    assert lines[0].x.tolist() == pytest.approx([2.0, 4.0, 8.0], abs=1e-12)
    assert lines[1].x.tolist() == pytest.approx([1.6, 3.2, 6.4], abs=1e-12)
    assert lines[0].y.tolist() == lines[1].y.tolist()
    assert [lines[0].showlegend, lines[1].showlegend] == [True, False]
    assert fig.layout.xaxis.type == fig.layout.xaxis2.type == "log"
    assert fig.layout.xaxis2.title.text == "theoretical speedup (×)"


def test_frontier_pareto_set(runs: pd.DataFrame) -> None:
    table = pd.DataFrame(
        {
            "run_id": list("ABCDE"),
            "method": ["prune", "quant", "pipeline", "pipeline", "prune"],
            "order": ["", "", "PQD", "QPD", ""],
            "top1": [0.90, 0.85, 0.85, 0.80, 0.70],
            "latency_ms_p50": [3.0, 1.0, 2.0, 0.5, 2.0],
            "size_bytes_gzip": [100, 100, 100, 500, 50],
        }
    )
    fig = frontier(table, size=None)
    assert [t.name for t in fig.data] == ["PQD", "QPD", "prune", "quant", "Pareto-optimal (3)"]
    front = fig.data[-1]
    assert front.customdata.tolist() == ["D", "B", "A"]  # sorted by latency
    assert front.x.tolist() == [0.5, 1.0, 3.0] and front.y.tolist() == [0.80, 0.85, 0.90]
    assert fig.data[0].marker.color == PALETTE["PQD"]
    fig3 = frontier(table, size="size_bytes_gzip")  # E is now optimal: smallest
    assert sorted(fig3.data[-1].customdata.tolist()) == ["A", "B", "D", "E"]
    assert fig3.data[-1].mode == "markers"
    assert frontier(table, pareto=False).data[-1].name == "quant"
    assert [t.name for t in frontier(table, color="technique").data] == [t.name for t in fig3.data]
    by_strategy = frontier(runs, color="strategy")
    assert [t.name for t in by_strategy.data[:2]] == ["global_weight", "random"]
    assert notes(by_strategy) == ["1 run left out: failed or missing top1, latency_ms_p50, size_bytes_gzip"]


def test_baseline_confounder_marks_crossings() -> None:
    rows = []
    tops = {"A": [0.90, 0.80, 0.60], "B": [0.85, 0.82, 0.70]}  # B starts lower, ends higher: crosses once
    for recipe, ys in tops.items():
        for c, y in zip([2.0, 4.0, 8.0], ys, strict=True):
            for seed, d in enumerate([-0.01, 0.01]):
                rows.append(
                    {
                        "run_id": f"{recipe}{c:g}{seed}",
                        "strategy": "global_weight",
                        "baseline_recipe": recipe,
                        "compression": c,
                        "compression_ratio": c,
                        "seed": seed,
                        "top1": y + d,
                    }
                )
    rows.append(
        {
            "run_id": "failed-random",
            "strategy": "random",
            "baseline_recipe": "A",
            "compression": 2.0,
            "compression_ratio": 2.0,
            "seed": 0,
            "top1": np.nan,
        }
    )
    runs = pd.DataFrame(rows)
    fig = baseline_confounder(runs, by="baseline_recipe", strategy="global_weight")
    assert len(notes(fig)) == 1  # the failed run of another strategy is not counted here
    assert trace(fig, "baseline_recipe=A").y.tolist() == pytest.approx(tops["A"], abs=1e-12)
    cross = trace(fig, "crossings")
    # between x=2 and x=4 (log2 1 and 2): A - B goes from +0.05 to -0.02 -> t = 5/7 in log2 space
    t = 0.05 / 0.07
    assert cross.x.tolist() == pytest.approx([2 ** (1 + t)], abs=1e-12)
    assert cross.y.tolist() == pytest.approx([0.90 - 0.10 * t], abs=1e-12)
    assert cross.customdata.tolist() == ["baseline_recipe=A × baseline_recipe=B"]
    assert "1 crossing: which baseline_recipe looks better" in notes(fig)[0]
    same = baseline_confounder(runs.loc[runs["baseline_recipe"] == "A"])
    assert len(trace(same, "crossings").x) == 0
    other = baseline_confounder(runs, strategy="random")
    assert [a.text for a in other.layout.annotations if a.name == "empty"] == [
        "No runs of strategy 'random'."
    ]


def test_ordering_ablation_bars_with_ci(ablation_runs: pd.DataFrame) -> None:
    fig = ordering_ablation(ablation_runs)
    acc, lat = fig.data
    assert (acc.name, lat.name) == ("top1", "latency_ms_p50")
    assert list(acc.x) == ["baseline", "prune", "quant", "distill", "PQD", "QPD"]
    assert acc.y.tolist() == pytest.approx([0.92, 0.89, 0.90, 0.92, 0.88, 0.84], abs=1e-12)
    _, lo, hi = band([0.86, 0.82])
    assert hi > 1.0  # t(0.975, 1) = 12.7: the raw interval passes 1, and accuracy intervals are clipped
    assert acc.error_y.array[5] == pytest.approx(1.0 - 0.84, abs=1e-12)
    assert acc.error_y.arrayminus[5] == pytest.approx(0.84 - lo, abs=1e-12)
    assert acc.error_y.array[0] == 0.0  # identical seeds: zero-width interval
    assert lat.y.tolist() == pytest.approx([4.0, 3.1, 1.1, 4.1, 0.85, 0.8], abs=1e-12)
    assert lat.xaxis == "x2"
    assert list(fig.layout.yaxis.range) == [0.55, 1.0]  # accuracy zoomed on the data: QPD low 0.586 - 0.02
    assert fig.layout.yaxis2.range is None
    assert list(acc.marker.color) == [PALETTE[k] for k in acc.x]
    assert notes(fig) == ["1 run left out: failed or missing top1, latency_ms_p50"]
    assert list(ordering_ablation(ablation_runs, include_baseline=False).data[0].x)[0] == "prune"


def test_ordering_ablation_splits_varying_compression(ablation_runs: pd.DataFrame) -> None:
    extra = ablation_runs.loc[ablation_runs["method"] == "prune"].assign(compression=8.0, top1=0.5)
    fig = ordering_ablation(pd.concat([ablation_runs, extra], ignore_index=True))
    assert list(fig.data[0].x)[:3] == ["baseline", "prune 4×", "prune 8×"]


def test_layer_sparsity_one_run(layers: pd.DataFrame) -> None:
    fig = layer_sparsity(layers, "gl-8-1")
    bars = trace(fig, "sparsity")
    rows = layers.loc[layers["run_id"] == "gl-8-1"]
    assert list(bars.x) == ["conv1", "layer1.conv", "fc"]
    assert bars.y.tolist() == rows["sparsity"].tolist()
    assert fig.layout.shapes[0].y0 == pytest.approx(
        1 - rows["nonzero"].sum() / rows["params"].sum(), abs=1e-12
    )
    missing = layer_sparsity(layers, "nope")
    assert missing.data == () and "No per-layer rows for run 'nope'" in missing.layout.annotations[0].text


def test_latency_by_runtime_grouped_bars() -> None:
    df = pd.DataFrame(
        {
            "model": ["resnet20", "resnet20", "resnet20", "vgg", "vgg", "resnet20"],
            "latency_runtime": ["onnxruntime", "eager", "compiled", "eager", "onnxruntime", "eager"],
            "latency_ms_p50": [1.0, 2.0, 1.5, 5.0, 3.0, 4.0],
            "latency_ms_p90": [1.2, 2.5, 1.6, 6.0, 3.3, 4.5],
        }
    )
    fig = latency_by_runtime(df)
    assert [t.name for t in fig.data] == ["eager", "compiled", "onnxruntime"]
    eager = fig.data[0]
    assert list(eager.x) == ["resnet20", "vgg"] and eager.y.tolist() == [
        3.0,
        5.0,
    ]  # two resnet20 rows averaged
    assert eager.error_y.array.tolist() == pytest.approx([0.5, 1.0], abs=1e-12)
    assert list(fig.data[1].x) == ["resnet20"] and fig.data[2].y.tolist() == [1.0, 3.0]
    assert eager.marker.color == PALETTE["eager"]
    labelled = latency_by_runtime(df.rename(columns={"model": "label"}).drop(columns="latency_ms_p90"))
    assert labelled.data[0].error_y.array is None and labelled.layout.xaxis.title.text == "label"


@pytest.mark.parametrize(
    "func",
    [
        curves,
        shrinkbench_views,
        frontier,
        baseline_confounder,
        ordering_ablation,
        latency_by_runtime,
        lambda df: layer_sparsity(df, "x"),
    ],
)
def test_empty_dataframe_gives_annotated_empty_figure(func) -> None:
    fig = func(pd.DataFrame())
    assert fig.data == ()
    assert "empty" in fig.layout.annotations[0].text


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda df: curves(df.drop(columns=["strategy", "compression"])),
            r"curves\(\) needs column\(s\) "
            r"\['strategy', 'compression'\]",
        ),
        (
            lambda df: shrinkbench_views(df.drop(columns="speedup_theoretical")),
            r"shrinkbench_views\(\).*"
            r"'speedup_theoretical'",
        ),
        (
            lambda df: frontier(df, size="size_bytes_zstd"),
            r"frontier\(\) needs column\(s\) \['size_bytes_zstd'\]",
        ),
        (
            lambda df: baseline_confounder(df, by="recipe"),
            r"baseline_confounder\(\) needs column\(s\) \['recipe'\]",
        ),
        (
            lambda df: ordering_ablation(df.drop(columns="order")),
            r"ordering_ablation\(\) needs column\(s\) \['order'\]",
        ),
        (lambda df: layer_sparsity(df, "a"), r"layer_sparsity\(\) needs column\(s\) \['layer', 'sparsity'\]"),
        (
            lambda df: latency_by_runtime(df.drop(columns="latency_runtime")),
            r"latency_by_runtime\(\).*latency_runtime",
        ),
    ],
)
def test_missing_columns_raise_value_error(runs: pd.DataFrame, call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(runs)


def test_nan_rows_left_out_and_counted(runs: pd.DataFrame) -> None:
    bad = runs.copy()
    bad.loc[0, "top1"] = np.nan  # gl-2-0
    bad.loc[3, "compression_ratio"] = np.inf  # gl-4-0
    fig = curves(bad)
    assert notes(fig) == ["3 runs left out: failed or missing top1, compression_ratio"]
    assert trace(fig, "global_weight").y.tolist() == pytest.approx([0.915, 0.88, 0.82], abs=1e-12)
    assert "gl-2-0" not in trace(fig, "global_weight runs").customdata[:, -1].tolist()
    all_bad = curves(runs.assign(top1=np.nan))
    assert all_bad.data == () and notes(all_bad) == [
        "16 runs left out: failed or missing top1, compression_ratio"
    ]
    assert "No runs with a value" in all_bad.layout.annotations[0].text
    fine = curves(runs.loc[runs["status"] == "ok"])
    assert notes(fine) == []


def test_string_columns_with_pandas_string_dtype(runs: pd.DataFrame) -> None:
    text = runs.astype({"top1": "string", "strategy": "string"})
    text.loc[0, "top1"] = "n/a"
    fig = curves(text)
    assert notes(fig) == ["2 runs left out: failed or missing top1, compression_ratio"]
    assert trace(fig, "global_weight").y.tolist() == pytest.approx([0.915, 0.88, 0.82], abs=1e-12)

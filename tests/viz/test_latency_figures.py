"""Latency figures read per-run ratios to the baseline, name the machine, refuse mixed machines, and the
frontier explorer exports the selected run's deployed model."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from plotly.callbacks import InputDeviceState, Points

from shrinkviz.experiments.artefacts import artefact_bytes, export_artefact
from shrinkviz.experiments.schema import RUN_COLUMNS
from shrinkviz.experiments.store import Store
from shrinkviz.models import create_model
from shrinkviz.viz import CompressionExplorer, FrontierExplorer, frontier, speedup_by_runtime
from shrinkviz.viz.report import build_sections


def make_run(strategy: str, compression: float, seed: int, top1: float) -> dict:
    return {
        "run_id": f"{strategy[:2]}-{compression:g}-{seed}",
        "status": "ok",
        "error": "",
        "dataset": "cifar10",
        "model": "resnet20",
        "baseline_recipe": "shrinkbench",
        "baseline_seed": 0,
        "method": "prune",
        "strategy": strategy,
        "compression": compression,
        "finetune": "shrinkbench",
        "order": "",
        "quantization": "none",
        "seed": seed,
        "top1": top1,
        "baseline_top1": 0.92,
        "params": 1000,
        "params_nonzero": int(1000 / compression),
        "compression_ratio": compression,
        "speedup_theoretical": compression * 0.8,
        "size_bytes_raw": int(11_000 / compression),
        "size_bytes_gzip": int(10_000 / compression),
        "latency_ms_p50": 2.0 - 0.05 * compression,
        "latency_ms_p90": 2.5,
        "latency_runtime": "eager",
    }


def _ratio_runs(machines=("m1", "m1", "m1")) -> pd.DataFrame:
    rows = []
    for i, (mid, c) in enumerate(zip(machines, (2.0, 4.0, 8.0), strict=True)):
        row = make_run("global_weight", c, 0, 0.9 - 0.05 * i)
        row.update(
            latency_vs_baseline=1.0 - 0.2 * i,
            latency_vs_baseline_min=0.95 - 0.2 * i,
            latency_vs_baseline_max=1.1 - 0.2 * i,
            machine_id=mid,
            cpu_model=f"CPU {mid}",
            cpu_isa="avx2,avx512_vnni",
            cpu_cores=2,
        )
        rows.append(row)
    return pd.DataFrame(rows)


def test_frontier_plots_the_ratio_with_its_range_and_names_the_machine():
    runs = _ratio_runs()
    fig = frontier(runs)
    points = fig.data[0]
    assert list(points.x) == [1.0, 0.8, 0.6]
    assert np.allclose(points.error_x.array, [0.1, 0.1, 0.1]) and np.allclose(points.error_x.arrayminus, 0.05)
    assert "latency vs dense baseline" in fig.layout.xaxis.title.text
    notes = [a.text for a in fig.layout.annotations if a.name == "note"]
    assert notes == ["latency measured on CPU m1 (avx2, avx512_vnni, 2 cores) [m1]"]
    for key in ("latency_ms_p50", "latency_runtime", "machine"):
        assert f"{key}: %{{customdata" in points.hovertemplate
    # a table without ratios keeps plotting milliseconds
    assert list(frontier(runs.drop(columns=["latency_vs_baseline"])).data[0].x) == list(
        runs["latency_ms_p50"]
    )


def test_latencies_of_two_machines_are_refused_unless_split_by_machine():
    runs = _ratio_runs(("m1", "m2", "m2"))
    with pytest.raises(ValueError, match="measured on 2 machines .*by_machine=True"):
        frontier(runs)
    fig = frontier(runs, by_machine=True)
    names = [t.name for t in fig.data]
    assert names[:2] == ["prune @ m1", "prune @ m2"]
    assert "CPU m1" in fig.layout.annotations[0].text and "CPU m2" in fig.layout.annotations[0].text
    with pytest.raises(ValueError, match="2 machines"):
        FrontierExplorer(runs)
    heading = build_sections(runs.assign(shrinkviz_version="x", torch_version="y", duration_s=1.0))[1][0]
    assert heading == "Accuracy vs latency vs dense baseline, timed side by side (marker area: gzip size)"


@pytest.fixture
def artefact_store(tmp_path):
    store = Store(tmp_path / "store")
    nets = {}
    for i, c in enumerate((2.0, 4.0)):
        row = {name: None for name in RUN_COLUMNS} | make_run("global_weight", c, 0, 0.9 - 0.1 * i)
        row.update(config_json="{}", started_at="", finished_at="", duration_s=1.0, device="cpu")
        row.update(shrinkviz_version="x", torch_version="y", top5=0.99, val_top1=0.9, macs=1, macs_nonzero=1)
        row.update(latency_ms_p50=1.0 + i, latency_vs_baseline=1.0 - 0.3 * i, machine_id="m1", cpu_model="C")
        nets[row["run_id"]] = create_model("tiny_cnn", input_shape=(1, 8, 8), seed=i).eval()
        store.put(row, artefact=artefact_bytes(nets[row["run_id"]]))
    return store, nets


def test_export_artefact_as_state_dict_and_onnx(artefact_store, tmp_path):
    store, nets = artefact_store
    run_id = next(iter(nets))
    path = export_artefact(store, run_id, tmp_path, "state_dict")
    assert path == tmp_path / f"{run_id}.pt"
    state = torch.load(path, weights_only=True)
    fresh = create_model("tiny_cnn", input_shape=(1, 8, 8), seed=5).eval()
    fresh.load_state_dict(state)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(fresh(x), nets[run_id](x))
    onnx_path = export_artefact(store, run_id, tmp_path / "m.onnx", "onnx")
    assert onnx.load(str(onnx_path)).graph.input[0].name == "input"
    with pytest.raises(ValueError, match="did you mean 'onnx'"):
        export_artefact(store, run_id, tmp_path, "onx")


def test_frontier_explorer_exports_the_selected_run(artefact_store, tmp_path):
    store, nets = artefact_store
    ex = FrontierExplorer(store)
    assert ex.state["x"] == "latency_vs_baseline" and not ex.export_button.disabled
    ids = sorted(nets)
    assert sorted(ex.run_picker.options) == ids and ex.state["selected_run_id"] in ids
    # clicking a point selects its run
    trace = ex.figure.data[0]
    assert len(trace.x) == 2 and sorted(ex._trace_ids[0]) == ids
    other = next(r for r in ids if r != ex.state["selected_run_id"])
    index = ex._trace_ids[0].index(other)
    trace._dispatch_on_click(
        Points([index], [trace.x[index]], [trace.y[index]], trace.name, 0), InputDeviceState()
    )
    assert ex.state["selected_run_id"] == other
    ex.export_folder.value = str(tmp_path)
    ex.export_format.value = "onnx"
    ex.export_button.click()
    chosen = ex.state["selected_run_id"]
    assert (tmp_path / f"{chosen}.onnx").is_file() and chosen in ex.export_status.value
    with pytest.raises(ValueError, match="is not plotted"):
        ex.select("nope")
    bare = FrontierExplorer(store.runs())
    assert (
        bare.export_button.disabled and bare.export() is None and "pass a store" in bare.export_status.value
    )
    assert json.dumps(ex.state)  # the state stays plain data


def test_compression_explorer_exports_the_run_under_the_slider(artefact_store, tmp_path):
    store, nets = artefact_store
    ex = CompressionExplorer(store)
    assert not ex.export_button.disabled
    ex.slider.value = 4.0
    chosen = ex.state["run_id"]
    ex.export_folder.value = str(tmp_path)
    ex.export_button.click()
    path = tmp_path / f"{chosen}.pt"
    assert path.is_file() and chosen in ex.export_status.value
    fresh = create_model("tiny_cnn", input_shape=(1, 8, 8), seed=7).eval()
    fresh.load_state_dict(torch.load(path, weights_only=True))
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(fresh(x), nets[chosen](x))  # the run under the slider, not another one
    (tmp_path / "a-file").write_text("x")
    ex.export_folder.value = str(tmp_path / "a-file" / "inside")  # a folder below a plain file
    assert ex.export() is None and ex.export_status.value.startswith("export failed")
    bare = CompressionExplorer(store.runs())
    assert (
        bare.export_button.disabled and bare.export() is None and "pass a store" in bare.export_status.value
    )


def test_speedup_by_runtime_plots_stored_ratios_and_counts_failed_rows():
    rows = pd.DataFrame(
        {
            "design": ["dense", "sparse90", "sparse90", "dense"],
            "model": "m",
            "runtime": ["eager", "eager", "sparse", "sparse"],
            "latency_vs_baseline": [1.0, 0.98, 0.4, None],
            "latency_vs_baseline_min": [0.95, 0.9, 0.35, None],
            "latency_vs_baseline_max": [1.05, 1.0, 0.5, None],
            "latency_ms_p50": [2.0, 1.96, 0.8, None],
            "baseline_ms_p50": [2.0, 2.0, 2.0, None],
            "baseline_runtime": "eager",
            "error": ["", "", "", "SparseConversionError: no sparse layer"],
            "machine_id": "m1",
            "cpu_model": "C",
        }
    )
    fig = speedup_by_runtime(rows, label="design", facet="model")
    bars = {t.name: t for t in fig.data}
    assert list(bars) == ["eager", "sparse"]
    assert [round(v, 3) for v in bars["sparse"].y] == [2.5]  # 1 / 0.4
    assert round(bars["sparse"].error_y.array[0], 3) == round(1 / 0.35 - 2.5, 3)
    notes = " ".join(a.text for a in fig.layout.annotations)
    assert "1 measurement(s) left out" in notes and "latency measured on" in notes
    with pytest.raises(ValueError, match="2 machines"):
        speedup_by_runtime(rows.assign(machine_id=["m1", "m2", "m1", "m1"]))


def test_curves_of_latency_refuse_two_machines_and_name_one():
    from shrinkviz.viz import curves

    runs = _ratio_runs()
    fig = curves(runs, x="compression", y="latency_vs_baseline", color="strategy")
    assert any("latency measured on CPU m1" in a.text for a in fig.layout.annotations)
    with pytest.raises(ValueError, match="2 machines"):
        curves(_ratio_runs(("m1", "m2", "m1")), x="compression", y="latency_vs_baseline", color="strategy")


def test_frontier_of_concatenated_tables_with_repeated_index():
    runs = _ratio_runs()
    both = pd.concat([runs, runs.iloc[:1].assign(run_id="ref", latency_vs_baseline=1.0)])
    _, rows = __import__("shrinkviz.viz.panels", fromlist=["frontier_parts"]).frontier_parts(both)
    assert len(rows) == 4 and rows["pareto"].dtype == bool

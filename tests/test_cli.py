"""The ``shrinkviz`` command: the smoke demo end to end, sweeps from YAML / JSON, reports, bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from shrinkviz.cli import demo_experiments, main
from shrinkviz.experiments.store import Store

SWEEP_YAML = """\
base:
  model: tiny_mlp
  data: {name: digits, train: 256, val: 64, test: 128}
  baseline: {epochs: 2}
  finetune: {preset: adam_fast, epochs: 1}
  latency: {runtimes: [eager], rounds: 3, warmup: 1, min_time_s: 0}
grid:
  strategy: [random]
  compression: [2, 4]
store: out/results
"""


def test_console_script_is_installed():
    out = subprocess.run(["shrinkviz", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "{demo,sweep,report,remeasure}" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "shrinkviz.cli", "demo", "--profile", "huge"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "unknown --profile value 'huge'; valid: full, smoke" in bad.stderr


def test_demo_profiles_describe_the_readme_runs():
    full = demo_experiments("full")
    assert [e.method for e in full] == ["baseline"] + ["prune"] * 12 + ["quant", "pipeline"]
    assert {(e.model, e.data.name, e.data.subset, e.baseline.recipe, e.baseline.epochs) for e in full} == {
        ("mnistnet", "fashion_mnist", None, "default", None)
    }
    assert sorted({e.prune.compression for e in full if e.method == "prune"}) == [2.0, 4.0, 8.0, 16.0]
    assert full[-1].pipeline.order == "PQD" and full[-1].pipeline.epochs == (1, 2, 2)
    smoke = demo_experiments("smoke")
    assert [e.method for e in smoke] == ["baseline"] + ["prune"] * 4 + ["quant", "pipeline"]
    with pytest.raises(
        ValueError, match="profile 'huge' is unknown; SHRINKVIZ_PROFILE must be one of: smoke, full"
    ):
        demo_experiments("huge")


@pytest.mark.slow
def test_smoke_demo_end_to_end_then_instant_rerun(tmp_path, capsys):
    store_dir, report = tmp_path / "results", tmp_path / "demo.html"
    argv = ["demo", "--profile", "smoke", "--store", str(store_dir), "--out", str(report), "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "shrinkviz demo (smoke profile): mnistnet on fashion_mnist, 7 runs" in out
    assert "7 runs: 7 ran (0 failed), 0 already stored" in out and f"report: {report}" in out
    runs = Store(store_dir).runs()
    assert len(runs) == 7 and (runs["status"] == "ok").all()
    assert sorted(runs["method"].unique()) == ["baseline", "pipeline", "prune", "quant"]
    assert runs.loc[runs["method"] == "pipeline", "order"].tolist() == ["PQD"]
    assert runs["latency_ms_p50"].notna().all() and (runs["size_bytes_gzip"] > 0).all()
    html = report.read_text()
    assert html.count("Plotly.newPlot") >= 4 and "plotly.js v" in html  # figures, with plotly.js embedded
    for heading in (
        "Accuracy vs latency",
        "Pruning: accuracy vs compression",
        "Techniques and pipeline orders",
        "Per-layer sparsity",
        "Summary over seeds",
        "All successful runs",
    ):
        assert heading in html, heading
    assert main(argv) == 0  # a second demo loads the cached baseline and runs nothing
    assert "7 runs: 0 ran (0 failed), 7 already stored" in capsys.readouterr().out


def test_sweep_from_yaml_resumes_and_reports(tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_text(SWEEP_YAML)
    report = tmp_path / "sweep.html"
    assert main(["sweep", str(config), "--report", str(report), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "2 runs: 2 ran (0 failed), 0 already stored" in out and f"report: {report}" in out
    store = Store(tmp_path / "out" / "results")  # relative to the config file
    runs = store.runs()
    assert runs["compression"].tolist() == [2.0, 4.0] and (runs["status"] == "ok").all()
    assert "Pruning: accuracy vs compression" in report.read_text()
    as_json = tmp_path / "sweep.json"
    import yaml

    as_json.write_text(json.dumps(yaml.safe_load(SWEEP_YAML)))
    assert main(["sweep", str(as_json), "--quiet"]) == 0  # the same sweep as JSON: nothing to do
    assert "2 runs: 0 ran (0 failed), 2 already stored" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: c.replace("finetune: {", "finetune: {sparsity: 1, "),
            "unknown field(s) Experiment.finetune.sparsity; valid fields: preset, epochs, examples",
        ),
        (
            lambda c: c.replace("compression: [2, 4]", "compression: [2, 4]\n  prune.ratio: [3]"),
            "Experiment has no field 'prune.ratio'",
        ),
        (
            lambda c: c.replace("compression: [2, 4]", "compression: [2, 0.5]"),
            "Experiment.prune.compression=0.5: must be >= 1 (grid point {'strategy': 'random', 'compression': 0.5})",
        ),
        (lambda c: c + "workers: 3\n", "unknown key(s) ['workers']; valid keys: base, experiments, grid"),
        (lambda c: c + "title: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_sweep_configs_are_rejected_before_anything_runs(tmp_path, capsys, edit, message):
    config = tmp_path / "sweep.yaml"
    config.write_text(edit(SWEEP_YAML))
    assert main(["sweep", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("shrinkviz: error: ") and message in err
    assert not (tmp_path / "out").exists()


def test_unreachable_scheduler_is_a_clear_error(tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_text(SWEEP_YAML)
    assert main(["sweep", str(config), "--scheduler", "tcp://127.0.0.1:9", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert re.search(
        r"cannot reach the Dask scheduler at 'tcp://127\.0\.0\.1:9' within 5 s .*Nothing was run", err
    )
    assert not (tmp_path / "out").exists()


def test_failed_runs_give_exit_status_1_and_are_listed(tmp_path, capsys):
    import torch

    from shrinkviz.models import create_model, register_model

    class TrainFails(torch.nn.Module):  # takes the input (preflight passes), but training raises
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            if self.training:
                raise RuntimeError("training blew up")
            return self.inner(x)

    register_model(
        "trainfails",
        lambda input_shape, num_classes: TrainFails(create_model("tiny_mlp", input_shape, num_classes)),
        overwrite=True,
    )
    config = tmp_path / "sweep.json"
    experiment = {"model": "trainfails", "data": {"name": "digits", "train": 64}, "latency": {"runtimes": []}}
    config.write_text(json.dumps({"experiments": [experiment], "store": "res"}))
    assert main(["sweep", str(config), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "1 runs: 1 ran (1 failed)" in out and "FAILED" in out and "training blew up" in out
    assert Store(tmp_path / "res").runs()["status"].tolist() == ["failed"]


def test_infeasible_runs_are_refused_before_anything_runs(tmp_path, capsys):
    config = tmp_path / "sweep.json"
    experiment = {"model": "mnistnet", "data": {"name": "digits"}, "latency": {"runtimes": []}}
    config.write_text(json.dumps({"experiments": [experiment], "store": "res"}))
    assert main(["sweep", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("shrinkviz: error: preflight found 1 problem(s)") and err.count("\n") == 1
    assert "model 'mnistnet' cannot take digits's input (1, 8, 8)" in err
    assert not (tmp_path / "res").exists()


def test_report_of_a_store_with_a_corrupt_entry_and_of_an_empty_store(tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_text(SWEEP_YAML)
    assert main(["sweep", str(config), "--quiet"]) == 0
    store_dir = tmp_path / "out" / "results"
    (store_dir / "runs" / "garbage.json").write_text("{not json")
    out_file = tmp_path / "r.html"
    with pytest.warns(RuntimeWarning, match="garbage.json"):
        assert main(["report", "--store", str(store_dir), "--out", str(out_file)]) == 0
    captured = capsys.readouterr()
    assert "2 runs from" in captured.out and f"report: {out_file}" in captured.out
    assert "skipped corrupt entry" in captured.err and "garbage.json" in captured.err
    assert "All successful runs" in out_file.read_text()
    small = tmp_path / "small.html"
    with pytest.warns(RuntimeWarning, match="garbage.json"):
        assert main(["report", "--store", str(store_dir), "--out", str(small), "--plotlyjs", "cdn"]) == 0
    assert "All successful runs" in small.read_text() and "cdn.plot.ly" in small.read_text()
    assert small.stat().st_size < out_file.stat().st_size - 3_000_000
    assert main(["report", "--store", str(tmp_path / "missing")]) == 2
    assert f"shrinkviz: error: store {tmp_path / 'missing'} does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", "--store", str(tmp_path / "empty")]) == 2
    assert f"store {tmp_path / 'empty'} holds no runs; run `shrinkviz sweep" in capsys.readouterr().err
    assert not (tmp_path / "empty" / "report.html").exists()


def test_report_with_claims_opens_with_the_verdicts_and_writes_the_tables(tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_text(SWEEP_YAML)
    assert main(["sweep", str(config), "--quiet"]) == 0
    spec = tmp_path / "claims.toml"
    spec.write_text(
        'title = "t"\n[[claim]]\nid = "1"\ntitle = "x2 beats x4"\ntest = "difference"\n'
        "a = { compression = 2 }\nb = { compression = 4 }\n"
    )
    out, tables = tmp_path / "r.html", tmp_path / "tables"
    store = str(tmp_path / "out" / "results")
    argv = ["report", "--store", store, "--out", str(out), "--plotlyjs", "cdn"]
    assert main([*argv, "--claims", str(spec), "--tables", str(tables)]) == 0
    html = out.read_text()
    assert html.index("Verdicts, computed from the stored runs") < html.index("<h2>Summary</h2>")
    assert "inconclusive" in html and "the spec needs 2" in html  # one seed: never decided
    assert "shrinkviz 0.1.0" in html and "latency measured on" in html
    assert sorted(p.name for p in tables.iterdir()) == ["correct.csv", "latency.csv", "runs.csv"]
    capsys.readouterr()
    spec.write_text('title = "t"\n[[claim]]\nid = "1"\ntitle = "x"\ntest = "diffrence"\n')
    assert main([*argv, "--out", str(tmp_path / "bad.html"), "--claims", str(spec)]) == 2
    assert "did you mean 'difference'" in capsys.readouterr().err
    assert not (tmp_path / "bad.html").exists()  # the spec is checked before anything is written

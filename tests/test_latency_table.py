"""Latency a reader can trust: runs timed side by side with their baseline into a long-form latency table,
stored artefacts that rebuild the deployed model exactly, re-timing a whole store, the machine in every
row, OpenVINO and the ``fastest`` choice, and one-line errors for bad input with nothing written."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch

from shrinkviz.cli import main
from shrinkviz.core.machine import ISA_FLAGS, MACHINE_FIELDS, describe, int8_class, machine, machine_id
from shrinkviz.deploy import runtimes as rt
from shrinkviz.deploy.forms import model_dtype
from shrinkviz.experiments.artefacts import ArtefactError, artefact_bytes, load_artefact, read_artefact
from shrinkviz.experiments.experiment import Experiment
from shrinkviz.experiments.remeasure import RemeasureError, remeasure
from shrinkviz.experiments.schema import LATENCY_COLUMNS, RUN_COLUMNS
from shrinkviz.experiments.sidebyside import latency_rows, run_columns
from shrinkviz.experiments.specs import LatencySpec
from shrinkviz.experiments.store import Store
from shrinkviz.experiments.sweep import sweep
from shrinkviz.models import create_model
from shrinkviz.techniques.prune.structured import prune_channels
from shrinkviz.techniques.quant import convert, prepare_qat

FAST = {"rounds": 2, "warmup": 1, "min_time_s": 0.0}
DATA = {"name": "digits", "train": 128, "val": 32, "test": 64}


def _int8(model):
    qat = prepare_qat(model)
    qat.train()
    with torch.no_grad():
        qat(torch.randn(16, *model.input_shape, generator=torch.Generator().manual_seed(0)))
    return convert(qat)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A baseline, an unstructured-pruned and a PTQ INT8 run, timed on eager and onnxruntime."""
    folder = tmp_path_factory.mktemp("store")
    base = Experiment(
        model="tiny_cnn",
        data=DATA,
        baseline={"epochs": 1},
        finetune={"preset": "adam_fast", "epochs": 1},
        latency={"runtimes": ["eager", "onnxruntime"], **FAST},
    )
    exps = [
        base,
        base.replace(prune={"strategy": "global_weight", "compression": 4}),
        base.replace(quant={"method": "ptq"}),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sweep(exps, store=folder, progress=False)
    return folder, exps


# -- the machine ---------------------------------------------------------------------------------------
def test_machine_descriptor_names_cpu_isa_cores_and_versions():
    m = machine()
    assert list(m) == list(MACHINE_FIELDS)
    assert m["machine_id"] == machine_id() and len(m["machine_id"]) == 8
    assert m["torch_version"] == torch.__version__.split("+")[0] or m["torch_version"] == torch.__version__
    assert set(filter(None, m["cpu_isa"].split(","))) <= set(ISA_FLAGS)
    with open("/proc/cpuinfo") as fh:
        flags = next(line for line in fh if line.startswith("flags")).split(":", 1)[1].split()
    assert m["cpu_isa"].split(",") == [f for f in ISA_FLAGS if f in flags]
    assert int8_class("avx2,amx_int8") == "amx" and int8_class("avx2,avx_vnni") == "vnni"
    assert describe(m).endswith(f"[{m['machine_id']}]")


# -- the long-form table --------------------------------------------------------------------------------
def test_every_run_has_one_latency_row_per_runtime_timed_beside_its_baseline(swept):
    store = Store(swept[0])
    runs, table = store.runs(), store.latency()
    assert list(table.columns[: len(LATENCY_COLUMNS)]) == list(LATENCY_COLUMNS)
    assert len(table) == 6 and table.groupby("run_id")["runtime"].apply(list).map(
        tuple
    ).unique().tolist() == [("eager", "onnxruntime")]
    assert (table["error"] == "").all() and (table["sitting"] == "run").all()
    assert (table["baseline_runtime"] == table["runtime"]).all() and (table["rounds"] == 2).all()
    assert (table["latency_vs_baseline_min"] <= table["latency_vs_baseline"]).all()
    assert (table["latency_vs_baseline"] <= table["latency_vs_baseline_max"]).all()
    assert set(table["machine_id"]) == {machine_id()}
    dtypes = dict(zip(runs["method"], runs["run_id"], strict=True))
    assert table.set_index(["run_id", "runtime"]).loc[(dtypes["quant"], "eager"), "dtype"] == "int8"
    # the runs table keeps the first runtime's figures
    first = table[table["runtime"] == "eager"].set_index("run_id")
    for row in runs.to_dict("records"):
        assert row["latency_vs_baseline"] == first.loc[row["run_id"], "latency_vs_baseline"]
        assert row["latency_ms_p50"] == first.loc[row["run_id"], "latency_ms_p50"]
        assert row["machine_id"] == machine_id() and row["latency_runtime"] == "eager"
    assert set(RUN_COLUMNS) <= set(runs.columns) and runs["latency_vs_baseline_onnxruntime"].notna().all()


def test_a_store_written_before_the_latency_table_still_loads(tmp_path):
    row = {
        "run_id": "old1",
        "status": "ok",
        "error": "",
        "config_json": "{}",
        **{c: None for c in RUN_COLUMNS if c not in ("run_id", "status", "error", "config_json")},
    }
    for name in ("latency_vs_baseline", "latency_vs_baseline_min", "latency_vs_baseline_max", "machine_id"):
        del row[name]
    row.update(
        dataset="digits",
        model="tiny_mlp",
        method="baseline",
        latency_runtime="eager",
        latency_ms_p50=0.5,
        latency_threads=1,
        latency_batch=1,
        finished_at="2026-01-01T00:00:00+00:00",
        cpu_model="Old CPU",
    )
    doc = {"format": "shrinkviz-run", "schema_version": 1, "row": row, "history": [], "layers": []}
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "old1.json").write_text(json.dumps(doc))
    store = Store(tmp_path)
    runs, table = store.runs(), store.latency()
    assert store.problems == [] and runs["run_id"].tolist() == ["old1"]
    assert runs["latency_vs_baseline"].isna().all() and runs["machine_id"].tolist() == [""]
    assert table[["runtime", "latency_ms_p50", "cpu_model", "sitting"]].values.tolist() == [
        ["eager", 0.5, "Old CPU", "run"]
    ]
    assert table["latency_vs_baseline"].isna().all() and store.get("old1").schema_version == 1
    with pytest.raises(KeyError, match="no stored artefact"):
        store.artefact("old1")


# -- artefacts ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["fp32", "pruned", "int8", "structured"])
def test_artefact_round_trip_rebuilds_the_exact_deployed_model(form):
    model = create_model("resnet8", input_shape=(3, 16, 16), seed=0).eval()
    if form == "pruned":
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p[p.abs() < p.abs().median()] = 0
    elif form == "int8":
        model = _int8(model)
    elif form == "structured":
        model = prune_channels(model, keep=0.5).model.eval()
    back = load_artefact(artefact_bytes(model))
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), back(x))
    state, again = model.state_dict(), back.state_dict()
    assert list(state) == list(again)


def test_artefact_of_an_unregistered_architecture_keeps_its_state():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    data = artefact_bytes(net)
    assert torch.equal(read_artefact(data)["state"]["1.weight"], net[1].weight)
    with pytest.raises(ArtefactError, match="not registered here"):
        load_artefact(data)


def test_store_artefact_by_run_id_is_checksummed(swept):
    store = Store(swept[0])
    run_id = store.runs().query("method == 'quant'")["run_id"].item()
    model = store.artefact(run_id)
    exp = Experiment.from_json(store.get(run_id).row["config_json"])
    assert exp.run_id == run_id and model_dtype(model) == "int8"
    path = store.artefact_file(run_id)
    assert path.parent.name == "artefacts" and not list(path.parent.glob(".*.tmp"))
    good = path.read_bytes()
    path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    try:
        with pytest.raises(ArtefactError, match="does not match its checksum"):
            store.artefact(run_id)
    finally:
        path.write_bytes(good)


# -- remeasure -------------------------------------------------------------------------------------------
def test_remeasure_appends_a_sitting_and_keeps_the_old_rows(swept):
    folder = swept[0]
    before = Store(folder).latency()
    result = remeasure(folder, ["eager"], rounds=2, min_time_s=0.0)
    after = Store(folder).latency()
    assert len(result.latency) == 3 and result.skipped == {} and result.wall_s > 0
    assert len(after) == len(before) + 3
    assert (after[after["sitting"] == "run"].reset_index(drop=True) == before).all().all()
    new = after[after["sitting"] == result.session]
    assert sorted(new["runtime"]) == ["eager"] * 3 and (new["error"] == "").all()
    assert result.session.endswith(machine_id())
    runs = Store(folder).runs().set_index("run_id")
    for row in new.to_dict("records"):
        assert runs.loc[row["run_id"], "latency_vs_baseline"] == row["latency_vs_baseline"]
    latest = Store(folder).latest_latency()
    assert set(latest[latest["runtime"] == "eager"]["sitting"]) == {result.session}


def test_remeasure_cli(swept, capsys):
    assert (
        main(["remeasure", "--store", str(swept[0]), "--runtime", "eager", "--rounds", "2", "--quiet"]) == 0
    )
    out = capsys.readouterr().out
    assert "3 runs, 3 latency rows (0 with an error), 0 runs skipped" in out


def _files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--runtime", "eagr"], "did you mean 'eager'"),
        (["--threads", "0"], "threads"),
        (["--rounds", "0"], "rounds"),
    ],
)
def test_remeasure_bad_input_is_one_line_and_writes_nothing(swept, capsys, argv, message):
    before = {p: (swept[0] / p).stat().st_mtime_ns for p in _files(swept[0])}
    assert main(["remeasure", "--store", str(swept[0]), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err
    assert {p: (swept[0] / p).stat().st_mtime_ns for p in _files(swept[0])} == before


def test_remeasure_of_an_empty_or_foreign_store(tmp_path, capsys):
    with pytest.raises(RemeasureError, match="has no runs: run a sweep"):
        remeasure(tmp_path / "nothing")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("hello")
    assert main(["remeasure", "--store", str(tmp_path / "foreign")]) == 2
    assert "is not a shrinkviz store" in capsys.readouterr().err
    (tmp_path / "foreign" / "runs").mkdir()
    (tmp_path / "foreign" / "runs" / "x.json").write_text("{}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RemeasureError, match="no readable shrinkviz run records"):
            remeasure(tmp_path / "foreign")
    assert _files(tmp_path / "foreign") == sorted(
        [__import__("pathlib").Path("notes.txt"), __import__("pathlib").Path("runs/x.json")]
    )


def test_a_runtime_that_is_not_installed_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(rt.REQUIRES, "openvino", "no_such_package_here")
    with pytest.raises(ValueError, match="pip install -c constraints.txt no_such_package_here"):
        remeasure("/nonexistent-store", ["openvino"])
    # inside a run it is recorded for that runtime only
    net = create_model("tiny_mlp", input_shape=(1, 8, 8))
    rows = latency_rows(net, net, LatencySpec(runtimes=("eager", "openvino"), **FAST))
    assert [r["error"] == "" for r in rows] == [True, False]
    assert "pip install -c constraints.txt no_such_package_here" in rows[1]["error"]
    cols = run_columns(rows)
    assert cols["latency_ms_p50"] > 0 and "pip install" in cols["latency_error_openvino"]


def test_latency_spec_with_zero_rounds_or_threads_is_refused():
    for field in ("rounds", "threads"):
        with pytest.raises(ValueError, match=f"Experiment.latency.{field}"):
            LatencySpec(**{field: 0})


# -- OpenVINO and fastest -------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["fp32", "int8"])
def test_openvino_matches_eager(form):
    pytest.importorskip(
        "openvino", reason="openvino is not installed (pip install -c constraints.txt openvino)"
    )
    model = create_model("tiny_cnn", input_shape=(1, 8, 8), seed=0).eval()
    if form == "int8":
        model = _int8(model)
    x = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    runner = rt.make_runner(model, "openvino", x, 1)
    with torch.no_grad():
        want = model(x)
    got = torch.from_numpy(runner.call().copy())
    assert runner.dtype == form and "OpenVINO" in runner.detail
    # INT8: OpenVINO requantizes with its own rounding; one quantization step of the logits is the bound
    tol = 1e-3 * max(1.0, float(want.abs().max())) if form == "fp32" else 0.15 * float(want.abs().max())
    torch.testing.assert_close(got, want, atol=tol, rtol=0)
    assert int(got.argmax()) == int(want.argmax()) or form == "int8"


def test_fastest_records_every_runtime_and_marks_one_winner():
    net = create_model("tiny_cnn", input_shape=(1, 8, 8), seed=0).eval()
    rows = latency_rows(net, net, LatencySpec(runtimes=("fastest",), **FAST))
    installed = rt.concrete_runtimes(installed_only=True)
    assert [r["runtime"] for r in rows] == rt.concrete_runtimes()
    assert all(r["choice"] == "fastest" and r["baseline_runtime"] in ("eager", None) for r in rows)
    timed = [r for r in rows if not r["error"]]
    assert {r["runtime"] for r in timed} <= set(installed) and "eager" in {r["runtime"] for r in timed}
    winners = [r for r in rows if r["fastest"]]
    assert len(winners) == 1 and winners[0]["latency_vs_baseline"] == min(
        r["latency_vs_baseline"] for r in timed
    )
    cols = run_columns(rows)
    assert cols["latency_runtime"] == winners[0]["runtime"] and cols["latency_choice"] == "fastest"
    # the registered runtime form picks one too
    runner = rt.make_runner(net, "fastest", torch.randn(1, 1, 8, 8), 1)
    assert runner.detail.startswith("fastest: ") and runner.detail.split()[1] in installed


def test_a_runtime_that_cannot_run_the_model_is_recorded_for_that_runtime_only():
    @rt.register_runtime("test_broken", overwrite=True)
    def _broken(model, x, threads, dtype):
        raise ValueError("this runtime cannot run the model")

    try:
        net = create_model("tiny_mlp", input_shape=(1, 8, 8))
        rows = latency_rows(net, net, LatencySpec(runtimes=("test_broken", "eager"), **FAST))
        assert rows[0]["runtime"] == "test_broken" and "cannot run the model" in rows[0]["error"]
        assert rows[0]["latency_vs_baseline"] is None and rows[1]["error"] == ""
        cols = run_columns(rows)
        assert cols["latency_runtime"] == "test_broken" and cols["latency_ms_p50"] is None
        assert "cannot run the model" in cols["latency_error"] and cols["latency_ms_p50_eager"] > 0
        fastest = latency_rows(net, net, LatencySpec(runtimes=("fastest",), **FAST))
        broken = next(r for r in fastest if r["runtime"] == "test_broken")
        assert "cannot run the model" in broken["error"] and sum(r["fastest"] for r in fastest) == 1
    finally:
        rt.RUNTIMES.unregister("test_broken")


def test_unknown_runtime_in_a_latency_spec_suggests_the_name():
    with pytest.raises(ValueError, match="did you mean 'openvino'"):
        LatencySpec(runtimes=("openvno",))


def test_baseline_runtime_sets_one_reference_and_sparse_compares_with_eager():
    net = create_model("tiny_cnn", input_shape=(1, 8, 8), seed=0).eval()
    pruned = copy.deepcopy(net)
    with torch.no_grad():
        for p in pruned.parameters():
            if p.dim() > 1:
                p.mul_((torch.rand(p.shape, generator=torch.Generator().manual_seed(1)) < 0.2).float())
    own = latency_rows(pruned, net, LatencySpec(runtimes=("eager", "onnxruntime", "sparse"), **FAST))
    assert [r["baseline_runtime"] for r in own] == ["eager", "onnxruntime", "eager"]
    assert all(
        r["error"] == "" and r["latency_vs_baseline"] > 0 for r in own
    )  # the dense baseline never runs on sparse
    one = latency_rows(pruned, net, LatencySpec(runtimes=("onnxruntime",), baseline_runtime="eager", **FAST))
    assert one[0]["baseline_runtime"] == "eager" and one[0]["runtime"] == "onnxruntime"
    fastest = latency_rows(
        pruned, net, LatencySpec(runtimes=("fastest",), baseline_runtime="onnxruntime", **FAST)
    )
    assert {r["baseline_runtime"] for r in fastest if not r["error"]} == {"onnxruntime"}


def test_baseline_runtime_is_checked_and_kept_out_of_run_ids_when_unset():
    exp = Experiment(model="tiny_cnn", data=DATA)
    assert "baseline_runtime" not in exp.to_dict()["latency"]  # run ids of earlier stores are unchanged
    other = exp.replace(**{"latency.baseline_runtime": "eager"})
    assert other.run_id != exp.run_id and other.to_dict()["latency"]["baseline_runtime"] == "eager"
    assert Experiment.from_json(other.to_json()).latency.baseline_runtime == "eager"
    with pytest.raises(ValueError, match=r"baseline_runtime='eagr': did you mean 'eager'"):
        LatencySpec(baseline_runtime="eagr")
    with pytest.raises(ValueError, match="baseline_runtime='sparse'"):  # a dense baseline has no sparse layer
        LatencySpec(baseline_runtime="sparse")


def test_int8_runners_time_a_fresh_copy_never_the_model_called_before():
    # x86 quantized kernels settle their plan at the first call, for that call's thread count: the runner
    # must make its own first call under the pinned threads, on a re-packed copy
    net = create_model("tiny_cnn", input_shape=(1, 8, 8), seed=0).eval()
    q = _int8(net)
    called = []
    q.register_forward_hook(lambda module, *_: called.append(module))  # deepcopy copies the hook too
    out = rt.make_runner(q, "eager", torch.ones(1, 1, 8, 8), 1).call()
    assert len(called) == 1 and called[0] is not q
    assert torch.equal(out, q(torch.ones(1, 1, 8, 8)))
    net.register_forward_hook(lambda module, *_: called.append(module))
    rt.make_runner(net, "eager", torch.ones(1, 1, 8, 8), 1).call()
    assert called[-1] is net  # FP32 models are timed as they are


def test_remeasure_needs_no_registration_of_what_the_runs_used(tmp_path):
    # a notebook registers a dataset, sweeps, and ends; the shell's remeasure does not know the name
    from shrinkviz.data import from_tensors, register_dataset
    from shrinkviz.data.datasets import DATASETS

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (96, 1, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (96,), generator=g)
    register_dataset(
        "scratch_noise_8",
        lambda val_fraction=0.1, **_: from_tensors(
            "scratch_noise_8", images[:64], labels[:64], images[64:], labels[64:], num_classes=10
        ),
        overwrite=True,
    )
    base = Experiment(
        model="tiny_cnn",
        data="scratch_noise_8",
        baseline={"epochs": 1},
        finetune={"epochs": 1},
        latency={"runtimes": ["eager"], **FAST},
    )
    pruned = base.replace(prune={"strategy": "global_weight", "compression": 4})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sweep([base, pruned], store=tmp_path / "s", executor="local", progress=False)
    DATASETS.unregister("scratch_noise_8")
    result = remeasure(tmp_path / "s", run_ids=[pruned.run_id])  # its baseline run is found in the store
    assert list(result.latency["run_id"]) == [pruned.run_id] and (result.latency["error"] == "").all()
    assert len(remeasure(tmp_path / "s").latency) == 2


def test_remeasure_times_each_run_beside_its_own_baseline(tmp_path, monkeypatch):
    # two baselines that differ only in their epochs: each pruned run keeps its own
    base = Experiment(
        model="tiny_cnn",
        data=DATA,
        baseline={"epochs": 1},
        finetune={"epochs": 1},
        latency={"runtimes": ["eager"], **FAST},
    )
    longer = base.replace(**{"baseline.epochs": 2})
    pruned = [b.replace(prune={"strategy": "global_weight", "compression": 4}) for b in (base, longer)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sweep([base, longer, *pruned], store=tmp_path / "s", executor="local", progress=False)
    asked = []
    real = Store.artefact
    monkeypatch.setattr(Store, "artefact", lambda self, run_id: asked.append(run_id) or real(self, run_id))
    remeasure(tmp_path / "s", run_ids=[p.run_id for p in pruned])
    assert {base.run_id, longer.run_id} <= set(asked)


def test_remeasure_times_runs_in_groups_beside_their_shared_baseline(tmp_path, monkeypatch):
    from shrinkviz.experiments import sidebyside
    from shrinkviz.metrics import compare

    base = Experiment(
        model="tiny_cnn",
        data=DATA,
        baseline={"epochs": 1},
        finetune={"epochs": 1},
        latency={"runtimes": ["eager"], "rounds": 3, "warmup": 1, "min_time_s": 0.03},
    )
    exps = [base, *(base.replace(prune={"strategy": "random", "compression": c}) for c in (2, 3, 4, 5, 6, 8))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sweep(exps, store=tmp_path / "s", executor="local", progress=False)
    calls = []
    real = compare.compare_latency

    def spy(models, **kw):
        got = real(models, **kw)
        calls.append((list(models), kw["reference"], kw["warmup_s"], got))
        return got

    monkeypatch.setattr(compare, "compare_latency", spy)
    result = remeasure(tmp_path / "s")
    ids = [e.run_id for e in exps]
    assert len(calls) == 2  # 7 runs sharing one baseline and one spec: groups of 4 and 3
    assert [len(c[0]) - 1 for c in calls] == [sidebyside.TOGETHER, 7 - sidebyside.TOGETHER]
    assert all(c[0][0] == c[1] == sidebyside.BASELINE_KEY for c in calls)  # the baseline is every reference
    assert sorted(n for c in calls for n in c[0][1:]) == sorted(ids)  # every run timed exactly once
    one_pair = sidebyside.protocol(exps[0].latency)["warmup_s"] * 2
    assert [round(c[2] * len(c[0]), 9) for c in calls] == [round(one_pair, 9)] * 2  # a pair's warm-up, shared
    stored = Store(tmp_path / "s").runs().set_index("run_id")
    for names, _, _, got in calls:  # each run keeps its own ratio, taken against the baseline of its rounds
        for name, row in zip(names[1:], got[1:], strict=True):
            assert row["model"] == name and row["latency_reference"] == sidebyside.BASELINE_KEY
            assert stored.loc[name, "latency_vs_baseline"] == row["latency_vs_reference"]
    assert len(result.latency) == 7 and (result.latency["error"] == "").all()


def test_a_model_that_fails_beside_others_gets_its_own_error_and_the_others_are_timed():
    from shrinkviz.experiments.sidebyside import latency_rows_together

    class Broken(torch.nn.Module):
        input_shape = (1, 8, 8)

        def forward(self, x):
            raise RuntimeError("no kernel for this")

    net = create_model("tiny_mlp", input_shape=(1, 8, 8))
    got = latency_rows_together({"a": net, "bad": Broken(), "c": net}, net, LatencySpec(**FAST))
    assert [r["error"] == "" for r in got["a"] + got["c"]] == [True, True]
    assert "no kernel for this" in got["bad"][0]["error"] and got["bad"][0]["latency_vs_baseline"] is None
    assert got["a"][0]["latency_vs_baseline"] > 0 and got["c"][0]["run_id"] == "c"

"""Runner and sweeps: schema rows from real tiny runs, grids, resume, failures and retries, Dask."""

from __future__ import annotations

import math

import pytest

import shrinkviz as sv
from shrinkviz.experiments.executors import QUIET_WORKER_CONFIG, DaskExecutor, InProcessExecutor
from shrinkviz.experiments.experiment import Experiment
from shrinkviz.experiments.runner import run
from shrinkviz.experiments.schema import RUN_COLUMNS
from shrinkviz.experiments.store import Store
from shrinkviz.experiments.sweep import expand, sweep

BASE = Experiment(
    model="tiny_mlp",
    data={"name": "digits", "train": 256, "val": 64, "test": 128},
    baseline={"epochs": 2},
    finetune={"preset": "adam_fast", "epochs": 1},
    latency={"runtimes": []},
)


def test_runner_baseline_row_is_the_pretrained_model():
    exp = BASE.replace(**{"latency.runtimes": ["eager"], "latency.rounds": 3, "latency.min_time_s": 0})
    row, history, layers = run(exp)
    assert list(row)[: len(RUN_COLUMNS)] == list(RUN_COLUMNS)
    assert (
        row["run_id"] == exp.run_id and row["status"] == "ok" and row["config_json"] == exp.canonical_json()
    )
    assert Experiment.from_json(row["config_json"]) == exp
    assert (row["method"], row["strategy"], row["compression"], row["order"]) == ("baseline", "", 1.0, "")
    assert row["top1"] == row["baseline_top1"]  # the same model on the same 128 test images
    assert row["params"] == row["params_nonzero"] == 64 * 32 + 32 + 32 * 10 + 10
    assert row["macs"] == row["macs_nonzero"] == 64 * 32 + 32 * 10 and row["compression_ratio"] == 1.0
    assert row["latency_runtime"] == "eager" and row["latency_threads"] == 1 and row["latency_ms_p50"] > 0
    assert row["size_bytes_gzip"] < row["size_bytes_raw"]
    assert [h["stage"] for h in history] == ["pretrain", "pretrain"] and [h["epoch"] for h in history] == [
        1,
        2,
    ]
    assert [(r["layer"], r["params"]) for r in layers] == [("features.1.linear", 2048), ("classifier", 320)]
    Store(path=None).put(row, history, layers)  # the row validates against the schema


def test_runner_prune_row_counts_are_exact():
    exp = BASE.replace(strategy="global_weight", compression=4, seed=1)
    row, history, layers = run(exp)
    total = 64 * 32 + 32 + 32 * 10 + 10
    assert row["method"] == "prune" and row["params"] == total
    assert row["params_nonzero"] == math.floor(total / 4 + 0.5)  # the prune engine hits the ratio exactly
    assert row["compression_ratio"] == pytest.approx(4.0, abs=4.0 / total * 4)
    assert sum(r["nonzero"] for r in layers) == row["params_nonzero"] - 32 - 10  # weights; biases kept
    assert [h["stage"] for h in history] == ["finetune"] and row["latency_ms_p50"] is None
    assert row["latency_runtime"] is None and row["baseline_top1"] == run(BASE)[0]["top1"]


def test_grid_aliases_and_dotted_paths_agree():
    by_alias = expand(BASE, strategy=["random", "global_weight"], compression=[2, 4], seed=[0, 1])
    by_path = expand(
        BASE,
        **{"prune.strategy": ["random", "global_weight"], "prune.compression": [2.0, 4.0], "seed": [0, 1]},
    )
    assert [e.run_id for e in by_alias] == [e.run_id for e in by_path] and len(by_alias) == 8
    assert len({e.run_id for e in by_alias}) == 8
    assert expand([BASE, BASE], seed=[0, 0])[0] == BASE  # duplicates collapse
    assert [
        e.pipeline.epochs
        for e in expand(
            BASE.replace(
                strategy="random", compression=2, quantization="qat", order="PQ", stage_epochs=[1, 1]
            ),
            stage_epochs=[1, 2],
        )
    ] == [(1, 2)]


def test_bad_grids_are_rejected_before_anything_runs(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(ValueError, match=r"Experiment has no field 'prune\.ratio'"):
        sweep(BASE, store=store, progress=False, strategy=["random"], **{"prune.ratio": [2]})
    with pytest.raises(
        ValueError,
        match=r"^Experiment\.prune\.compression=0\.5: must be >= 1 \(grid point "
        r"\{'strategy': 'random', 'compression': 0\.5\}\)",
    ):
        sweep(BASE, store=store, progress=False, strategy=["random"], compression=[2, 0.5])
    with pytest.raises(ValueError, match=r"sweep grid 'seed' has no values"):
        sweep(BASE, store=store, progress=False, seed=[])
    with pytest.raises(ValueError, match=r"sets \['prune\.strategy'\] twice"):
        sweep(BASE, store=store, progress=False, strategy=["random"], **{"prune.strategy": ["random"]})
    assert not tmp_path.joinpath("runs").exists()


def test_sweep_runs_then_resumes_and_reruns_instantly(tmp_path):
    store = Store(tmp_path)
    grid = {"strategy": ["random", "global_weight"], "compression": [2, 4], "seed": [0, 1]}

    class Interrupted(InProcessExecutor):
        """Stops the sweep (like Ctrl-C or a killed kernel) after three runs have finished."""

        def map_unordered(self, fn, items, *args):
            for i, out in enumerate(super().map_unordered(fn, items, *args)):
                if i == 3:
                    raise KeyboardInterrupt
                yield out

    with pytest.raises(KeyboardInterrupt):
        sweep(BASE, Interrupted(), store=store, progress=False, **grid)
    assert len(store.runs()) == 3
    first = sweep(BASE, store=store, progress=False, **grid)
    assert (first.ran, first.skipped, first.failed) == (5, 3, 0)
    runs = first.runs
    assert runs["run_id"].tolist() == [e.run_id for e in expand(BASE, **grid)]
    assert (runs["status"] == "ok").all() and runs[
        ["strategy", "compression", "seed"]
    ].drop_duplicates().shape[0] == 8
    assert runs["compression_ratio"].round(1).tolist() == [2.0, 2.0, 4.0, 4.0] * 2
    assert set(first.history["run_id"]) == set(runs["run_id"]) and len(first.layers) == 16

    class Untouchable(InProcessExecutor):
        def start(self):
            raise AssertionError("a finished sweep must not start its executor")

    again = sv.sweep(
        BASE, Untouchable(), store=store, progress=False, **grid
    )  # the package name is callable too
    assert (again.ran, again.skipped) == (0, 8)  # nothing ran (timing: benchmarks/bench_sweep.py)
    assert again.runs["finished_at"].tolist() == runs["finished_at"].tolist()
    summary = first.summary(metrics=["top1", "compression_ratio"])
    assert summary["n"].tolist() == [2, 2, 2, 2]
    g = runs[(runs["strategy"] == "random") & (runs["compression"] == 4.0)]["top1"]
    row = summary[(summary["strategy"] == "random") & (summary["compression"] == 4.0)].iloc[0]
    assert row["top1_mean"] == pytest.approx(g.mean()) and row["top1_std"] == pytest.approx(g.std(ddof=1))


def test_failed_runs_are_recorded_the_sweep_continues_and_they_are_retried(tmp_path):
    from shrinkviz.models import create_model, register_model

    calls = {"n": 0}

    def flaky(input_shape, num_classes, **kw):  # fails on its first build, works after
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("flaky builder: transient failure")
        return create_model("tiny_mlp", input_shape, num_classes)

    register_model("flaky_mlp", flaky, overwrite=True)
    store = Store(tmp_path)
    bad = BASE.replace(model="mnistnet")  # valid config, but MnistNet cannot take 8x8 digits
    flaky_exp = BASE.replace(model="flaky_mlp")
    with pytest.raises(ValueError, match=r"model 'mnistnet' cannot take digits's input \(1, 8, 8\)"):
        sweep([bad, BASE], store=store, progress=False)  # preflight refuses it before anything runs
    assert len(store) == 0
    # without the preflight, a run that raises is stored as failed and the sweep goes on
    res = sweep([bad, flaky_exp, BASE], store=store, progress=False, check=False)
    assert (res.ran, res.failed) == (3, 2)
    runs = res.runs.set_index("run_id")
    assert runs.loc[BASE.run_id, "status"] == "ok"
    assert runs.loc[bad.run_id, "status"] == "failed" and runs.loc[bad.run_id, "error"].startswith(
        "ValueError: mnistnet cannot take inputs of shape (1, 8, 8)"
    )
    assert len(runs.loc[bad.run_id, "error"]) <= 4000 and "Traceback" in runs.loc[bad.run_id, "error"]
    assert "RuntimeError: flaky builder: transient failure" in runs.loc[flaky_exp.run_id, "error"]
    assert math.isnan(runs.loc[bad.run_id, "top1"]) and runs.loc[bad.run_id, "method"] == "baseline"
    assert res.failures["run_id"].tolist() == [bad.run_id, flaky_exp.run_id]
    retry = sweep([bad, flaky_exp, BASE], store=store, progress=False, check=False)
    assert (retry.ran, retry.skipped, retry.failed) == (2, 1, 1)
    assert store.status(flaky_exp.run_id) == "ok" and store.status(bad.run_id) == "failed"


def test_unreachable_dask_scheduler_is_a_clear_error_and_stores_nothing(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(
        ConnectionError,
        match=r"cannot reach the Dask scheduler at 'tcp://127\.0\.0\.1:9' within "
        r"1 s .*Nothing was run",
    ):
        sweep(
            BASE,
            DaskExecutor(address="tcp://127.0.0.1:9", connect_timeout=1),
            store=store,
            progress=False,
            seed=[0, 1],
        )
    assert not tmp_path.joinpath("runs").exists()
    with pytest.raises(ValueError, match="unknown executor 'spark'"):
        sweep(BASE, "spark", store=store, progress=False, seed=[5])


def test_sweep_on_a_local_dask_cluster_matches_in_process(tmp_path, monkeypatch):
    import os

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    grid = {"strategy": ["random", "global_weight"], "compression": [2, 4]}
    base = BASE.replace(latency={"runtimes": ["eager"], "rounds": 2, "min_time_s": 0.01})
    local = sweep(base, store=Store(tmp_path / "local"), progress=False, **grid)
    assert local.latency_sitting == ""  # one run at a time: each timed itself
    environ = dict(os.environ)
    with DaskExecutor(n_workers=2, processes=True) as ex:
        dask = sweep(base, ex, store=Store(tmp_path / "dask"), progress=False, **grid)
        assert dict(os.environ) == environ  # Dask's pre-spawn variables do not leak into this process
        # workers keep glibc's malloc defaults (Dask's trim threshold made training steps 1.7x slower)
        trim = ex.client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_", "unset"))
        assert sorted(trim.values()) == ["unset", "unset"]

        def quiet_settings():
            import dask.config

            from shrinkviz.experiments.executors import QUIET_WORKER_CONFIG

            return {key: dask.config.get(key) for key in QUIET_WORKER_CONFIG}

        # no dashboard, so no stack sampler nor frequent monitors taking the workers' CPU; this process's
        # config is left as it was
        assert list(ex.client.run(quiet_settings).values()) == [QUIET_WORKER_CONFIG] * 2
        assert quiet_settings()["distributed.worker.profile.enabled"] is True
        assert quiet_settings()["distributed.admin.tick.interval"] == "20ms"
        workers = ex.client.scheduler_info()["workers"]
        assert len(workers) == 2
    assert (dask.ran, dask.failed) == (4, 0)
    # two runs trained at once: none was timed while the other trained, all four in one sitting after
    timed = dask.store.latency()
    assert dask.latency_sitting.startswith("remeasure-") and set(timed["sitting"]) == {dask.latency_sitting}
    assert sorted(timed["run_id"].unique()) == sorted(dask.ran_ids)
    assert dask.runs["latency_vs_baseline"].notna().all() and dask.runs["latency_ms_p50"].gt(0).all()
    a, b = local.runs, dask.runs
    assert a["run_id"].tolist() == b["run_id"].tolist()
    for col in ("params_nonzero", "macs_nonzero", "compression_ratio", "size_bytes_raw"):
        assert a[col].tolist() == b[col].tolist(), col
    assert (b["top1"] - a["top1"]).abs().max() <= 2 / 128  # same seeds; thread counts may flip a prediction


def test_dask_executor_takes_items_only_as_slots_free_up():
    pulled = []

    def items():
        for i in range(6):
            pulled.append(i)
            yield i

    with DaskExecutor(n_workers=1, processes=False) as ex:  # one thread worker: one task slot
        stream = ex.map_unordered(abs, items())
        first = next(stream)
        assert ex.slots() == 1 and pulled == [0, 1]  # the first run, then the next as its slot freed
        rest = list(stream)
    assert first == (0, 0, None) and sorted(r for _, r, _ in rest) == [1, 2, 3, 4, 5] and len(pulled) == 6
    with pytest.raises(ValueError, match=r"DaskExecutor.window=0: must be a whole number >= 1"):
        DaskExecutor(window=0)


def test_a_run_leaves_its_latency_for_later_only_when_its_model_is_stored(monkeypatch):
    from shrinkviz.experiments import runner

    exp = BASE.replace(latency={"runtimes": ["eager"], "rounds": 2, "min_time_s": 0.01})
    extras: dict = {}
    row, _, _ = run(exp, extras=extras, latency=False)
    assert extras["latency_deferred"] and extras["artefact"] and extras["latency"] == []
    assert row["latency_ms_p50"] is None and row["top1"] is not None
    monkeypatch.setattr(runner, "_artefact", lambda model: None)  # nothing to re-time later: timed now
    extras = {}
    row, _, _ = run(exp, extras=extras, latency=False)
    assert not extras["latency_deferred"] and row["latency_ms_p50"] > 0 and extras["latency"]


def test_time_split_attributes_each_part_of_a_run(tmp_path, monkeypatch):
    import time

    import shrinkviz.experiments.runner as runner_module
    import shrinkviz.loop.train as train_module

    pause = 0.15
    evaluate, measure = train_module.evaluate, runner_module._measure

    def slow_evaluate(*args, **kwargs):
        time.sleep(pause)
        return evaluate(*args, **kwargs)

    def slow_measure(*args, **kwargs):
        time.sleep(2 * pause)
        return measure(*args, **kwargs)

    pruned = BASE.replace(strategy="random", compression=2, **{"finetune.epochs": 2})
    sweep(pruned, store=tmp_path, progress=False)  # the baseline trained and cached before the timing
    monkeypatch.setattr(train_module, "evaluate", slow_evaluate)
    monkeypatch.setattr(runner_module, "_measure", slow_measure)
    runs = [BASE.replace(seed=1), pruned.replace(seed=1)]
    result = sweep(runs, "local", store=tmp_path, progress=False)  # in this process, where the patches are
    split = result.time_split().set_index("method")
    parts = ["train_s", "eval_s", "measure_s", "other_s"]
    assert (split[parts] >= 0).all().all()  # disjoint parts of the run's wall time
    prune = split.loc["prune"]
    assert prune.eval_s >= 2 * pause and prune.measure_s >= 2 * pause  # two validations, one measurement
    assert prune.eval_s < 3 * pause + 0.5 and prune.train_s > 0  # training time is not counted as evaluation
    baseline = split.loc["baseline"]  # the cached baseline's pretraining epochs are not the run's
    assert baseline.train_s == baseline.eval_s == 0 and baseline.measure_s >= 2 * pause
    epochs = result.history[lambda d: d["stage"] == "finetune"]
    assert (epochs["eval_s"] >= pause).all() and (epochs["eval_s"] < epochs["epoch_s"]).all()


def test_time_split_of_runs_stored_before_the_parts_existed(tmp_path):
    result = sweep(BASE.replace(strategy="random", compression=2), store=tmp_path, progress=False)
    record = result.store.get(result.run_ids[0])
    row = {k: v for k, v in record.row.items() if k != "measure_s"}
    history = [{k: v for k, v in h.items() if k != "eval_s"} for h in record.history]
    result.store.put(row, history, record.layers)  # as an older shrinkviz wrote it
    split = result.time_split().iloc[0]
    assert math.isnan(split.measure_s) and math.isnan(split.eval_s) and math.isnan(split.train_s)
    assert split.duration_s == row["duration_s"]

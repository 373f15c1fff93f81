"""The results store: schema-validated rows, atomic files (kill -9), concurrent writers, corrupt entries."""

from __future__ import annotations

import inspect
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shrinkviz.experiments.schema import HISTORY_COLUMNS, LAYER_COLUMNS, RUN_COLUMNS
from shrinkviz.experiments.store import SchemaError, Store


def make_row(run_id, top1=0.5, status="ok"):
    row = {
        "run_id": run_id,
        "status": status,
        "error": "" if status == "ok" else "RuntimeError: boom",
        "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-01T00:00:01+00:00",
        "duration_s": 1.0,
        "shrinkviz_version": "0.1.0",
        "torch_version": "2.13.0",
        "device": "cpu",
        "config_json": "{}",
        "dataset": "digits",
        "model": "tiny_mlp",
        "baseline_recipe": "default",
        "baseline_seed": 0,
        "method": "prune",
        "strategy": "random",
        "compression": 4.0,
        "finetune": "adam_fast",
        "order": "",
        "quantization": "none",
        "seed": 0,
    }
    if status == "ok":
        row.update(
            {
                "top1": top1,
                "top5": 0.9,
                "val_top1": 0.6,
                "baseline_top1": 0.7,
                "params": 2410,
                "params_nonzero": 700,
                "compression_ratio": 3.44,
                "macs": 2368,
                "macs_nonzero": 600,
                "speedup_theoretical": 3.95,
                "size_bytes_raw": 12000,
                "size_bytes_gzip": 5000,
                "latency_ms_p50": 0.05,
                "latency_ms_p90": 0.07,
                "latency_runtime": "eager",
                "latency_threads": 1,
                "latency_batch": 1,
                "cpu_model": "test cpu",
            }
        )
    return row


ROW_CODE = inspect.getsource(make_row)  # the subprocesses below define the same helper

HISTORY = [
    {
        "stage": "finetune",
        "epoch": e,
        "lr": 1e-3,
        "train_loss": 1.0 / e,
        "task_loss": 1.0 / e,
        "kd_loss": math.nan,
        "train_top1": 0.5,
        "val_loss": 1.0,
        "val_top1": 0.5 + e / 10,
        "val_top5": 0.9,
        "epoch_s": 0.1,
        "sparsity": 0.75,
    }
    for e in (1, 2)
]
LAYERS = [
    {
        "layer": "features.1.linear",
        "kind": "Linear",
        "shape": "32x64",
        "params": 2048,
        "nonzero": 512,
        "sparsity": 0.75,
        "macs": 2048,
        "macs_nonzero": 512,
    }
]


def test_empty_store_has_the_schema_columns(tmp_path):
    store = Store(tmp_path / "nowhere")
    assert list(store.runs().columns) == list(RUN_COLUMNS)
    assert list(store.history().columns) == list(HISTORY_COLUMNS)
    assert list(store.layers().columns) == list(LAYER_COLUMNS)
    assert len(store) == 0 and not store.has("abc") and store.problems == []
    assert not (tmp_path / "nowhere").exists()  # reading creates nothing


def test_default_location_is_under_the_cache_root(isolated_cache):
    assert Store().path == Path(isolated_cache) / "results"


def test_round_trip_tidy_frames(tmp_path):
    store = Store(tmp_path)
    path = store.put({**make_row("r1", 0.8), "nonzero_activations": 123.5}, HISTORY, pd.DataFrame(LAYERS))
    store.put(make_row("r2", 0.6), HISTORY[:1], [])
    assert path == tmp_path / "runs" / "r1.json" and json.loads(path.read_text())["schema_version"] == 2
    runs = store.runs()
    assert list(runs.columns) == [*RUN_COLUMNS, "nonzero_activations"]
    assert runs["run_id"].tolist() == ["r1", "r2"] and runs["top1"].tolist() == [0.8, 0.6]
    assert str(runs["params"].dtype) == "Int64" and runs["params"].tolist() == [2410, 2410]
    assert str(runs["top1"].dtype) == "float64" and str(runs["strategy"].dtype) == "str"
    assert runs["nonzero_activations"].iloc[0] == 123.5 and math.isnan(runs["nonzero_activations"].iloc[1])
    hist = store.history()
    assert list(hist.columns) == list(HISTORY_COLUMNS)
    assert hist["run_id"].tolist() == ["r1", "r1", "r2"] and hist["epoch"].tolist() == [1, 2, 1]
    assert math.isnan(hist["kd_loss"].iloc[0]) and hist["val_top1"].tolist() == [0.6, 0.7, 0.6]
    layers = store.layers(["r1"])
    assert layers.to_dict("records") == [{"run_id": "r1", **LAYERS[0]}]
    assert store.runs(["r2", "r1"])["run_id"].tolist() == ["r2", "r1"]
    rec = store.get("r1")
    assert rec.row["top1"] == 0.8 and rec.history[1]["epoch"] == 2 and rec.layers[0]["nonzero"] == 512
    with pytest.raises(KeyError, match="'nope' is not in Store"):
        store.get("nope")


def test_numpy_scalars_are_accepted_and_stored_plain(tmp_path):
    store = Store(tmp_path)
    row = {**make_row("np"), "top1": np.float32(0.25), "params": np.int64(2410), "extra_flag": np.bool_(True)}
    store.put(row)
    got = store.get("np").row
    assert (got["top1"], got["params"], got["extra_flag"]) == (0.25, 2410, True)
    assert type(got["params"]) is int


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"top1": "high"}, r"runs\.top1='high': expected float"),
        ({"params": 1.5}, r"runs\.params=1\.5: expected int"),
        ({"params": True}, r"runs\.params=True: expected int"),
        ({"strategy": 3}, r"runs\.strategy=3: expected str"),
        ({"extra": [1, 2]}, r"runs\.extra: unsupported value type list"),
        ({"extra": {"a": 1}}, r"runs\.extra: unsupported value type dict"),
        ({"extra": np.zeros(3)}, r"runs\.extra: unsupported value type ndarray"),
        ({"status": "done"}, r"runs\.status='done': allowed values: ok, failed"),
        ({"error": "oops"}, r"runs\.error: a failed run needs its error text and an ok run must have none"),
        ({"run_id": "../evil"}, r"runs\.run_id='\.\./evil'"),
    ],
)
def test_bad_rows_are_rejected_and_nothing_is_written(tmp_path, row, message):
    store = Store(tmp_path)
    with pytest.raises(SchemaError, match=message):
        store.put({**make_row("bad"), **row})
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_missing_columns_and_bad_tables_are_rejected(tmp_path):
    import torch

    store = Store(tmp_path)
    row = make_row("m")
    del row["latency_ms_p50"]
    with pytest.raises(SchemaError, match=r"runs: missing column\(s\) \['latency_ms_p50'\]"):
        store.put(row)
    with pytest.raises(SchemaError, match=r"runs\.extra: unsupported value type Tensor"):
        store.put({**make_row("t"), "extra": torch.tensor(1.0)})
    with pytest.raises(SchemaError, match=r"history\.epoch='one': expected int"):
        store.put(make_row("h"), [{**HISTORY[0], "epoch": "one"}])
    with pytest.raises(SchemaError, match=r"layers\.run_id='other' does not match the run 'h'"):
        store.put(make_row("h"), [], [{**LAYERS[0], "run_id": "other"}])
    assert store.runs().empty


def test_failed_runs_need_only_identity_and_are_not_done(tmp_path):
    store = Store(tmp_path)
    store.put(make_row("f", status="failed"))
    assert store.status("f") == "failed" and not store.has("f") and "f" not in store
    runs = store.runs()
    assert runs["status"].tolist() == ["failed"] and runs["error"].tolist() == ["RuntimeError: boom"]
    assert math.isnan(runs["top1"].iloc[0]) and runs["params"].isna().all()
    store.put(make_row("f"))  # a retry that succeeds replaces the failed record
    assert store.has("f") and len(store.runs()) == 1


def test_corrupt_entries_are_reported_and_treated_as_missing(tmp_path):
    store = Store(tmp_path)
    store.put(make_row("good"))
    store.put(make_row("trunc"))
    trunc = tmp_path / "runs" / "trunc.json"
    trunc.write_text(trunc.read_text()[:50])
    (tmp_path / "runs" / "wrongname.json").write_text(
        json.dumps(json.loads((tmp_path / "runs" / "good.json").read_text()))
    )
    with pytest.warns(RuntimeWarning) as caught:
        runs = store.runs()
    assert runs["run_id"].tolist() == ["good"]
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2 and str(trunc) in messages[0] and "JSONDecodeError" in messages[0]
    assert "wrongname.json" in messages[1] and "not the one its name says" in messages[1]
    assert len(store.problems) == 2 and store.problems[0].startswith(str(trunc))
    assert not store.has("trunc")
    store.put(make_row("trunc"))  # re-running the run repairs the entry
    (tmp_path / "runs" / "wrongname.json").unlink()
    assert store.has("trunc") and sorted(store.runs()["run_id"]) == ["good", "trunc"] and store.problems == []


KILL_CODE = ROW_CODE + textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import shrinkviz.core.io
    from shrinkviz.experiments.store import Store
    store = Store(sys.argv[1])
    store.put(make_row("before"))
    real_replace = shrinkviz.core.io.os.replace
    def stalled_replace(src, dst):  # the bytes are in the temp file: hold before publishing them
        Path(sys.argv[1], "ready").write_text(str(src))
        time.sleep(60)
        real_replace(src, dst)
    shrinkviz.core.io.os.replace = stalled_replace
    store.put(make_row("during"), [{"stage": "finetune", "epoch": i, "train_loss": 0.1} for i in range(20000)])
""")


def test_kill_9_mid_write_leaves_no_half_written_run(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", KILL_CODE, str(tmp_path)])
    ready = tmp_path / "ready"
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert ready.exists(), "writer never reached the rename"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    tmp_file = Path(ready.read_text())
    assert tmp_file.exists() and tmp_file.stat().st_size > 100_000  # the orphan temp file, fully hidden
    store = Store(tmp_path)
    assert store.runs()["run_id"].tolist() == ["before"]
    assert store.status("during") is None and store.problems == []


LOOP_CODE = ROW_CODE + textwrap.dedent("""
    import sys
    from shrinkviz.experiments.store import Store
    store = Store(sys.argv[1])
    big = [{"stage": "finetune", "epoch": i, "train_loss": 0.1, "val_top1": 0.5} for i in range(3000)]
    i = 0
    while True:
        store.put(make_row(f"loop{i % 5}", top1=i / 1e6), big)
        i += 1
""")


def test_kill_9_during_a_write_loop_never_corrupts(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", LOOP_CODE, str(tmp_path)])
    deadline = time.monotonic() + 60
    while len(list((tmp_path / "runs").glob("loop*.json")) if (tmp_path / "runs").exists() else []) < 5:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    store = Store(tmp_path)
    runs = store.runs()
    assert sorted(runs["run_id"]) == [f"loop{i}" for i in range(5)] and store.problems == []
    assert (store.history()["run_id"].value_counts() == 3000).all()


WRITER_CODE = ROW_CODE + textwrap.dedent("""
    import sys
    from shrinkviz.experiments.store import Store
    store = Store(sys.argv[1])
    for i in range(int(sys.argv[3])):
        store.put(make_row(f"w{sys.argv[2]}-{i}", top1=i / 100), [{"stage": "finetune", "epoch": 1}])
        store.put(make_row("shared", top1=float(sys.argv[2])))  # every writer also rewrites one run id
""")


def test_concurrent_writers_lose_nothing(tmp_path):
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER_CODE, str(tmp_path), str(w), "20"]) for w in range(3)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    store = Store(tmp_path)
    runs = store.runs()
    assert len(runs) == 3 * 20 + 1 and store.problems == []
    assert sorted(runs["run_id"]) == sorted(["shared"] + [f"w{w}-{i}" for w in range(3) for i in range(20)])
    assert runs.set_index("run_id").loc["shared", "top1"] in (0.0, 1.0, 2.0)
    assert len(store.history()) == 60
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]  # no temp files left


def test_a_source_checkout_caches_in_its_own_data_cache(monkeypatch):
    """Without SHRINKVIZ_CACHE a source checkout (pyproject.toml + data_cache/) keeps everything in data_cache/."""
    import shrinkviz
    from shrinkviz.core.io import CACHE_ENV, cache_root

    monkeypatch.delenv(CACHE_ENV, raising=False)
    checkout = Path(shrinkviz.__file__).resolve().parent.parent
    if not (checkout / "pyproject.toml").is_file():
        pytest.skip("shrinkviz is installed, not run from a source checkout")
    assert cache_root() == checkout / "data_cache"


def test_records_written_before_stage_epochs_and_correctness_existed_still_load(tmp_path):
    """Older rows get ``stage_epochs`` from their config and empty ``test_correct`` / ``design``."""
    store = Store(tmp_path)
    row = make_row("old", 0.8)
    row["method"], row["order"] = "pipeline", "PQD"
    row["config_json"] = json.dumps({"pipeline": {"order": "PQD", "epochs": [2, 4, 4]}})
    store.put(row)
    runs = store.runs()
    assert runs.loc[0, "stage_epochs"] == "2/4/4" and runs.loc[0, "test_correct"] == ""
    assert runs.loc[0, "design"] == ""

"""Faults injected into sweeps and the store: refused before work, nothing lost, nothing half-written."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from shrinkviz.core.layers import count_parameters
from shrinkviz.experiments import preflight as pf
from shrinkviz.experiments import runner
from shrinkviz.experiments.experiment import Experiment
from shrinkviz.experiments.leases import Leases
from shrinkviz.experiments.store import Store, StoreWriteError
from shrinkviz.experiments.sweep import PreflightError, sweep
from shrinkviz.loop.masks import prunable_parameters
from shrinkviz.models import create_model
from tests.test_store import make_row

BASE = Experiment(
    model="tiny_mlp",
    data={"name": "digits", "train": 128, "val": 32, "test": 64},
    baseline={"epochs": 1},
    finetune={"preset": "adam_fast", "epochs": 1},
    latency={"runtimes": []},
)


@pytest.fixture
def no_runs(monkeypatch):
    """Records every run started; a test asserting it stays empty proves nothing was trained."""
    started: list[str] = []
    real = runner.run

    def spy(exp, **kw):
        started.append(exp.run_id)
        return real(exp, **kw)

    monkeypatch.setattr(runner, "run", spy)
    return started


def _mount(path: Path, options: str) -> Path:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    return path


@pytest.fixture
def mounts(tmp_path):
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        mounted.append(_mount(tmp_path / name, options))
        return mounted[-1]

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", str(path)], check=False)


def _max_ratio(model: str, shape=(1, 8, 8)) -> float:
    net = create_model(model, input_shape=shape, num_classes=10)
    total, _ = count_parameters(net)
    prunable = sum(getattr(m, a).numel() for _, m, a in prunable_parameters(net))
    return total / (total - prunable)


# -- preflight: infeasible points --------------------------------------------------------------------
def test_infeasible_grid_points_are_refused_before_any_run(tmp_path, no_runs):
    store = Store(tmp_path / "store")
    with pytest.raises(PreflightError) as err:
        sweep(
            BASE,
            store=store,
            progress=False,
            strategy=["random", "global_weight"],
            compression=[2, 1e9],
            seed=[0, 1, 2],
        )
    text = str(err.value)
    assert "\n" not in text and "nothing was run" in text
    assert err.value.problems == [
        f"compression=1e+09 for tiny_mlp on digits: max reachable is x{_max_ratio('tiny_mlp'):.4g} (only 2,048 "
        "of 2,410 parameters are prunable). Fix: lower it (runs: 6)"
    ]
    assert no_runs == [] and len(store) == 0 and not store.path.exists()


def test_every_problem_is_reported_at_once_grouped(tmp_path, no_runs):
    bad_model = BASE.replace(model="mnistnet")  # cannot take 8x8 digits
    exps = [bad_model.replace(seed=s) for s in range(2)] + [BASE.replace(strategy="random", compression=1e6)]
    with pytest.raises(PreflightError) as err:
        sweep(exps + [BASE], store=tmp_path, progress=False)
    problems = err.value.problems
    assert len(problems) == 2 and problems[0].startswith(
        "model 'mnistnet' cannot take digits's input (1, 8, 8)"
    )
    assert problems[0].endswith("(runs: 2)") and problems[1].startswith("compression=1e+06 for tiny_mlp")
    assert no_runs == [] and len(Store(tmp_path)) == 0


def test_unregistered_names_get_a_did_you_mean(tmp_path, no_runs):
    from shrinkviz.techniques.prune import strategies

    strategies.register_strategy("my_random", strategies.STRATEGIES.get("random").score, overwrite=True)
    exp = BASE.replace(strategy="my_random", compression=2)
    strategies.STRATEGIES.unregister("my_random")  # gone by the time the sweep runs
    with pytest.raises(
        PreflightError, match=r"unknown pruning strategy 'my_random'; did you mean 'random'\?"
    ):
        sweep(exp, store=tmp_path, progress=False)
    assert no_runs == []


def test_models_are_built_once_per_model_and_shape():
    pf._model_info.cache_clear()
    grid = [
        BASE.replace(strategy="random", compression=1 + c / 2, seed=s) for c in range(10) for s in range(10)
    ]
    assert pf.check_experiments(grid) == []
    info = pf._model_info.cache_info()
    assert (info.misses, info.hits) == (1, 99)


# -- preflight: the store ----------------------------------------------------------------------------
def test_store_path_that_is_a_file_is_refused(tmp_path, no_runs):
    (tmp_path / "results").write_text("not a folder")
    with pytest.raises(PreflightError, match=r"store path .*results is a file, not a directory\. Fix: "):
        sweep(BASE, store=tmp_path / "results", progress=False)
    assert no_runs == [] and (tmp_path / "results").read_text() == "not a folder"


def test_read_only_store_is_refused_before_training(mounts, no_runs):
    ro = mounts("ro", "ro,size=1M")
    with pytest.raises(PreflightError, match=r"store .*ro is not writable \(Read-only file system\)\. Fix: "):
        sweep(BASE, store=ro, progress=False, seed=[0, 1, 2])
    assert no_runs == []


def test_store_without_room_is_refused_before_training(mounts, no_runs):
    small = mounts("small", "size=256k")
    with pytest.raises(PreflightError, match=r"has 0\.2 MiB free but 3 run\(s\) need about 0\.8 MiB"):
        sweep(BASE, store=small, progress=False, seed=[0, 1, 2])
    assert no_runs == []


def test_full_disk_fails_the_write_cleanly_and_keeps_what_is_stored(mounts):
    full = mounts("full", "size=64k")
    store = Store(full)
    store.put(make_row("kept", top1=0.5))
    before = (store.runs_dir / "kept.json").read_bytes()
    filler = full / "filler"
    with open(filler, "wb", buffering=0) as fh, pytest.raises(OSError):
        while True:
            fh.write(b"\0" * 4096)
    with pytest.raises(StoreWriteError) as err:
        store.put(make_row("new", top1=0.6), [{"stage": "finetune", "epoch": e} for e in range(200)])
    text = str(err.value)
    assert "\n" not in text and f"in {full}: the disk is full" in text and "nothing was half-written" in text
    assert sorted(p.name for p in store.runs_dir.iterdir()) == [
        "kept.json"
    ]  # no temp file, no partial record
    assert (store.runs_dir / "kept.json").read_bytes() == before and Store(full).has("kept")


# -- self-checking, self-cleaning store ----------------------------------------------------------------
def test_edited_record_is_reported_and_rerun(tmp_path):
    store = Store(tmp_path)
    first = sweep(BASE, store=store, progress=False)
    path = store.file(BASE.run_id)
    doc = json.loads(path.read_text())
    top1 = doc["row"]["top1"]
    text = path.read_text().replace(f'"top1":{top1!r}', f'"top1":{round(1 - top1, 4)!r}', 1)
    assert text != path.read_text()
    path.write_text(text)  # still valid JSON, one value changed
    fresh = Store(tmp_path)
    with pytest.warns(RuntimeWarning, match="checksum mismatch"):
        assert not fresh.has(BASE.run_id)
    assert fresh.problems == [
        f"{path}: SchemaError: checksum mismatch: the record was edited or damaged after it was written"
    ]
    again = sweep(BASE, store=fresh, progress=False)
    assert (first.ran, again.ran, again.skipped) == (1, 1, 0) and fresh.problems == []
    assert json.loads(path.read_text())["row"]["top1"] == top1  # recomputed: same deterministic run


def test_records_without_a_checksum_still_load(tmp_path):
    store = Store(tmp_path)
    store.put(make_row("old", top1=0.25))
    doc = json.loads(store.file("old").read_text())
    del doc["checksum"]
    store.file("old").write_text(json.dumps(doc))
    assert Store(tmp_path).get("old").row["top1"] == 0.25


def test_stale_temp_files_are_removed_on_open(tmp_path):
    store = Store(tmp_path)
    store.put(make_row("a"))
    old, fresh = store.runs_dir / ".a.json.dead.tmp", store.runs_dir / ".b.json.live.tmp"
    old.write_text("{half")
    fresh.write_text("{half")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    reopened = Store(tmp_path)
    assert reopened.cleaned == [old.name] and not old.exists() and fresh.exists()
    assert reopened.run_ids() == ["a"]


# -- leases ------------------------------------------------------------------------------------------
def _plant_lease(store: Store, run_id: str, host: str, pid: int, expires: float) -> None:
    store.runs_dir.mkdir(parents=True, exist_ok=True)
    lease = {"host": host, "pid": pid, "token": "other", "run_id": run_id, "expires": expires}
    store.leases.file(run_id).write_text(json.dumps(lease))


def test_a_lease_of_a_dead_process_on_this_host_is_free_at_once(tmp_path):
    store = Store(tmp_path)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    _plant_lease(store, "r1", socket.gethostname(), int(dead.stdout), time.time() + 3600)
    _plant_lease(store, "r2", "elsewhere", 1, time.time() + 3600)  # live on another host: respected
    _plant_lease(store, "r3", "elsewhere", 1, time.time() - 1)  # expired
    assert [store.leases.claim(r) for r in ("r1", "r2", "r3")] == [True, False, True]
    assert Store(tmp_path).cleaned == []  # r2 is valid, r1/r3 are now this process's: nothing stale
    store.leases.release_all()
    assert sorted(p.name for p in store.runs_dir.glob("*.lease")) == ["r2.lease"]


def test_sweep_waits_for_a_run_claimed_elsewhere_then_runs_it_when_the_lease_lapses(tmp_path):
    store = Store(tmp_path)
    holder = Leases(store.runs_dir, ttl=0.5)  # another sweep that claimed the run and then died
    assert holder.claim(BASE.run_id)
    res = sweep(BASE.replace(seed=0), store=tmp_path, progress=False, seed=[0, 1], poll_s=0.1)
    assert sorted(res.ran_ids) == sorted([BASE.run_id, BASE.replace(seed=1).run_id])
    assert Store(tmp_path).has(BASE.run_id)


SWEEPER = textwrap.dedent("""
    import json, sys
    from shrinkviz.experiments.sweep import sweep
    from shrinkviz.experiments.executors import DaskExecutor
    from tests.test_faults import BASE
    ex = DaskExecutor(n_workers=1, processes=False) if sys.argv[2] == "dask" else "auto"
    res = sweep(BASE, ex, store=sys.argv[1], progress=False, seed=[0, 1, 2, 3, 4, 5], poll_s=0.1)
    print(json.dumps({"ran": res.ran_ids, "elsewhere": res.elsewhere, "skipped": res.skipped}))
""")


@pytest.mark.parametrize("executor", ["local", "dask"])
def test_two_concurrent_sweeps_compute_each_run_once(tmp_path, executor):
    # on Dask too: the executor takes (and claims) a run only when a task slot frees up
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "OMP_NUM_THREADS": "1"}
    sweep(BASE, store=tmp_path / "warm", progress=False)  # trains the shared baseline once, first
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SWEEPER, str(tmp_path / "store"), executor],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    out = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    ran = [set(o["ran"]) for o in out]
    grid = {BASE.replace(seed=s).run_id for s in range(6)}
    assert ran[0] | ran[1] == grid and not ran[0] & ran[1]  # every run computed, none twice
    for o, mine in zip(out, ran, strict=True):
        assert len(mine) + o["elsewhere"] + o["skipped"] == 6
    store = Store(tmp_path / "store")
    assert set(store.run_ids()) == grid and store.problems == []
    assert not list(store.runs_dir.glob("*.lease")) and not list(store.runs_dir.glob(".*.tmp"))


def test_demo_checks_the_store_before_training_its_baseline(tmp_path, capsys, monkeypatch):
    from shrinkviz import cli

    trained = []
    monkeypatch.setattr(runner, "load_baseline", lambda *a, **k: trained.append(a))
    (tmp_path / "store").write_text("a file")
    assert cli.main(["demo", "--profile", "smoke", "--store", str(tmp_path / "store"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("shrinkviz: error: preflight found") and "is a file, not a directory" in err
    assert trained == []


def test_leases_are_renewed_while_computing_and_released_after(tmp_path):
    from shrinkviz.experiments.leases import Renewer

    holder, other = Leases(tmp_path, ttl=2.0), Leases(tmp_path, ttl=2.0)
    with Renewer(holder):
        assert holder.claim("run")
        first = holder.read("run")["expires"]
        time.sleep(3.0)  # longer than the ttl: only renewal keeps the lease
        assert not other.claim("run") and holder.read("run")["expires"] > first
    assert other.claim("run")  # released when the renewer stops


def test_a_dataset_that_does_not_verify_is_refused_before_any_run(no_runs, tmp_path):
    import shutil

    import torch

    from shrinkviz.core.io import cache_root
    from shrinkviz.data import datasets, sources
    from shrinkviz.data.formats import write_idx

    folder = sources.dataset_dir("mnist", cache_root())
    try:
        for split, n in (("train", 20), ("t10k", 10)):
            write_idx(folder / f"{split}-images-idx3-ubyte.gz", torch.zeros(n, 28, 28, dtype=torch.uint8))
            write_idx(folder / f"{split}-labels-idx1-ubyte.gz", torch.zeros(n, dtype=torch.uint8))
        datasets._load_cached.cache_clear()
        exp = BASE.replace(dataset="mnist", model="mnistnet")
        with pytest.raises(PreflightError) as err:
            sweep(exp, store=tmp_path, progress=False)
        assert len(err.value.problems) == 1 and "dataset 'mnist' does not load: " in err.value.problems[0]
        assert "train-images-idx3-ubyte.gz: not the official mnist file" in err.value.problems[0]
        assert no_runs == []
    finally:
        shutil.rmtree(folder)
        datasets._load_cached.cache_clear()

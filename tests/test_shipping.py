"""User registrations reach every executor: in-process, a Dask LocalCluster, and a scheduler + worker
started separately with the Dask CLI; a worker that lacks a registration says which and how to ship it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from shrinkviz import cli
from shrinkviz.experiments.executors import DaskExecutor
from shrinkviz.experiments.experiment import Experiment
from shrinkviz.experiments.shipping import Shipment, load_plugins
from shrinkviz.experiments.store import Store
from shrinkviz.experiments.sweep import sweep
from shrinkviz.techniques.prune.strategies import STRATEGIES

NOTEBOOK_CELL = textwrap.dedent(
    """
    import shrinkviz as sv

    @sv.register_strategy("cell_square", scope="global", overwrite=True)
    def cell_square(module, name, weight, ctx):
        return weight.detach() ** 2
    """
)


@pytest.fixture
def notebook_strategy():
    """Registers a strategy the way a notebook cell does: code whose module is ``__main__``."""
    with STRATEGIES.scoped():
        exec(compile(NOTEBOOK_CELL, "<notebook cell>", "exec"), {"__name__": "__main__"})
        assert STRATEGIES.get("cell_square").score.__module__ == "__main__"
        yield "cell_square"


def _base(strategy: str) -> Experiment:
    return Experiment(
        model="tiny_mlp",
        data={"name": "digits", "train": 256},
        baseline={"epochs": 1},
        prune={"strategy": strategy, "compression": 2},
        latency={"runtimes": []},
    )


def _statuses(res) -> list[tuple[str, str]]:
    return res.runs[["strategy", "status"]].values.tolist()


def test_shipment_captures_user_entries_only(notebook_strategy):
    found = [(kind, name, module) for kind, name, module, _ in Shipment.capture().entries]
    assert ("pruning strategy", "cell_square", "__main__") in found
    assert not any(module.startswith("shrinkviz") for _, _, module in found)  # built-ins stay behind
    assert not any(name == "global_weight" for _, name, _ in found)


def test_notebook_strategy_runs_on_a_local_cluster(notebook_strategy, tmp_path):
    with DaskExecutor(n_workers=1, processes=True) as ex:
        res = sweep(_base(notebook_strategy), ex, store=Store(tmp_path), progress=False, seed=[0])
    assert _statuses(res) == [["cell_square", "ok"]]
    assert res.runs["compression_ratio"].round(3).tolist() == [2.0]


@pytest.fixture(scope="module")
def cli_cluster(tmp_path_factory):
    """``dask scheduler`` and ``dask worker`` as subprocesses on 127.0.0.1 (no shrinkviz plugin path)."""
    folder = tmp_path_factory.mktemp("dask_cli")
    scheduler_file = folder / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(scheduler_file),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "distributed.cli.dask_worker",
                    address,
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    "1",
                    "--nworkers",
                    "1",
                    "--no-dashboard",
                    "--local-directory",
                    str(folder),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=folder,
            )
        )
        ex = DaskExecutor(address=address, connect_timeout=30)
        ex.start()
        ex.client.wait_for_workers(1, timeout=60)
        yield ex
        ex.close()
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_notebook_strategy_runs_on_a_cli_started_scheduler_and_worker(
    notebook_strategy, cli_cluster, tmp_path
):
    res = sweep(_base(notebook_strategy), cli_cluster, store=Store(tmp_path), progress=False, seed=[0])
    assert _statuses(res) == [["cell_square", "ok"]]


def _plugin_module(folder: Path, name: str) -> str:
    (folder / f"{name}.py").write_text(
        textwrap.dedent(
            f"""
            import shrinkviz as sv

            @sv.register_strategy("{name}_abs", scope="layer", overwrite=True)
            def score(module, name, weight, ctx):
                return weight.detach().abs()
            """
        )
    )
    return name


def test_a_worker_without_the_plugin_module_names_it_and_the_fix(cli_cluster, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    with STRATEGIES.scoped():
        module = _plugin_module(tmp_path, "own_methods_absent")
        load_plugins([module])  # importable here, not on the worker
        res = sweep(
            _base(f"{module}_abs"), cli_cluster, store=Store(tmp_path / "s"), progress=False, seed=[0]
        )
    assert _statuses(res) == [[f"{module}_abs", "failed"]]
    error = res.runs["error"].iloc[0].splitlines()[0]
    assert f"'{module}'" in error and "plugins=" in error and "--plugin" in error and "PYTHONPATH" in error


def test_cli_and_config_plugins_are_imported_before_names_are_checked(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(tmp_path))
    with STRATEGIES.scoped():
        by_flag, by_config = _plugin_module(tmp_path, "own_flag_mod"), _plugin_module(tmp_path, "own_cfg_mod")
        config = tmp_path / "sweep.yml"
        config.write_text(
            "plugins: [own_cfg_mod]\n"
            "base: {model: tiny_mlp, data: {name: digits, train: 256}, baseline: {epochs: 1},"
            " latency: {runtimes: []}, prune: {strategy: own_cfg_mod_abs, compression: 2}}\n"
            "grid: {strategy: [own_flag_mod_abs, own_cfg_mod_abs]}\n"
        )
        assert (
            cli.main(["sweep", str(config), "--store", str(tmp_path / "s"), "--quiet", "--plugin", by_flag])
            == 0
        )
    assert "2 runs: 2 ran (0 failed)" in capsys.readouterr().out
    assert by_config in sys.modules


def test_unimportable_plugin_is_one_line_error_before_any_run(tmp_path):
    with pytest.raises(ValueError, match=r"plugin 'no_such_mod_xyz' cannot be imported.*PYTHONPATH") as info:
        sweep(
            _base("global_weight"),
            store=Store(tmp_path),
            progress=False,
            plugins=["no_such_mod_xyz"],
            seed=[0],
        )
    assert "\n" not in str(info.value) and not list(tmp_path.glob("**/*.json"))

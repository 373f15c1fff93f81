"""Hand-made results tables for the viz tests, named after schema.RUN_COLUMNS / LAYER_COLUMNS."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from shrinkviz.experiments.schema import LAYER_COLUMNS, RUN_COLUMNS

# strategy -> compression -> top1 per seed (seed = position)
TOP1 = {
    "global_weight": {2.0: [0.90, 0.92, 0.91], 4.0: [0.88, 0.89, 0.87], 8.0: [0.80, 0.84, 0.82]},
    "random": {2.0: [0.85, 0.87], 4.0: [0.80, 0.78], 8.0: [0.60, 0.64]},
}
# achieved compression = target * factor[seed]
RATIO_FACTOR = [1.0, 1.05, 0.95]
LAYERS = [
    ("conv1", "Conv2d", "16x3x3x3", 432),
    ("layer1.conv", "Conv2d", "16x16x3x3", 2304),
    ("fc", "Linear", "10x64", 640),
]


def run_id(strategy: str, compression: float, seed: int) -> str:
    return f"{strategy[:2]}-{compression:g}-{seed}"


def make_run(strategy: str, compression: float, seed: int, top1: float, status: str = "ok") -> dict:
    ratio = compression * RATIO_FACTOR[seed]
    return {
        "run_id": run_id(strategy, compression, seed),
        "status": status,
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
        "params": 270_000,
        "params_nonzero": int(270_000 / ratio),
        "compression_ratio": ratio,
        "speedup_theoretical": ratio * 0.8,
        "size_bytes_raw": int(1_100_000 / ratio) + 1000 * seed,
        "size_bytes_gzip": int(1_000_000 / ratio) + 100 * seed,
        "latency_ms_p50": 2.0 + 0.1 * seed - 0.05 * compression,
        "latency_ms_p90": 2.5 + 0.1 * seed,
        "latency_runtime": "eager",
    }


@pytest.fixture
def runs() -> pd.DataFrame:
    """Two strategies x 3 compressions (3 seeds for global_weight, 2 for random) + one failed run."""
    rows = [
        make_run(s, c, seed, t)
        for s, by_c in TOP1.items()
        for c, tops in by_c.items()
        for seed, t in enumerate(tops)
    ]
    rows.append(make_run("global_weight", 16.0, 0, math.nan, status="failed"))
    df = pd.DataFrame(rows)
    assert set(df.columns) <= set(RUN_COLUMNS)
    return df


@pytest.fixture
def layers(runs: pd.DataFrame) -> pd.DataFrame:
    """Three layers per run; sparsity of layer i = 1 - 1/compression - 0.01 * (i + seed), exact counts."""
    rows = []
    for r in runs.itertuples():
        for i, (name, kind, shape, params) in enumerate(LAYERS):
            nonzero = round(params * (1 / r.compression + 0.01 * (i + r.seed)))
            rows.append(
                {
                    "run_id": r.run_id,
                    "layer": name,
                    "kind": kind,
                    "shape": shape,
                    "params": params,
                    "nonzero": nonzero,
                    "sparsity": 1 - nonzero / params,
                    "macs": params * 64,
                    "macs_nonzero": nonzero * 64,
                }
            )
    df = pd.DataFrame(rows)
    assert set(df.columns) == set(LAYER_COLUMNS)
    return df


@pytest.fixture
def ablation_runs() -> pd.DataFrame:
    """Baseline, the three single techniques and two pipeline orders, 2 seeds each, one failed PQD run."""
    spec = {  # (method, order) -> (top1 per seed, latency per seed)
        ("baseline", ""): ([0.92, 0.92], [4.0, 4.0]),
        ("prune", ""): ([0.90, 0.88], [3.0, 3.2]),
        ("quant", ""): ([0.91, 0.89], [1.0, 1.2]),
        ("distill", ""): ([0.93, 0.91], [4.0, 4.2]),
        ("pipeline", "PQD"): ([0.89, 0.87], [0.8, 0.9]),
        ("pipeline", "QPD"): ([0.86, 0.82], [0.9, 0.7]),
    }
    rows = []
    for (method, order), (tops, lats) in spec.items():
        for seed, (t, lat) in enumerate(zip(tops, lats, strict=True)):
            rows.append(
                {
                    "run_id": f"{method}-{order}-{seed}",
                    "status": "ok",
                    "method": method,
                    "order": order,
                    "strategy": "global_weight" if method in ("prune", "pipeline") else "",
                    "compression": 4.0 if method in ("prune", "pipeline") else 1.0,
                    "quantization": "none",
                    "seed": seed,
                    "top1": t,
                    "latency_ms_p50": lat,
                    "size_bytes_gzip": 1000,
                }
            )
    rows.append(
        {
            "run_id": "pipeline-PQD-2",
            "status": "failed",
            "method": "pipeline",
            "order": "PQD",
            "strategy": "global_weight",
            "compression": 4.0,
            "quantization": "none",
            "seed": 2,
            "top1": math.nan,
            "latency_ms_p50": math.nan,
            "size_bytes_gzip": 1000,
        }
    )
    return pd.DataFrame(rows)


class FakeStore:
    """Duck-typed store: .runs() and .layers() return DataFrames."""

    def __init__(self, runs: pd.DataFrame, layers: pd.DataFrame) -> None:
        self._runs, self._layers = runs, layers

    def runs(self) -> pd.DataFrame:
        return self._runs

    def layers(self) -> pd.DataFrame:
        return self._layers


@pytest.fixture
def store(runs: pd.DataFrame, layers: pd.DataFrame) -> FakeStore:
    return FakeStore(runs, layers)

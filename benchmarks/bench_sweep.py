"""Sweep figures, printed as JSON.

1. Re-running a finished sweep (a notebook cell run twice): time of the second call over the first.
   Target: <= 5%. The baseline is trained before timing, so the first call is only the sweep's own runs.
2. The same 8 small runs in-process vs on a 2-worker Dask LocalCluster (processes, 1 torch thread each),
   each into a fresh store: the ratio of wall times, with and without the cluster's start-up. On 2 shared
   cores expect little or no gain: in-process torch already uses both cores.

Runs: TinyCNN on scikit-learn digits (1,437 training images), one-shot pruning + 2 finetuning epochs,
no latency measurement (timing under a parallel sweep would be contended anyway).

Usage:
    python benchmarks/bench_sweep.py [--runs 8] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("SHRINKVIZ_CACHE", tempfile.mkdtemp(prefix="bench_sweep_cache_"))  # workers inherit it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=int, default=8, help="runs per sweep (strategies x compressions x seeds)"
    )
    parser.add_argument("--epochs", type=int, default=2, help="finetuning epochs per run")
    args = parser.parse_args()

    import torch

    from shrinkviz.experiments.executors import DaskExecutor
    from shrinkviz.experiments.experiment import Experiment
    from shrinkviz.experiments.runner import load_baseline
    from shrinkviz.experiments.store import Store
    from shrinkviz.experiments.sweep import expand, sweep

    base = Experiment(
        model="tiny_cnn",
        data="digits",
        baseline={"epochs": 5},
        finetune={"preset": "adam_fast", "epochs": args.epochs},
        latency={"runtimes": []},
    )
    seeds = list(range(max(1, args.runs // 4)))
    grid = {"strategy": ["global_weight", "random"], "compression": [2, 4], "seed": seeds}
    n = len(expand(base, **grid))
    t0 = time.perf_counter()
    load_baseline(base)
    baseline_s = time.perf_counter() - t0

    root = tempfile.mkdtemp(prefix="bench_sweep_")
    t0 = time.perf_counter()
    first = sweep(base, store=Store(f"{root}/inprocess"), progress=False, **grid)
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = sweep(base, store=Store(f"{root}/inprocess"), progress=False, **grid)
    again_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    with DaskExecutor(n_workers=2, threads_per_worker=1, processes=True) as ex:
        ex.start()
        startup_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        dask = sweep(base, ex, store=Store(f"{root}/dask"), progress=False, **grid)
        dask_s = time.perf_counter() - t1
    dask_total_s = time.perf_counter() - t0
    same = first.runs["params_nonzero"].tolist() == dask.runs["params_nonzero"].tolist()
    print(
        json.dumps(
            {
                "benchmark": "sweep",
                "runs": n,
                "finetune_epochs": args.epochs,
                "torch_threads_in_process": torch.get_num_threads(),
                "cpu_count": os.cpu_count(),
                "load_avg_1min": round(os.getloadavg()[0], 2),
                "baseline_train_s": round(baseline_s, 3),
                "first_sweep_s": round(first_s, 3),
                "rerun_sweep_s": round(again_s, 4),
                "rerun_over_first": round(again_s / first_s, 5),
                "rerun_ran": again.ran,
                "rerun_skipped": again.skipped,
                "in_process_s": round(first_s, 3),
                "dask_startup_s": round(startup_s, 3),
                "dask_sweep_s": round(dask_s, 3),
                "dask_total_s": round(dask_total_s, 3),
                "dask_over_in_process": round(dask_s / first_s, 3),
                "dask_with_startup_over_in_process": round((startup_s + dask_s) / first_s, 3),
                "failed": first.failed + dask.failed,
                "same_counts_dask_vs_in_process": same,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

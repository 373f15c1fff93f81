"""Notebook 02's full-profile grids as they stood when its 44-minute figure was taken: wall time from empty.

The sweeps speed issue set "notebook 02's full profile (166 runs, 3 baselines, from an empty cache): 44 min
-> <= 15 min". The notebook has grown since (the claims-as-data design: 241 runs on 5 baselines, two seeds
per confounder baseline, a seven-strategy preset grid), so its own closing cell no longer times that
workload. This script runs exactly the sweeps notebook 02 ran then (commit 7bd5053), with today's code and
default settings, from an empty cache (every baseline trained in the sitting):

* main: 7 strategies x compressions 2, 4, 8, 16, 32 x seeds 0-2 (105 runs) from the ``default`` baseline,
  each finetuned 2 epochs over 6,000 images with the ``shrinkbench`` preset, timed beside the baseline;
* the unpruned baseline run;
* confounder: ``global_weight`` x 5 compressions x 3 seeds on the ``adam_lr1e-3`` and ``adam_lr1e-4``
  baselines (2 new baselines, 30 runs);
* presets: ``global_weight`` / ``layer_weight`` x 5 compressions x 3 seeds under ``shrinkbench`` (the main
  grid's runs: skipped) and ``finetune_sgd_cosine`` (30 runs).

The notebook's analysis cells (claims, figures; about half a minute) are not included. Prints JSON: wall
time per grid and in all, each sweep's plan and latency sitting, runs and failures, the median run and its
time split (``SweepResult.time_split``: training, the evaluations inside training, measuring, the rest)
with the seconds of every run summed by part, peak RSS of this process and of its largest worker, and the
machine's floor for this workload (``floor``): the images the grids trained and evaluated, counted from
what they stored (the runs' finetuning epochs, validation and test passes; every baseline's epochs, from its
manifest), at the bare loops' speed measured right after (``bench_sweep_parity.bare_s_per_image``: as many
single-threaded processes at once as the machine has cores), plus the latency protocol's own timing (each
timed model and its share of the baseline for ``min_time_s``). No schedule can beat it on this machine:
it leaves out loading, scoring, counting, packing, starting workers and every warm-up, and assumes every
core busy all the time.

    PYTHONPATH=. python benchmarks/bench_notebook02_issue_grids.py
    PYTHONPATH=. python benchmarks/bench_notebook02_issue_grids.py --precision bf16   # bfloat16 training steps

``--precision bf16`` trains every baseline and finetune under bfloat16 autocast (evaluation stays float32;
``shrinkviz.loop.config.TrainConfig.precision``): not the notebook's protocol, a figure for what the option
buys on the same grids.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

import pandas as pd
from bench_sweep_parity import machine_floor, workload

from shrinkviz.core.machine import cpu_isa, cpu_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="shrinkviz-nb02-issue-")
    os.environ["SHRINKVIZ_CACHE"] = os.path.join(root, "cache")  # empty: every baseline trained here
    import shrinkviz as sv
    from shrinkviz.experiments.sweep import TIME_PARTS

    strategies = ["global_weight", "layer_weight", "global_gradient", "layer_gradient",
                  "global_activation", "layer_activation", "random"]  # fmt: skip
    compressions, seeds = [2, 4, 8, 16, 32], [0, 1, 2]
    base = sv.Experiment(
        model="mnistnet",
        data={"name": "fashion_mnist"},
        baseline={"epochs": None, "precision": args.precision},
        finetune={"preset": "shrinkbench", "epochs": 2, "examples": 6_000, "precision": args.precision},
        latency={
            "runtimes": ["eager"],
            "threads": 1,
            "batch": 1,
            "rounds": 50,
            "warmup": 5,
            "min_time_s": 0.5,
        },
    )
    store = sv.Store(os.path.join(root, "store"))
    grids = {
        "main": dict(strategy=strategies, compression=compressions, seed=seeds),
        "baseline_run": dict(seed=[0]),
        "confounder": dict(
            recipe=["adam_lr1e-3", "adam_lr1e-4"],
            strategy=["global_weight"],
            compression=compressions,
            seed=seeds,
        ),
        "presets": dict(
            finetune_preset=["shrinkbench", "finetune_sgd_cosine"],
            strategy=["global_weight", "layer_weight"],
            compression=compressions,
            seed=seeds,
        ),
    }
    out: dict[str, object] = {
        "cpu": cpu_model(), "cpu_isa": ",".join(cpu_isa()), "cores": os.cpu_count(),
        "precision": args.precision, "grids": {}
    }  # fmt: skip
    splits = []
    started = time.perf_counter()
    for name, axes in grids.items():
        t0 = time.perf_counter()
        result = sv.sweep(base, store=store, progress=False, **axes)
        runs, split = result.runs, result.time_split()
        ran = split[split["run_id"].isin(result.ran_ids)]  # not the runs an earlier grid stored
        out["grids"][name] = {
            "wall_s": round(time.perf_counter() - t0, 1),
            "runs": len(runs),
            "failed": int((runs["status"] != "ok").sum()),
            "plan": result.plan,
            "latency_sitting": result.latency_sitting,
            "run_s_median": round(float(ran["duration_s"].median()), 2),
            "share_median": {p: round(float(ran[f"{p}_share"].median()), 3) for p in TIME_PARTS},
        }
        splits.append(ran)
    out["wall_s"] = round(time.perf_counter() - started, 1)
    every = pd.concat(splits)
    out["run_s_total_by_part"] = {p: round(float(every[f"{p}_s"].sum()), 1) for p in TIME_PARTS}
    out["wall_min"] = round(out["wall_s"] / 60, 1)
    out["runs_in_store"] = len(store.run_ids())
    out["peak_rss_mib_self"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["peak_rss_mib_largest_child"] = round(
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
    )
    out["floor"] = machine_floor(
        workload(store, os.environ["SHRINKVIZ_CACHE"]), os.cpu_count() or 1, args.precision
    )
    out["wall_vs_floor"] = round(out["wall_s"] / out["floor"]["floor_s"], 3)
    out["store"] = root
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

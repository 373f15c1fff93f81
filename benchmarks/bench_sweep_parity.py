"""ShrinkBench's standard protocol on Fashion-MNIST, end to end from an empty store, with default settings.

MnistNet; global / layer weight magnitude, global gradient magnitude and random pruning x compressions 2,
4, 8, 16, 32; 2 finetuning epochs at SGD lr 1e-3, momentum 0.9, Nesterov, batch 128 (the ``shrinkbench``
preset); one seed; the baseline trained in the same sitting (5 epochs, SGD lr 1e-2, Nesterov: the
``sgd_lr1e-2`` preset). Prints one JSON document: wall time (baseline included), the execution plan the
sweep chose, each run's time split (training epochs from its history, the rest: evaluation, counts, size,
latency), the epoch time against the bare loop of ``bench_fit.py``, peak RSS of this process and of the
largest worker, and the 20 accuracies, so the figures can be put beside ShrinkBench's on the same machine.

    python benchmarks/bench_sweep_parity.py                 # the protocol (minutes)
    python benchmarks/bench_sweep_parity.py --quick         # 2 strategies x 2 compressions on 3,000 images
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

import shrinkviz as sv
from shrinkviz.core.machine import cpu_model

STRATEGIES = ["global_weight", "layer_weight", "global_gradient", "random"]
COMPRESSIONS = [2, 4, 8, 16, 32]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--store", default=None, help="store folder (default: a fresh temporary one)")
    args = parser.parse_args()
    root = args.store or tempfile.mkdtemp(prefix="shrinkviz-parity-")
    os.environ["SHRINKVIZ_CACHE"] = os.path.join(root, "cache")  # baselines trained in this sitting
    data = {"name": "fashion_mnist", **({"train": 3000, "val": 500, "test": 1000} if args.quick else {})}
    base = sv.Experiment(
        model="mnistnet",
        data=data,
        baseline={"recipe": "sgd_lr1e-2", "epochs": 1 if args.quick else 5},
        finetune={"preset": "shrinkbench", "epochs": 1 if args.quick else 2},
        latency={"runtimes": ["eager"], "rounds": 20, "min_time_s": 0.2},
    )
    strategies = STRATEGIES[:2] if args.quick else STRATEGIES
    compressions = COMPRESSIONS[:2] if args.quick else COMPRESSIONS
    started = time.perf_counter()
    result = sv.sweep(
        base, store=os.path.join(root, "store"), progress=False, strategy=strategies, compression=compressions
    )
    wall = time.perf_counter() - started
    runs, history = result.runs, result.history
    train_s = history.groupby("run_id")["epoch_s"].sum()
    split = runs.set_index("run_id")[["strategy", "compression", "duration_s", "top1"]].join(
        train_s.rename("train_s")
    )
    split["other_s"] = split["duration_s"] - split["train_s"]
    epochs = history.groupby("run_id")["epoch_s"].median()
    print(json.dumps({
        "cpu": cpu_model(), "cores": os.cpu_count(), "quick": args.quick, "plan": result.plan,
        "runs": len(runs), "failed": int((runs["status"] != "ok").sum()), "wall_s": wall,
        "run_s_median": float(split["duration_s"].median()),
        "train_s_median": float(split["train_s"].median()),
        "other_s_median": float(split["other_s"].median()),
        "other_share_median": float((split["other_s"] / split["duration_s"]).median()),
        "epoch_s_median": float(epochs.median()),
        "peak_rss_mib_self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_mib_largest_child": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "top1": {f"{r.strategy} x{r.compression:g}": round(float(r.top1), 4) for r in split.itertuples()},
        "store": root,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()

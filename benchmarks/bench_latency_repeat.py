"""Repeatability of the stored latency: the demo-like sweep measured in two more sittings (``remeasure``
twice), per run the |difference| of ``latency_vs_baseline`` between sittings beside the same statistic for
the absolute p50. Also: every unstructured-pruned run's ratio to its baseline on eager (dense FP32 kernels
either way, so it should sit at 1), and the wall time and rows/s of re-timing the store. Prints one JSON.

    python benchmarks/bench_latency_repeat.py                    # the smoke demo's runs, full latency spec
    python benchmarks/bench_latency_repeat.py --profile full     # the full demo (10-15 min of training)
    python benchmarks/bench_latency_repeat.py --store DIR        # re-time an existing store instead

The ``smoke`` protocol trains the demo's runs on 1,000 Fashion-MNIST images (MnistNet) but keeps the full
demo's latency spec (eager, batch 1, 1 thread, 10 interleaved rounds of 0.1 s per model), which is what
decides repeatability. Taken on a shared 2-core machine with other work running: the absolute
milliseconds move with the machine, the ratios should not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings

from shrinkviz.cli import demo_experiments
from shrinkviz.core.machine import machine
from shrinkviz.experiments.remeasure import remeasure
from shrinkviz.experiments.store import Store
from shrinkviz.experiments.sweep import sweep
from shrinkviz.metrics.stats import pareto_mask
from shrinkviz.viz.machines import LATENCY_TIE

FULL_LATENCY = {"runtimes": ["eager"], "threads": 1, "batch": 1, "rounds": 50, "min_time_s": 1.0}


def _pairs(a, b, column):
    """|a - b| / b per run (relative difference) for one column of two sittings' eager rows."""
    left = a.set_index("run_id")[column]
    right = b.set_index("run_id")[column]
    both = left.index.intersection(right.index)
    return {r: abs(float(left[r]) - float(right[r])) / float(right[r]) for r in both}


def _stats(diffs):
    values = sorted(diffs.values())
    return {"median": statistics.median(values), "max": max(values), "n": len(values)} if values else {}


def _pareto_by_sitting(runs, latency):
    """The frontier's Pareto set (top-1, eager ``latency_vs_baseline``, gzip size; latency ties within
    ``LATENCY_TIE``) in each sitting, and whether every sitting gives the same set."""
    eager = latency[(latency["runtime"] == "eager") & (latency["error"] == "")]
    sets = {}
    for sitting, rows in eager.groupby("sitting", sort=True):
        table = runs.loc[rows["run_id"]].assign(latency_vs_baseline=rows["latency_vs_baseline"].to_numpy())
        front = pareto_mask(
            table,
            maximize=["top1"],
            minimize=["latency_vs_baseline", "size_bytes_gzip"],
            tolerance={"latency_vs_baseline": LATENCY_TIE},
        )
        sets[sitting] = sorted(
            f"{r['method']}{r['order'] or ''} {r['strategy'] or ''}x{r['compression']:g}"
            for _, r in table[front.to_numpy()].iterrows()
        )
    return {"by_sitting": sets, "stable": len({tuple(v) for v in sets.values()}) == 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=("smoke", "full"), default="smoke")
    ap.add_argument("--store", help="an existing store to re-time (default: sweep into a new one)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    out = {"machine": machine(), "load_avg_1min": os.getloadavg()[0], "profile": args.profile}
    if args.store:
        folder = args.store
    else:
        folder = tempfile.mkdtemp(prefix="bench-latency-")
        exps = [e.replace(latency=FULL_LATENCY) for e in demo_experiments(args.profile)]
        t0 = time.perf_counter()
        sweep(exps, store=folder, progress=False)
        out["sweep_s"] = time.perf_counter() - t0
    out["store"] = str(folder)
    sittings = []
    for _ in range(2):
        result = remeasure(folder, ["eager"])
        sittings.append(result)
        out.setdefault("remeasure", []).append(
            {
                "session": result.session,
                "rows": len(result.latency),
                "wall_s": round(result.wall_s, 2),
                "rows_per_s": round(result.rows_per_s, 3),
                "errors": int((result.latency["error"] != "").sum()),
            }
        )
    a, b = (s.latency[s.latency["error"] == ""] for s in sittings)
    out["repeat_vs_baseline"] = _stats(_pairs(a, b, "latency_vs_baseline"))
    out["repeat_abs_p50"] = _stats(_pairs(a, b, "latency_ms_p50"))
    store = Store(folder)
    runs = store.runs().set_index("run_id")
    first = store.latency()
    first = first[(first["sitting"] == "run") & (first["runtime"] == "eager")]
    out["repeat_run_vs_second_sitting"] = {
        "vs_baseline": _stats(_pairs(first, b, "latency_vs_baseline")),
        "abs_p50": _stats(_pairs(first, b, "latency_ms_p50")),
    }
    pruned = [r for r in b["run_id"] if runs.loc[r, "method"] == "prune"]
    ratios = {
        f"{runs.loc[r, 'strategy']}x{runs.loc[r, 'compression']:g}": [
            round(float(s.latency.set_index("run_id").loc[r, "latency_vs_baseline"]), 4) for s in sittings
        ]
        for r in pruned
    }
    flat = [v for pair in ratios.values() for v in pair]
    out["pruned_vs_baseline_eager"] = {
        "per_run_two_sittings": ratios,
        "min": min(flat) if flat else None,
        "max": max(flat) if flat else None,
        "all_within_0.95_1.05": all(0.95 <= v <= 1.05 for v in flat),
    }
    out["pareto"] = _pareto_by_sitting(runs, store.latency())
    out["int8_vs_baseline_eager"] = {
        f"{runs.loc[r, 'method']}{runs.loc[r, 'order'] or ''}": round(float(v), 4)
        for r, v in zip(b["run_id"], b["latency_vs_baseline"], strict=True)
        if runs.loc[r, "quantization"] != "none"
    }
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()

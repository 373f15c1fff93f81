"""Results store under concurrent writers, printed as JSON.

N processes (default 4) each write M runs (default 50) into ONE store at the same time, every run with a
10-epoch history and a 5-layer table, plus one run id all writers rewrite (last complete write wins).
Then a fresh reader loads everything. Figures: rows read back vs written (target: all, none lost), corrupt
entries (target: 0), leftover temp files, write throughput, cold and warm read times.

Usage:
    python benchmarks/bench_store.py [--writers 4] [--runs 50]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

WRITER = textwrap.dedent("""
    import sys, time
    from shrinkviz.experiments.schema import RUN_COLUMNS
    from shrinkviz.experiments.store import Store
    store, writer, n = Store(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    start_at = float(sys.argv[4])
    while time.time() < start_at:  # all writers start together
        time.sleep(0.001)
    base = {c: (0.5 if col.dtype == "float" else 1 if col.dtype == "int" else "x") for c, col in RUN_COLUMNS.items()}
    base.update(status="ok", error="", method="prune", strategy="global_weight", config_json="{}")
    history = [{"stage": "finetune", "epoch": e, "train_loss": 1.0 / e, "val_top1": 0.5} for e in range(1, 11)]
    layers = [{"layer": f"l{i}", "kind": "Conv2d", "shape": "16x16x3x3", "params": 2304, "nonzero": 576,
               "sparsity": 0.75, "macs": 10000, "macs_nonzero": 2500} for i in range(5)]
    t0 = time.perf_counter()
    for i in range(n):
        store.put({**base, "run_id": f"w{writer}-{i:04d}", "seed": i, "top1": i / n}, history, layers)
        store.put({**base, "run_id": "shared", "seed": writer})
    print(time.perf_counter() - t0)
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()

    from shrinkviz.experiments.store import Store

    root = Path(tempfile.mkdtemp(prefix="bench_store_"))
    start_at = time.time() + 3.0  # leave time for every interpreter to import the store
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(w), str(args.runs), str(start_at)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(args.writers)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    codes = [p.returncode for p in procs]
    wall = time.time() - start_at
    write_s = [float(o.strip().splitlines()[-1]) for o in outs if o.strip()]
    t0 = time.perf_counter()
    store = Store(root)
    runs = store.runs()
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.runs()
    warm = time.perf_counter() - t0
    expected = {f"w{w}-{i:04d}" for w in range(args.writers) for i in range(args.runs)} | {"shared"}
    got = set(runs["run_id"])
    puts = args.writers * args.runs * 2
    print(
        json.dumps(
            {
                "benchmark": "store_concurrent_writers",
                "writers": args.writers,
                "runs_per_writer": args.runs,
                "writer_exit_codes": codes,
                "rows_written": len(expected) - 1,
                "rows_read_back": len(got - {"shared"}),
                "rows_lost": len(expected - got),
                "unexpected_rows": len(got - expected),
                "shared_run_readable": "shared" in got,
                "corrupt_entries": len(store.problems),
                "leftover_temp_files": len([p for p in (root / "runs").iterdir() if p.name.startswith(".")]),
                "history_rows": len(store.history()),
                "layer_rows": len(store.layers()),
                "puts_total": puts,
                "write_wall_s": round(wall, 3),
                "put_ms_mean_per_writer": round(
                    1000 * sum(write_s) / max(1, len(write_s)) / (2 * args.runs), 3
                ),
                "read_all_cold_s": round(cold, 3),
                "read_all_warm_s": round(warm, 3),
                "store": str(root),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

"""Run ShrinkBench's own code (JJGO/shrinkbench, imported from a checkout, never copied here) on its
standard MnistNet protocol with real Fashion-MNIST, and print one JSON document with wall times, its own
top-1 figures and the process's RSS, so shrinkviz's figures can be set beside ShrinkBench's on one machine.

    git clone /work/.mirror/JJGO+shrinkbench/repo /tmp/shrinkbench_src/shrinkbench
    PYTHONPATH=. python benchmarks/bench_shrinkbench_side.py --shrinkbench /tmp/shrinkbench_src   # ~30 min
    PYTHONPATH=. python benchmarks/bench_shrinkbench_side.py --shrinkbench /tmp/shrinkbench_src \
        --epochs-baseline 1 --epochs-finetune 1 --strategies GlobalMagWeight --compressions 2   # smoke

Protocol: ShrinkBench's TrainingExperiment trains MnistNet from scratch (SGD lr 1e-2, momentum 0.9, Nesterov,
batch 128, 5 epochs); then one PruningExperiment per strategy x compression starts from a copy of that model,
masks it and finetunes it (SGD lr 1e-3, momentum 0.9, Nesterov, batch 128, 2 epochs). Fashion-MNIST is served
as ShrinkBench's 'MNIST' dataset (so ShrinkBench normalises with MNIST's mean/std, as its protocol does): the
four IDX files found by shrinkviz.data.sources are decompressed into a temporary $DATAPATH/MNIST/MNIST/raw.
DataLoader workers default to 0 (--workers), so one process does all the work and its RSS is the whole cost.
Accuracies are ShrinkBench's own (logs.csv, metrics.json): it divides by the nominal batch size, so its top-1
reads ~1.1% low on 10,000 test images (79 batches, the last of 16); "best" is its post_acc1 (max val_acc1 over
logs.csv, pre-finetune row included, as its plot.df_from_results does). Times come from time.perf_counter;
per-epoch times are differences of ShrinkBench's logged timestamps (a train pass plus a val pass each).
RSS (VmRSS, MiB) is sampled after the imports (torch, torchvision, shrinkbench), after the baseline experiment
is constructed (both datasets read), after the baseline, after the first and the last pruning run; the peak
is VmHWM. A run's wall_s spans its construction (datasets again, masks), metrics, pre-eval and finetuning.

Harness adaptations (ShrinkBench's files are never edited):
  - torchvision: the registry's CUDA-linked torchvision fails to import against CPU torch (pytorch/vision#9085);
    shrinkviz.core.compat.import_torchvision declares the missing op schemas before ShrinkBench imports it.
  - model hand-over: the resume path is broken (TrainingExperiment.build_model reads self.resume before setting
    it), so the trained baseline nn.Module is deep-copied and passed as `model`, which build_model accepts.
  - pretrained=False is passed: PruningExperiment defaults to pretrained=True, which MnistNet asserts against.
  - results folder: `path` cannot be used (build_logging calls .mkdir on it, so a str fails, and __repr__
    json-dumps the params, so a Path fails); the experiment's `rootdir` attribute, which get_path honours, is
    set instead to a temp dir, and ShrinkBench names each run's folder itself (exp.path after run()).
  - seeds: ShrinkBench seeds only in run(), after the model is built and the masks are computed, so the harness
    seeds python/numpy/torch (--seed) before constructing each experiment (RandomPruning masks included).
  - signals: Experiment.__init__ makes SIGINT a no-op; the default handler is restored so Ctrl-C still works.
  - stdout: ShrinkBench prints progress to stdout; it is redirected to stderr so stdout holds only the JSON.
  - --limit-batches (smoke checks only): the experiment's DataLoaders are wrapped to yield their first N batches.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import gzip
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from shrinkviz.core.compat import import_torchvision
from shrinkviz.core.machine import cpu_isa, cpu_model
from shrinkviz.data.sources import resolve

STRATEGIES = ("GlobalMagWeight", "LayerMagWeight", "GlobalMagGrad", "RandomPruning")


def status_mib(field: str) -> float:
    """A /proc/self/status memory field (VmRSS, VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    raise KeyError(field)


def cpu_info() -> dict:
    return {"cpu_model": cpu_model(), "cpu_isa": list(cpu_isa()), "cpu_count": os.cpu_count()}


def import_path(given: Path, scratch: Path) -> tuple[Path, Path]:
    """(folder to put on sys.path, the package dir) for a checkout given as its parent or as itself."""
    package = given / "shrinkbench" if (given / "shrinkbench" / "experiment").is_dir() else given
    if not (package / "experiment" / "prune.py").is_file():
        raise SystemExit(f"--shrinkbench {given}: no shrinkbench package (experiment/prune.py) there")
    if package.name == "shrinkbench":
        return package.parent, package
    (scratch / "pkg").mkdir()  # the package has no __init__.py and must be importable under its own name
    (scratch / "pkg" / "shrinkbench").symlink_to(package.resolve())
    return scratch / "pkg", package


def stage_fashion_mnist(root: Path) -> Path:
    """Decompress Fashion-MNIST where torchvision.datasets.MNIST(root=$DATAPATH/MNIST) looks for raw files."""
    raw = root / "MNIST" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    source = resolve("fashion_mnist", download=False)  # data_cache or the Debian package, digests verified
    for gz in sorted(source.glob("*-ubyte.gz")):
        with gzip.open(gz) as fin, open(raw / gz.name.removesuffix(".gz"), "wb") as fout:
            shutil.copyfileobj(fin, fout)
    return root


class FirstBatches:
    """Stands in for a DataLoader in ShrinkBench's run_epoch, yielding only its first n batches."""

    def __init__(self, loader, n: int):
        self.loader, self.n, self.batch_size = loader, n, loader.batch_size

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)

    def __len__(self) -> int:
        return min(self.n, len(self.loader))


def build(cls, args, rootdir: Path, **kwargs):
    """Seed, construct a ShrinkBench experiment, undo its SIGINT no-op; return (experiment, seconds)."""
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    exp = cls(dataset="MNIST", seed=args.seed, dl_kwargs={"num_workers": args.workers}, **kwargs)
    seconds = time.perf_counter() - start
    exp.rootdir = str(rootdir)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.limit_batches:
        exp.train_dl = FirstBatches(exp.train_dl, args.limit_batches)
        exp.val_dl = FirstBatches(exp.val_dl, args.limit_batches)
    return exp, seconds


def read_log(path: Path) -> list[dict]:
    with open(path / "logs.csv", newline="") as fh:
        return [{k: float(v) if v else None for k, v in row.items()} for row in csv.DictReader(fh)]


def sgd(lr: float, epochs: int) -> dict:
    return {"optim": "SGD", "lr": lr, "momentum": 0.9, "nesterov": True, "epochs": epochs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shrinkbench", type=Path, required=True, help="checkout (its parent or the package dir)")
    p.add_argument("--epochs-baseline", type=int, default=5)
    p.add_argument("--epochs-finetune", type=int, default=2)
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    p.add_argument("--compressions", nargs="+", type=int, default=[2, 4, 8, 16, 32])
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--workers", type=int, default=0, help="DataLoader num_workers (ShrinkBench's default: 8)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--limit-batches", type=int, default=0, help="smoke checks: batches per epoch (0 = all)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    out: dict = {**cpu_info(), "python": sys.version.split()[0], "torch": torch.__version__}
    rss: dict = {}
    with tempfile.TemporaryDirectory(prefix="sb_side_") as tmp, contextlib.redirect_stdout(sys.stderr):
        scratch = Path(tmp)
        parent, package = import_path(args.shrinkbench, scratch)
        commit = subprocess.run(
            ["git", "-C", str(package), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        sys.path.insert(0, str(parent))
        out["torchvision"] = import_torchvision().__version__
        from shrinkbench.experiment import PruningExperiment, TrainingExperiment

        rss["after_imports"] = status_mib("VmRSS")
        t = time.perf_counter()
        os.environ["DATAPATH"] = str(stage_fashion_mnist(scratch / "data"))
        staging = time.perf_counter() - t
        out |= {"shrinkbench_commit": commit.stdout.strip() or None, "threads": args.threads}
        out |= {"workers": args.workers, "seed": args.seed, "limit_batches": args.limit_batches}
        results = scratch / "results"

        t = time.perf_counter()
        base, setup = build(
            TrainingExperiment,
            args,
            model="MnistNet",
            rootdir=results,
            train_kwargs=sgd(1e-2, args.epochs_baseline),
            pretrained=False,
        )
        rss["after_data_load"] = status_mib("VmRSS")  # datasets read, model and optimizer built
        base.run()
        log = read_log(base.path)
        stamps = [0.0] + [row["timestamp"] for row in log]
        out["data_staging_s"] = round(staging, 2)
        out["baseline"] = {
            "epochs": args.epochs_baseline,
            "wall_s": round(time.perf_counter() - t, 2),
            "setup_s": round(setup, 2),
            "per_epoch_s": [round(b - a, 2) for a, b in itertools.pairwise(stamps)],
            "val_acc1_per_epoch": [round(row["val_acc1"], 4) for row in log],
        }
        rss["after_baseline"] = status_mib("VmRSS")

        out["runs"] = []
        for strategy, compression in itertools.product(args.strategies, args.compressions):
            t = time.perf_counter()
            exp, setup = build(
                PruningExperiment,
                args,
                model=copy.deepcopy(base.model),
                strategy=strategy,
                compression=compression,
                rootdir=results,
                train_kwargs=sgd(1e-3, args.epochs_finetune),
                pretrained=False,
            )
            exp.run()
            wall = time.perf_counter() - t
            log, metrics = read_log(exp.path), exp.metrics
            finetune = [row for row in log if row["epoch"] >= 0]
            out["runs"].append(
                {
                    "strategy": strategy,
                    "compression": compression,
                    "wall_s": round(wall, 2),
                    "setup_s": round(setup, 2),  # datasets, model copy, mask computation
                    "compression_ratio": round(metrics["compression_ratio"], 3),
                    "theoretical_speedup": round(metrics["theoretical_speedup"], 3),
                    "pre_acc1": round(metrics["val_acc1"], 4),
                    "last_acc1": round(finetune[-1]["val_acc1"], 4) if finetune else None,
                    "best_acc1": round(max(row["val_acc1"] for row in log), 4),
                }
            )
            rss.setdefault("after_first_run", status_mib("VmRSS"))
        rss["after_last_run"] = status_mib("VmRSS")
    out["total_wall_s"] = round(time.perf_counter() - t0, 2)
    rss["peak_vmhwm"] = status_mib("VmHWM")
    out["rss_mib"] = rss
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

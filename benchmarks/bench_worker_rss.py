"""What a sweep worker process holds: resident memory (VmRSS) and its peak (VmHWM) after each stage of one
parity-protocol run, in a fresh process.

Stages: interpreter start; ``import torch``; the runner (``shrinkviz.experiments.runner`` and what it
imports); ``distributed`` (what a Dask worker adds); Fashion-MNIST loaded as tensors; the baseline (trained
once into a temporary cache, so the run's own stages are measured apart); one run (MnistNet, global weight
x8, 1 finetuning epoch on ``--examples`` images, eager latency) through the worker entry point
``runner.execute``. Also lists which optional heavy modules were imported by then (ONNX Runtime and
OpenVINO should not be, for an eager-only latency spec), and whether ``torch._dynamo`` was (73 MiB; the
optimizers of ``shrinkviz.loop.optim`` avoid it).

    python benchmarks/bench_worker_rss.py                  # about a minute
    python benchmarks/bench_worker_rss.py --examples 54000 # a full finetuning epoch
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

HEAVY = ("onnxruntime", "openvino", "onnx", "pandas", "scipy", "sklearn", "distributed", "plotly", "numba")


def memory_mib() -> dict[str, float]:
    """VmRSS and VmHWM of this process, MiB."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=6400, help="finetuning images of the run")
    parser.add_argument("--no-distributed", action="store_true", help="skip importing distributed")
    args = parser.parse_args()
    os.environ.setdefault("SHRINKVIZ_CACHE", tempfile.mkdtemp(prefix="shrinkviz-rss-"))
    stages = {"start": memory_mib()}
    import torch

    torch.set_num_threads(1)
    stages["import torch"] = memory_mib()
    from shrinkviz.experiments import runner
    from shrinkviz.experiments.experiment import Experiment

    stages["import runner"] = memory_mib()
    if not args.no_distributed:
        import distributed  # noqa: F401

        stages["import distributed"] = memory_mib()
    exp = Experiment(
        model="mnistnet",
        data="fashion_mnist",
        baseline={"recipe": "sgd_lr1e-2", "epochs": 1},
        prune={"strategy": "global_weight", "compression": 8},
        finetune={"preset": "shrinkbench", "epochs": 1, "examples": args.examples},
        latency={"runtimes": ["eager"], "rounds": 20, "min_time_s": 0.2},
    )
    runner.load_data(exp)
    stages["dataset loaded"] = memory_mib()
    runner.load_baseline(exp)
    stages["baseline trained"] = memory_mib()
    started = time.perf_counter()
    out = runner.execute(exp.to_json(), threads=1)
    stages["run done"] = memory_mib()
    print(json.dumps({
        "stages_mib": stages,
        "run_status": out["row"]["status"], "run_error": out["row"]["error"][:200],
        "run_s": round(time.perf_counter() - started, 1), "examples": args.examples,
        "heavy_modules_imported": sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY)),
        "torch_dynamo_imported": "torch._dynamo" in sys.modules,
        "torch": torch.__version__,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()

"""INT8 latency of models that are not in the registry, on every runtime, printed as JSON.

torchvision resnet18 and mobilenet_v2 (random weights, BatchNorm statistics from a few random batches),
quantized with ``sv.quantize(..., "ptq")`` (graph mode, x86), timed at batch 1 and one thread on every
runtime of ``shrinkviz.deploy.runtimes`` (eager, compiled = TorchScript freeze for INT8 / torch.compile for
FP32, onnxruntime, sparse), side by side with their FP32 eager latency in one run. The CPU model is
recorded; the machine is shared with other engineers, so trust the ratios of one run, not absolute ms.

Usage:
    python benchmarks/bench_own_models.py            # 3x64x64 inputs
    python benchmarks/bench_own_models.py --quick    # 3x32x32, fewer rounds
"""

from __future__ import annotations

import argparse
import json
import os
import warnings

import torch

import shrinkviz
import shrinkviz as sv
from shrinkviz.core.compat import import_torchvision
from shrinkviz.core.machine import cpu_model
from shrinkviz.metrics.latency import measure_latency

RUNTIMES = ("eager", "compiled", "onnxruntime", "sparse")


def _model(name: str, shape: tuple[int, ...]) -> torch.nn.Module:
    torch.manual_seed(0)
    model = getattr(import_torchvision().models, name)(num_classes=10).train()
    with torch.no_grad():
        for batch in torch.randn(64, *shape).split(16):
            model(batch)
    return model.eval()


def _time(model: torch.nn.Module, runtime: str, shape: tuple[int, ...], rounds: int) -> dict:
    try:
        row = measure_latency(model, runtime, input_shape=shape, threads=1, rounds=rounds, min_time_s=1.0)
    except Exception as exc:  # noqa: BLE001 - a runtime that cannot run the model is a figure too
        return {"runtime": runtime, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    return {
        "runtime": runtime,
        "ms_p50": round(row["latency_ms_p50"], 3),
        "ms_p90": round(row["latency_ms_p90"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    shape, rounds = ((3, 32, 32), 20) if args.quick else ((3, 64, 64), 100)
    warnings.filterwarnings("ignore")
    rows = []
    for name in ("resnet18", "mobilenet_v2"):
        fp32 = _model(name, shape)
        int8 = sv.quantize(fp32, torch.randn(128, *shape), "ptq", calib_batches=4).model
        base = _time(fp32, "eager", shape, rounds)
        entry = {
            "model": f"torchvision.{name}",
            "input_shape": list(shape),
            "fp32_eager_ms_p50": base.get("ms_p50"),
        }
        entry["fp32"] = [base, *(_time(fp32, r, shape, rounds) for r in RUNTIMES[1:])]
        entry["int8"] = [_time(int8, r, shape, rounds) for r in RUNTIMES]
        for item in entry["int8"]:
            if "ms_p50" in item and base.get("ms_p50"):
                item["speedup_vs_fp32_eager"] = round(base["ms_p50"] / item["ms_p50"], 2)
        rows.append(entry)
    print(
        json.dumps(
            {
                "benchmark": "own_models_int8_latency",
                "cpu_model": cpu_model(),
                "cpu_count": os.cpu_count(),
                "batch": 1,
                "threads": 1,
                "quantization": "graph mode (torch.ao FX, x86 backend config), PTQ",
                "machine_note": "shared machine: other engineers' jobs ran concurrently",
                "torch": torch.__version__,
                "shrinkviz": shrinkviz.__version__,
                "rows": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

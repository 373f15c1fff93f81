"""Single techniques (P, Q, D) vs the ordered pipeline (PQD by default) on Fashion-MNIST with MnistNet, one
seed, the same total epoch budget: test top-1, size (gzip) and measured latency of each deployed artefact.
Prints one JSON document.

    python benchmarks/bench_pipeline_fashion.py --budget 3            # P 3, Q 3, D 3, PQD 1/1/1
    python benchmarks/bench_pipeline_fashion.py --budget 5 --orders PQD QPD DPQ
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import shrinkviz as sv
from shrinkviz.data import Normalizer
from shrinkviz.loop.train import evaluate
from shrinkviz.metrics.latency import measure_latency
from shrinkviz.metrics.size import measure_size
from shrinkviz.techniques.pipeline import pipeline


def split_budget(order: str, budget: int) -> tuple[int, ...]:
    """The paper's 20/40/40 proportions for three stages; everything for one stage."""
    if len(order) == 1:
        return (budget,)
    if len(order) == 3:
        first = max(1, round(budget * 0.2))
        second = max(1, (budget - first) // 2)
        return (first, second, max(1, budget - first - second))
    raise ValueError(f"order {order!r}: give one or three stages")


def deployment(model: torch.nn.Module, threads: int, min_time: float) -> dict:
    row = dict(measure_size(model))
    for runtime in ("eager", "onnxruntime"):
        lat = measure_latency(model, runtime, threads=threads, batch=1, min_time_s=min_time)
        row[f"latency_ms_p50_{runtime}"] = round(lat["latency_ms_p50"], 3)
        row[f"latency_ms_p90_{runtime}"] = round(lat["latency_ms_p90"], 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=3, help="total epochs of every run")
    parser.add_argument("--orders", nargs="+", default=["P", "Q", "D", "PQD"])
    parser.add_argument("--compression", type=float, default=8.0)
    parser.add_argument("--finetune", default="finetune_sgd_cosine")
    parser.add_argument("--threads", type=int, default=1, help="training and latency threads")
    parser.add_argument("--min-time", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subset", type=int, default=None, help="train on the first N images (smoke runs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = sv.load_dataset("fashion_mnist")
    baseline = sv.pretrained("mnistnet", data, seed=0, progress=False)
    if args.subset:
        data = data.subset(train=args.subset)
    normalize = Normalizer(data.mean, data.std)
    base = {
        "test_top1": round(evaluate(baseline, data.test, normalize)["top1"], 4),
        **deployment(baseline, args.threads, args.min_time),
    }
    runs = {}
    for order in args.orders:
        epochs = split_budget(order, args.budget)
        started = time.perf_counter()
        res = pipeline(
            baseline,
            data,
            order,
            epochs,
            strategy="global_weight",
            compression=args.compression,
            finetune=args.finetune,
            seed=args.seed,
            progress=False,
        )
        runs[order] = {
            "epochs": list(epochs),
            "quantized": res.quantized,
            "test_top1": round(res.metrics["test_top1"], 4),
            "val_top1": round(res.metrics["val_top1"], 4),
            "weight_sparsity": round(res.metrics["sparsity"], 4),
            "wall_s": round(time.perf_counter() - started, 1),
            "stage_s": {s["stage"]: round(s["seconds"], 1) for s in res.stages},
            **deployment(res.model, args.threads, args.min_time),
        }
    print(
        json.dumps(
            {
                "dataset": "fashion_mnist",
                "model": "mnistnet",
                "seed": args.seed,
                "budget": args.budget,
                "train_images": len(data.train),
                "compression": args.compression,
                "finetune": args.finetune,
                "threads": args.threads,
                "baseline": base,
                "runs": runs,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

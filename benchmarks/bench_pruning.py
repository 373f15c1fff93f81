"""Pruning speed figures, printed as JSON.

1. Masked finetuning step time vs unmasked (same model, same batch): shrinkviz's masks (buffers +
   optimizer hooks that zero masked grads before and masked weights after each step) against the dense model, and against mask-multiplied-in-every-
   forward (``torch.nn.utils.prune``, ShrinkBench's approach) for contrast. Target: ratio <= 1.10.
2. Batch-1 FP32 latency of CIFAR ResNet-18: dense vs channel-pruned to half the channels of every group
   (a smaller dense model) vs 90% unstructured sparsity (masks baked in), side by side with their
   theoretical speedups (dense MACs / nonzero MACs). Target: structured >= 1.6x measured.

Measurements alternate between variants over several rounds and report medians, because the machine is
shared; trust the ratios of one run rather than absolute milliseconds.

Usage:
    python benchmarks/bench_pruning.py                 # full figures (a few minutes)
    python benchmarks/bench_pruning.py --quick         # smaller, for a smoke check
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.benchmark import Timer

import shrinkviz
from shrinkviz.core.machine import cpu_model
from shrinkviz.metrics.counts import count_parameters, layer_table
from shrinkviz.models import create_model
from shrinkviz.techniques.prune import (
    MaskCallback,
    get_masks,
    masked_sparsity,
    prune,
    prune_channels,
    remove_masks,
)


def interleaved_ms(
    variants: dict[str, Callable[[], object]], rounds: int, min_run_time: float
) -> dict[str, list[float]]:
    """Per round, each variant's blocked_autorange median in ms; variants interleaved, their order rotated
    every round so that no variant always runs first."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for fn in variants.values():
        fn()  # warm-up
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = variants[name]
            timer = Timer("fn()", globals={"fn": fn})
            samples[name].append(timer.blocked_autorange(min_run_time=min_run_time).median * 1e3)
    return samples


def ratio(samples: dict[str, list[float]], name: str, reference: str) -> dict[str, float]:
    """Median and quartiles of the per-round time ratios (each pair measured back to back, so a busy
    machine slows both sides of a pair)."""
    pairs = sorted(a / b for a, b in zip(samples[name], samples[reference], strict=True))
    quartiles = statistics.quantiles(pairs, n=4) if len(pairs) > 1 else [pairs[0]] * 3
    return {"median": round(quartiles[1], 3), "q1": round(quartiles[0], 3), "q3": round(quartiles[2], 3)}


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, callbacks: list[MaskCallback]) -> Callable:
    """One step exactly as ``shrinkviz.loop.train.fit`` runs it (forward, backward, callbacks, SGD step)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    for cb in callbacks:
        cb.fit_start(model, optimizer)
    model.train()

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for cb in callbacks:
            cb.after_backward(model)
        optimizer.step()
        for cb in callbacks:
            cb.after_step(model)

    return step


def bench_masked_step(arch: str, batch: int, rounds: int, min_run_time: float) -> dict[str, object]:
    from torch.nn.utils import prune as torch_prune

    dense = create_model(arch, input_shape=(3, 32, 32), seed=0)
    masked = prune(dense, strategy="global_weight", compression=8).model
    multiplied = remove_masks(copy_of(dense))
    for name, mask in get_masks(masked).items():  # the same masks, applied as weight = weight_orig * mask
        module_name, _, attr = name.rpartition(".")
        torch_prune.custom_from_mask(multiplied.get_submodule(module_name), attr, mask)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, 3, 32, 32, generator=gen), torch.randint(0, 10, (batch,), generator=gen)
    callback = MaskCallback()
    variants = {
        "dense": train_step(dense, x, y, []),
        "shrinkviz_masks": train_step(masked, x, y, [callback]),
        "mask_in_forward": train_step(multiplied, x, y, []),
    }
    samples = interleaved_ms(variants, rounds, min_run_time)
    # the enforcement work of one step: the optimizer hooks of shrinkviz.loop.enforce (grads, then weights)
    from shrinkviz.loop import enforce

    hook_opt = torch.optim.SGD(masked.parameters(), lr=1e-3)
    overhead = Timer(
        "enforce._pre_step(o, (), {}); enforce._post_step(o, (), {})",
        globals={"enforce": enforce, "o": hook_opt},
    )
    overhead_ms = overhead.blocked_autorange(min_run_time=min_run_time).median * 1e3
    return {
        "model": arch,
        "input": [batch, 3, 32, 32],
        "optimizer": "sgd nesterov momentum 0.9",
        "compression": 8,
        "rounds": rounds,
        "ratio": "per-round step-time ratio: median and quartiles",
        "step_ms_median": {k: round(statistics.median(v), 1) for k, v in samples.items()},
        "ratio_shrinkviz_masks_vs_dense": ratio(samples, "shrinkviz_masks", "dense"),
        "ratio_mask_in_forward_vs_dense": ratio(samples, "mask_in_forward", "dense"),
        "mask_hooks_ms_per_step": round(overhead_ms, 3),
        # the masked and dense steps run identical kernels; the callback is the only extra work
        "ratio_from_hook_overhead": round(1 + overhead_ms / statistics.median(samples["dense"]), 4),
        "target_ratio_max": 1.10,
    }


def copy_of(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def bench_structured(arch: str, rounds: int, min_run_time: float) -> dict[str, object]:
    """Batch-1 latency, dense vs half channels vs 90% unstructured sparsity (masks baked in)."""
    dense = create_model(arch, input_shape=(3, 32, 32), seed=0).eval()
    structured = prune_channels(dense, keep=0.5, norm="l2").model.eval()
    sparse_masked = prune(dense, strategy="global_weight", compression=10).model
    sparsity = masked_sparsity(sparse_masked)
    sparse = remove_masks(sparse_masked).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def run(model: nn.Module) -> Callable[[], object]:
        def forward() -> object:
            with torch.inference_mode():
                return model(x)

        return forward

    samples = interleaved_ms(
        {"dense": run(dense), "structured_half_channels": run(structured), "unstructured_90pct": run(sparse)},
        rounds,
        min_run_time,
    )
    times = {name: statistics.median(values) for name, values in samples.items()}
    dense_macs = int(layer_table(dense)["macs"].sum())

    def entry(model: nn.Module, name: str) -> dict[str, object]:
        table = layer_table(model)
        params, nonzero = count_parameters(model)
        ratios = ratio(samples, name, "dense")
        return {
            "latency_ms_p50": round(times[name], 3),
            "speedup_measured": round(1 / ratios["median"], 3),
            "speedup_measured_q1_q3": [round(1 / ratios["q3"], 3), round(1 / ratios["q1"], 3)],
            "speedup_theoretical": round(dense_macs / int(table["macs_nonzero"].sum()), 3),
            "params": params,
            "params_nonzero": nonzero,
            "macs": int(table["macs"].sum()),
            "macs_nonzero": int(table["macs_nonzero"].sum()),
        }

    return {
        "model": arch,
        "input": [1, 3, 32, 32],
        "runtime": "eager fp32, torch.inference_mode",
        "rounds": rounds,
        "speedup": "dense / variant latency per round: median and [q1, q3]",
        "dense": entry(dense, "dense"),
        "structured_half_channels": {
            **entry(structured, "structured_half_channels"),
            "keep": 0.5,
            "norm": "l2",
        },
        "unstructured_90pct": {
            **entry(sparse, "unstructured_90pct"),
            "strategy": "global_weight",
            "compression": 10,
            "prunable_sparsity": round(sparsity, 4),
        },
        "target_structured_speedup_min": 1.6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter timing")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--rounds", type=int, default=11, help="interleaved measurement rounds (default 11)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # training the same batch over and over drives values denormal otherwise
    rounds, min_run_time = (2, 0.2) if args.quick else (args.rounds, 0.5)
    load_before = os.getloadavg()[0]
    result = {
        "benchmark": "bench_pruning",
        "shrinkviz_version": shrinkviz.__version__,
        "torch_version": torch.__version__,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "masked_finetuning_step": bench_masked_step("resnet20", 128, rounds, min_run_time),
        "structured_latency": bench_structured("resnet18", 3 * rounds, min_run_time / 2),
    }
    result["load_average_1min_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Cost of enforcing pruning masks in a plain PyTorch training loop, printed as JSON.

The same model (MnistNet on 1x28x28, ResNet-20 on 3x32x32), batch, data and optimizer, one training
step = zero_grad + forward + backward + step, timed with and without masks (x8 global magnitude pruning
vs the same weights unpruned). The masked model's zeros are enforced by the process-wide optimizer hooks of
``shrinkviz.loop.enforce``; the forward pass has no mask arithmetic. Target: ratio <= 1.05.

Variants alternate over several rounds and the medians are compared, because the machine is shared.

Usage:
    python benchmarks/bench_masks.py            # full figures (about a minute)
    python benchmarks/bench_masks.py --quick    # smaller, for a smoke check
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
import torch.nn.functional as F

import shrinkviz
from shrinkviz.core.machine import cpu_model
from shrinkviz.loop.masks import remove_masks, revived
from shrinkviz.models import create_model
from shrinkviz.techniques.prune import prune

OPTIMIZERS = {
    "sgd_momentum_wd": lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, weight_decay=5e-4),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-3),
}


def _step_time(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, steps: int
) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def bench(name: str, shape: tuple[int, ...], opt: str, batch: int, rounds: int, steps: int) -> dict:
    torch.manual_seed(0)
    dense = create_model(name, input_shape=shape, num_classes=10, seed=0)
    masked = prune(dense, strategy="global_weight", compression=8).model
    unmasked = remove_masks(copy.deepcopy(masked))  # same zeros at the start, nothing enforcing them
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    models = {"masked": masked, "unmasked": unmasked}
    optimizers = {k: OPTIMIZERS[opt](m.parameters()) for k, m in models.items()}
    for key, model in models.items():
        model.train()
        _step_time(model, optimizers[key], x, y, 2)  # warm-up
    times: dict[str, list[float]] = {"masked": [], "unmasked": []}
    for _ in range(rounds):
        for key in ("masked", "unmasked"):
            times[key].append(_step_time(models[key], optimizers[key], x, y, steps))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "model": name,
        "optimizer": opt,
        "batch": batch,
        "step_ms_unmasked": round(med["unmasked"] * 1e3, 3),
        "step_ms_masked": round(med["masked"] * 1e3, 3),
        "ratio_masked_over_unmasked": round(med["masked"] / med["unmasked"], 4),
        "revived_weights_after": sum(revived(masked).values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds, steps = (3, 2) if args.quick else (9, 5)
    torch.set_num_threads(1)
    rows = [
        bench(name, shape, opt, 128, rounds, steps)
        for name, shape in (("mnistnet", (1, 28, 28)), ("resnet20", (3, 32, 32)))
        for opt in OPTIMIZERS
    ]
    print(
        json.dumps(
            {
                "benchmark": "mask_enforcement_overhead",
                "cpu_model": cpu_model(),
                "threads": 1,
                "torch": torch.__version__,
                "shrinkviz": shrinkviz.__version__,
                "rows": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

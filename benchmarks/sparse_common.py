"""Shared helpers of benchmarks/bench_sparse.py: interleaved timing, model preparation (BN statistics, INT8
conversion, the compression for a density, 1x4-block masks) and the side-by-side model section.

    python -c "import sparse_common"  # imported by bench_sparse.py from the same folder
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.ao.nn.intrinsic.qat import freeze_bn_stats

import shrinkviz.sparse as sp
from shrinkviz.deploy.runtimes import make_runner
from shrinkviz.metrics.counts import count_parameters
from shrinkviz.sparse.modules import SparseConv2d, SparseLinear
from shrinkviz.techniques.prune import prunable_parameters
from shrinkviz.techniques.quant import convert, prepare_qat


def interleaved(calls: dict[str, Callable[[], object]], rounds: int, budget_s: float) -> dict[str, dict]:
    """Per call ms of each callable: ``rounds`` rounds, each timing every callable for about ``budget_s``
    (order rotated per round); median and p10 / p90 over rounds."""
    reps = {}
    with torch.inference_mode():
        for name, fn in calls.items():
            fn()
            t0 = time.perf_counter()
            fn()
            reps[name] = max(1, int(budget_s / max(time.perf_counter() - t0, 1e-7)))
        times: dict[str, list[float]] = {n: [] for n in calls}
        names = list(calls)
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                fn, n = calls[name], reps[name]
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                times[name].append((time.perf_counter() - t0) / n * 1e3)
    out = {}
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=10) if len(ts) >= 2 else [ts[0]] * 9
        out[name] = {
            "ms": round(statistics.median(ts), 4),
            "p10_ms": round(q[0], 4),
            "p90_ms": round(q[-1], 4),
        }
    return out


def peak_gmacs(n: int) -> float:
    """Dense FP32 MAC rate of one core: the median of timed n x n matmuls."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = interleaved({"mm": lambda: a @ b}, 7, 0.05)["mm"]["ms"]
    return n**3 / (t * 1e-3) / 1e9


def settle_bn(model: nn.Module, calib: torch.Tensor) -> nn.Module:
    model.train()
    with torch.no_grad():
        for _ in range(3):
            for x in calib.split(16):
                model(x)
    return model.eval()


def int8(model: nn.Module, calib: torch.Tensor) -> nn.Module:
    qat = prepare_qat(model, check=False)
    qat.apply(freeze_bn_stats)
    qat.train()
    with torch.no_grad():
        for x in calib.split(16):
            qat(x)
    return convert(qat)


def compression_for_density(model: nn.Module, density: float) -> float:
    """The whole-model compression that leaves ``density`` of the prunable weights."""
    total, nonzero = count_parameters(model)
    prunable = sum(module._parameters[attr].numel() for _, module, attr in prunable_parameters(model))
    return total / (nonzero - prunable + density * prunable)


def nonzero_macs(converted: nn.Module) -> int:
    """Nonzero multiply-accumulates of the layers that run on the sparse kernels, per image."""
    macs = 0
    for m in converted.modules():
        if isinstance(m, SparseConv2d | SparseLinear):
            for plan in [*m._plans.values(), *getattr(m, "_b4plans", {}).values()]:  # b4i8: _b4plans
                macs += (
                    m.nnz_index.shape[0]
                    * plan.out_hw[0]
                    * (plan.out_hw[1] if isinstance(m, SparseConv2d) else 1)
                )
                break
    return macs


def model_section(model: nn.Module, runtimes: list[str], x: torch.Tensor, rounds: int, peak: float) -> dict:
    runners = {rt: make_runner(model, rt, x, 1) for rt in runtimes}
    timed = interleaved({rt: r.call for rt, r in runners.items()}, rounds, 0.1)
    sparse = runners["sparse"]
    report = sp.report_of(sparse)
    dense = {rt: timed[rt]["ms"] for rt in runtimes if rt != "sparse"}
    macs = nonzero_macs(sparse.keep[0])
    return {
        "detail": {rt: r.detail for rt, r in runners.items()},
        "latency": timed,
        "speedup_vs": {rt: round(ms / timed["sparse"]["ms"], 3) for rt, ms in dense.items()},
        "speedup_vs_fastest_dense": round(min(dense.values()) / timed["sparse"]["ms"], 3),
        "sparse_layers_nonzero_mmac": round(macs / 1e6, 2),
        "sparse_layers_floor_ms": round(macs / peak / 1e6, 3),
        "layers": [
            {"name": n.name, "density": round(n.density, 4), "choice": n.choice, "reason": n.reason}
            for n in report.notes
        ],
    }


def layerwise_block_1x4(model: nn.Module, density: float) -> nn.Module:
    """A copy with every prunable conv / linear keeping the ``density`` fraction of its 1x4 input-channel
    blocks of largest mean |w| (``block_1x4``'s pattern, one budget per layer instead of one global)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for _, module, attr in prunable_parameters(model):
            w = module._parameters[attr]
            keep = block_1x4_mask(w.abs(), density)
            w.mul_(keep)
    return model


def block_1x4_mask(score: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``density`` fraction of 1x4 blocks (along dim 1, zero-padded) with the largest mean score."""
    moved = score.movedim(1, -1)
    pad = -moved.shape[-1] % 4
    padded = torch.cat([moved, moved.new_zeros(*moved.shape[:-1], pad)], -1) if pad else moved
    blocks = padded.reshape(*padded.shape[:-1], -1, 4).sum(-1)
    k = max(1, round(density * blocks.numel()))
    keep = torch.zeros(blocks.numel(), dtype=torch.bool)
    keep[blocks.reshape(-1).topk(k).indices] = True
    lanes = keep.reshape(blocks.shape).unsqueeze(-1).expand(*blocks.shape, 4).reshape(padded.shape)
    return lanes[..., : moved.shape[-1]].movedim(-1, 1).to(score.dtype)

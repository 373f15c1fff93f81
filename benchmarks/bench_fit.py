"""``fit`` against the fastest bare PyTorch training loops for the same model, data, batch and optimizer.

Prints one JSON document: CPU seconds per epoch (process time, median over interleaved repetitions; with
one thread this is the work done, less disturbed by other load on a shared machine than wall time) of

* ``fit``: shrinkviz's loop (augmentation and normalisation per batch, callbacks, history, validation);
* ``bare_eager``: a minimal loop over pre-normalised float tensors (randperm, forward, backward, step);
* ``bare_channels_last``, ``bare_compiled`` (``torch.compile`` of the model), ``bare_foreach`` /
  ``bare_fused`` (the optimizer's multi-tensor / fused kernels);
* ``bare_bf16``: channels-last under ``torch.autocast`` to bfloat16, and ``fit_bf16_train_only``: ``fit``
  with ``precision="bf16"`` (different arithmetic, so compared with ``bare_bf16`` only);
* ``bare_relu_before_pool``: ``bare_channels_last`` with the model's layers run in their written order
  (``nn.Sequential``), i.e. without :class:`~shrinkviz.models.base.Features` applying each ReLU after the
  max-pool that follows it (same weights to the bit, more work);
* ``bare_default_heap``: ``bare_channels_last`` in a fresh process with ``SHRINKVIZ_HEAP=default``, i.e.
  glibc's default thresholds, which trim the heap every step (:mod:`shrinkviz.core.heap`).

Every loop in this process runs inside :func:`~shrinkviz.core.heap.steady_heap`, as ``fit`` does, so the
bare loops are measured at their best too; ``bare_default_heap`` shows what that is worth.

and ``fit`` over the fastest float32 bare loop. The bare loops skip validation, so ``fit_train_only`` (fit
with a one-image validation split) is the like-for-like figure.

    python benchmarks/bench_fit.py                       # MnistNet / Fashion-MNIST, 12,800 images, 1 thread
    python benchmarks/bench_fit.py --model resnet20 --examples 2560
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from shrinkviz.core.heap import heap_state, steady_heap
from shrinkviz.core.machine import cpu_isa, cpu_model
from shrinkviz.data import Normalizer, load_dataset
from shrinkviz.loop.config import TrainConfig
from shrinkviz.loop.train import fit
from shrinkviz.models import create_model


def bare_epoch(model, x, y, batch, opt, generator, channels_last=False, bf16=False):
    model.train()
    order = torch.randperm(x.shape[0], generator=generator)
    for start in range(0, x.shape[0], batch):
        idx = order[start : start + batch]
        xb = x[idx]
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(xb).float(), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnistnet")
    parser.add_argument("--data", default="fashion_mnist")
    parser.add_argument("--examples", type=int, default=12800)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # one bare loop, its CPU seconds printed
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset(args.data).subset(train=args.examples)
    cfg = TrainConfig.shrinkbench().replace(epochs=1, batch_size=args.batch, augment="none")
    norm = Normalizer(data.mean, data.std)
    x, y = norm(data.train.images), data.train.labels

    def sgd(params, **extra):
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, **extra)

    def make(**kw):
        return create_model(args.model, dataset=data, seed=0, **kw)

    def run_fit(val_images: int | None, precision: str = "fp32"):
        ds = data if val_images is None else data.subset(val=val_images)
        model = make()
        t0 = time.process_time()
        fit(model, ds, cfg.replace(precision=precision), seed=0, progress=False)
        return time.process_time() - t0

    def run_bare(kind: str):
        model = make()
        if kind == "relu_before_pool":
            model.features.__class__ = torch.nn.Sequential
        channels_last = kind in ("channels_last", "bf16", "relu_before_pool")
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if kind == "compiled":
            model = torch.compile(model)
        extra = {"foreach": True} if kind == "foreach" else {"fused": True} if kind == "fused" else {}
        opt = sgd(model.parameters(), **extra)
        g = torch.Generator().manual_seed(0)
        if kind == "compiled":  # compile outside the timed epoch
            bare_epoch(model, x[: args.batch], y[: args.batch], args.batch, opt, g)
        with steady_heap():
            t0 = time.process_time()
            bare_epoch(model, x, y, args.batch, opt, g, channels_last=channels_last, bf16=kind == "bf16")
            return time.process_time() - t0

    def run_default_heap():
        argv = [sys.argv[0], "--case", "channels_last", "--model", args.model, "--data", args.data,
                "--examples", str(args.examples), "--batch", str(args.batch), "--threads", str(args.threads)]  # fmt: skip
        env = {**os.environ, "SHRINKVIZ_HEAP": "default"}
        done = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, check=True)
        return float(done.stdout.split()[-1])

    if args.case:
        print(run_bare(args.case))
        return

    cases = {
        "fit": lambda: run_fit(None),
        "fit_train_only": lambda: run_fit(1),
        "fit_bf16_train_only": lambda: run_fit(1, "bf16"),
        **{
            f"bare_{k}": (lambda k=k: run_bare(k))
            for k in ("eager", "channels_last", "compiled", "foreach", "fused", "bf16", "relu_before_pool")
        },
        "bare_default_heap": run_default_heap,
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(args.repeats):
        for name in list(cases)[r % len(cases) :] + list(cases)[: r % len(cases)]:
            try:
                times[name].append(cases[name]())
            except Exception as exc:  # noqa: BLE001 - a loop this torch cannot run is reported, not fatal
                times[name] = [float("nan")]
                cases[name] = lambda exc=exc: float("nan")
    med = {k: statistics.median(v) for k, v in times.items()}
    # other arithmetic (bf16), or one of fit's levers turned off: not candidates for the fastest bare loop
    unlike = ("bare_bf16", "bare_relu_before_pool", "bare_default_heap")
    bare = {k: v for k, v in med.items() if k.startswith("bare_") and k not in unlike and v == v}
    fastest = min(bare, key=bare.get)
    print(json.dumps({
        "cpu": cpu_model(), "cpu_isa": ",".join(cpu_isa()), "threads": args.threads, "model": args.model, "data": args.data,
        "examples": args.examples, "batch": args.batch, "repeats": args.repeats,
        "epoch_s": med, "epoch_s_all": times, "fastest_bare": fastest,
        "fit_vs_fastest_bare": med["fit"] / bare[fastest],
        "fit_train_only_vs_fastest_bare": med["fit_train_only"] / bare[fastest],
        "fit_train_only_vs_bare_eager": med["fit_train_only"] / med["bare_eager"],
        "fit_bf16_train_only_vs_bare_bf16": med["fit_bf16_train_only"] / med["bare_bf16"],
        "bare_bf16_vs_fastest_bare": med["bare_bf16"] / bare[fastest],
        "channels_last_vs_relu_before_pool": med["bare_channels_last"] / med["bare_relu_before_pool"],
        "channels_last_vs_default_heap": med["bare_channels_last"] / med["bare_default_heap"],
        "heap": heap_state(),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()

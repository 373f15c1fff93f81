"""Deployment cost of INT8 on a CIFAR ResNet-18 (3x32x32): latency on every runtime, artefact sizes,
repeatability of the latency figure and the cost of a QAT training step. Prints one JSON document.

The ``sidebyside`` part times FP32 and INT8 on every runtime (eager, compiled, onnxruntime, openvino,
sparse), torch.ao FX x86 INT8 and the ``fastest`` choice in the same interleaved rounds, each as a ratio
to FP32 eager with its range over rounds: the figure to read on a shared machine.

    python benchmarks/bench_deploy.py                  # batch 1, 1 thread (the default figures)
    python benchmarks/bench_deploy.py --threads 2 --min-time 5
    python benchmarks/bench_deploy.py --only sizes --trained-on fashion_mnist   # trained weights (cached)

Weights are randomly initialised (no CIFAR offline) unless ``--trained-on`` names a dataset: then the
ResNet-18 (CIFAR layout, that dataset's input shape) is trained with the ``cifar_sgd`` recipe cut to
``--train-epochs`` on the first ``--train-examples`` images, through ``shrinkviz.pretrained`` (cached).
Random-init BatchNorm statistics are settled on calibration data, and the INT8 model is converted as QAT
ends (BN statistics frozen while the observers see data, so the folded weights match the observed ranges;
converting with BN statistics still moving saturates int8 weights and made the sparse artefact look ~35%
more compressible than it is). Latency does not depend on the values; sizes of the sparse artefacts do.
``int8_sparse90_entropy_bound`` is the FP32 file over the int8 weights' per-tensor order-0 entropy: no
lossless coder of independent weights does better. The dense ``state_dict`` artefact under gzip stays well
short of it (deflate codes scattered zeros badly); the ``packed`` artefact (bitmask + values streams,
``shrinkviz.metrics.packed``) comes within about 8% of it. Measured: random init 28.1x dense / 32.9x packed /
35.3x bound; trained 2 epochs on 12k Fashion-MNIST images 24.7x / 28.5x / 31.0x (training widens the int8
values' spread, so the bound falls). Ratios are taken within one run; absolute
milliseconds move with the load of the shared machine (``load_avg_1min`` is recorded).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.ao.nn.intrinsic.qat import freeze_bn_stats

from shrinkviz.core.machine import machine
from shrinkviz.data import Normalizer, load_dataset
from shrinkviz.deploy.export import export_onnx, quantize_onnx_static
from shrinkviz.deploy.runtimes import concrete_runtimes
from shrinkviz.loop.train import evaluate
from shrinkviz.loop.zoo import pretrained
from shrinkviz.metrics.latency import cpu_model, measure_latency, pinned_threads
from shrinkviz.metrics.size import measure_size
from shrinkviz.models import create_model
from shrinkviz.techniques.pipeline import weight_sparsity
from shrinkviz.techniques.prune import prune
from shrinkviz.techniques.quant import convert, prepare_qat


def _settle_bn(model: torch.nn.Module, calib: torch.Tensor, passes: int = 10) -> torch.nn.Module:
    """Give random-init BatchNorm layers the running statistics of the calibration data (as training would)."""
    model.train()
    with torch.no_grad():
        for _ in range(passes):
            for x in calib.split(16):
                model(x)
    return model.eval()


def _int8(model: torch.nn.Module, calib: torch.Tensor) -> torch.nn.Module:
    """The state QAT ends in: BN statistics frozen, observers fed, then converted."""
    qat = prepare_qat(model, check=False)
    qat.apply(freeze_bn_stats)  # the folded weights the observers see are the ones convert() folds
    qat.train()
    with torch.no_grad():
        for x in calib.split(16):
            qat(x)
    return convert(qat)


def _step_time(model: torch.nn.Module, batch: int, steps: int, threads: int) -> float:
    """Median seconds of one SGD step (forward, backward, update) on random data."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, *model.input_shape)
    y = torch.randint(0, model.num_classes, (batch,))
    times = []
    with pinned_threads(threads):
        for i in range(steps + 2):
            t0 = time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i >= 2:  # two warm-up steps
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _entropy_bytes(model: torch.nn.Module) -> float:
    """Bytes the int8 weights need at their per-tensor order-0 entropy: what no lossless coder of
    independent weights beats (scales and biases not counted)."""
    bits = 0.0
    for tensor in model.state_dict().values():
        for t in tensor if isinstance(tensor, tuple) else (tensor,):
            if isinstance(t, torch.Tensor) and t.is_quantized:
                _, counts = torch.unique(t.int_repr(), return_counts=True)
                p = counts.double() / t.numel()
                bits -= float((counts * p.log2()).sum())
    return bits / 8


def _top1(model: torch.nn.Module, data) -> float:
    return evaluate(model, data.test, Normalizer(data.mean, data.std))["top1"]


def _lat(row: dict) -> dict:
    return {
        k: (round(v, 3) if isinstance(v, float) else v)
        for k, v in row.items()
        if k.startswith("latency_ms") or k in ("latency_rounds", "latency_runtime_detail")
    }


def latency_figures(fp32: torch.nn.Module, int8: torch.nn.Module, calib: torch.Tensor, args) -> dict:
    """Latency of FP32 and INT8 on every runtime, ONNX Runtime static PTQ, and the repeatability figure."""
    opts = {"batch": args.batch, "threads": args.threads, "min_time_s": args.min_time, "rounds": 50}
    latency: dict[str, dict] = {}
    for runtime in concrete_runtimes():
        latency[f"fp32_{runtime}"] = _lat(measure_latency(fp32, runtime, **opts))
        latency[f"int8_{runtime}"] = _lat(measure_latency(int8, runtime, **opts))
    with tempfile.TemporaryDirectory() as tmp:  # ONNX Runtime static PTQ of the FP32 export
        from shrinkviz.deploy.export import onnx_session

        static = quantize_onnx_static(
            export_onnx(fp32, Path(tmp) / "fp32.onnx"), Path(tmp) / "static.onnx", list(calib.split(16))
        )
        session = onnx_session(static, args.threads)
        feed = {"input": torch.randn(args.batch, *fp32.input_shape).numpy()}
        with pinned_threads(args.threads):
            for _ in range(20):
                session.run(None, feed)
            times = []
            deadline = time.perf_counter() + args.min_time
            while len(times) < 50 or time.perf_counter() < deadline:
                t0 = time.perf_counter_ns()
                session.run(None, feed)
                times.append((time.perf_counter_ns() - t0) / 1e6)
        latency["int8_onnxruntime_static_ptq"] = {
            "latency_ms_p50": round(statistics.median(times), 3),
            "latency_rounds": len(times),
        }
    base = latency["fp32_eager"]["latency_ms_p50"]
    speedups = {k: round(base / v["latency_ms_p50"], 2) for k, v in latency.items()}
    best = max((k for k in speedups if k.startswith("int8")), key=speedups.get)

    # repeatability: the same model, measured twice back to back on the best INT8 runtime and FP32 eager
    repeat = {}
    for key, model, runtime in (
        ("int8_best", int8, best.split("_", 1)[1].replace("_static_ptq", "")),
        ("fp32_eager", fp32, "eager"),
    ):
        a, b = (measure_latency(model, runtime, **opts) for _ in range(2))
        repeat[key] = {"runtime": runtime}
        for stat in ("latency_ms_p50", "latency_ms_cpu_p50"):
            x, y = a[stat], b[stat]
            repeat[key][stat] = [round(x, 3), round(y, 3)]
            repeat[key][stat.replace("latency_ms", "spread")] = round(abs(x - y) / min(x, y), 4)
    return {
        "latency": latency,
        "speedup_vs_fp32_eager": speedups,
        "best_int8_runtime": best,
        "best_int8_speedup": speedups[best],
        "repeatability": repeat,
    }


def _fx_int8(fp32: torch.nn.Module, calib: torch.Tensor) -> torch.nn.Module:
    """torch.ao FX graph mode INT8 (x86 qconfig mapping), calibrated on ``calib``."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    prepared = prepare_fx(copy.deepcopy(fp32).eval(), get_default_qconfig_mapping("x86"), (calib[:1],))
    with torch.no_grad():
        for x in calib.split(16):
            prepared(x)
    return convert_fx(prepared)


def side_by_side_figures(fp32: torch.nn.Module, int8: torch.nn.Module, calib: torch.Tensor, args) -> dict:
    """Every runtime's FP32 and INT8 latency as a ratio to FP32 eager, all timed in the same interleaved
    rounds (``compare_latency``), plus FX x86 INT8 and the ``fastest`` choice; a runtime that cannot run a
    model records why."""
    from shrinkviz.deploy.runtimes import concrete_runtimes
    from shrinkviz.metrics.compare import compare_latency

    entries: dict = {"fp32_eager": (fp32, "eager")}
    for runtime in concrete_runtimes():
        entries[f"fp32_{runtime}"] = (fp32, runtime)
        entries[f"int8_{runtime}"] = (int8, runtime)
    entries["int8_fx_x86_eager"] = (_fx_int8(fp32, calib), "eager")
    entries["fp32_fastest"] = (fp32, "fastest")
    entries["int8_fastest"] = (int8, "fastest")
    rows = compare_latency(
        entries,
        reference="fp32_eager",
        blocks=args.blocks,
        block_s=args.min_time / args.blocks,
        batch=args.batch,
        threads=args.threads,
        input_shape=tuple(fp32.input_shape),
        on_error="record",
    )
    out = {}
    for row in rows:
        if row["latency_error"]:
            out[row["model"]] = {"error": row["latency_error"][:300]}
            continue
        out[row["model"]] = {
            "vs_fp32_eager": round(row["latency_vs_reference"], 3),
            "range": [round(row["latency_vs_reference_min"], 3), round(row["latency_vs_reference_max"], 3)],
            "latency_ms_p50": round(row["latency_ms_p50"], 3),
            "detail": row["latency_runtime_detail"],
        }
    timed = {k: v["vs_fp32_eager"] for k, v in out.items() if "vs_fp32_eager" in v and "fastest" not in k}
    best8 = min((k for k in timed if k.startswith("int8")), key=timed.get)
    return {
        "side_by_side": out,
        "side_by_side_blocks": args.blocks,
        "fastest_int8": best8,
        "fastest_int8_vs_fp32_eager": timed[best8],
        "fastest_fp32": min((k for k in timed if k.startswith("fp32")), key=timed.get),
    }


def size_figures(fp32: torch.nn.Module, int8: torch.nn.Module, calib: torch.Tensor) -> dict:
    """Artefact sizes: FP32, INT8, and 90%-sparse (x10 compression over all parameters) FP32 and INT8."""
    sparse = prune(fp32, strategy="global_weight", compression=10.0).model
    sparse_int8 = _int8(sparse, calib)
    sizes = {
        "fp32": measure_size(fp32),
        "int8": measure_size(int8),
        "fp32_sparse90": measure_size(sparse),
        "int8_sparse90": measure_size(sparse_int8),
        "int8_sparse90_packed": measure_size(sparse_int8, "packed"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        sizes["int8_onnx"] = measure_size(int8, "onnx", path=Path(tmp) / "int8.onnx")
    fp32_raw = sizes["fp32"]["size_bytes_raw"]
    return {
        "sizes": sizes,
        "sparse90_weight_sparsity": round(weight_sparsity(sparse_int8), 4),
        "int8_sparse90_gzip_over_fp32_raw": round(sizes["int8_sparse90"]["size_bytes_gzip"] / fp32_raw, 5),
        "fp32_raw_over_int8_sparse90_gzip": round(fp32_raw / sizes["int8_sparse90"]["size_bytes_gzip"], 2),
        "fp32_raw_over_int8_sparse90_packed_gzip": round(
            fp32_raw / sizes["int8_sparse90_packed"]["size_bytes_gzip"], 2
        ),
        "int8_sparse90_entropy_bound": round(fp32_raw / _entropy_bytes(sparse_int8), 2),
    }


def step_figures(shape: tuple[int, ...], args) -> dict:
    """QAT training step vs FP32 step."""
    train_fp32 = create_model("resnet18", input_shape=shape, seed=0)
    train_qat = prepare_qat(copy.deepcopy(train_fp32), check=False)
    t_fp32 = _step_time(train_fp32, args.train_batch, args.train_steps, args.threads)
    t_qat = _step_time(train_qat, args.train_batch, args.train_steps, args.threads)
    return {
        "train_step_s": {"fp32": round(t_fp32, 4), "qat": round(t_qat, 4), "batch": args.train_batch},
        "qat_over_fp32_step": round(t_qat / t_fp32, 3),
    }


PARTS = ("sidebyside", "latency", "sizes", "step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--min-time", type=float, default=3.0, help="seconds of timed calls per measurement")
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--trained-on", metavar="DATASET", help="measure a resnet18 trained on this dataset")
    parser.add_argument("--train-examples", type=int, default=12_000, help="with --trained-on")
    parser.add_argument("--train-epochs", type=int, default=2, help="with --trained-on")
    parser.add_argument("--only", choices=PARTS, nargs="+", default=list(PARTS), help="parts to measure")
    parser.add_argument("--blocks", type=int, default=10, help="interleaved rounds of the side-by-side part")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.trained_on:
        data = load_dataset(args.trained_on).subset(train=args.train_examples, val=1000, test=1000)
        fp32 = pretrained(
            "resnet18", data, recipe="cifar_sgd", epochs=args.train_epochs
        )  # progress on stderr
        shape = data.input_shape
        calib = Normalizer(data.mean, data.std)(data.train.images[:64])
    else:
        shape = (3, 32, 32)
        fp32 = create_model("resnet18", input_shape=shape, seed=0)
        calib = torch.randn(64, *shape)
        _settle_bn(fp32, calib)
    int8 = _int8(fp32, calib)

    figures = {
        "model": "resnet18",
        "weights": (
            f"trained on {args.train_examples} {args.trained_on} images, {args.train_epochs} epochs "
            f"(cifar_sgd), test top-1 {_top1(fp32, data):.4f}"
        )
        if args.trained_on
        else "random init",
        "input_shape": list(shape),
        "batch": args.batch,
        "threads": args.threads,
        "cpu_model": cpu_model(),
        "machine": machine(),
        "torch": torch.__version__,
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    if "sidebyside" in args.only:
        figures.update(side_by_side_figures(fp32, int8, calib, args))
    if "latency" in args.only:
        figures.update(latency_figures(fp32, int8, calib, args))
    if "sizes" in args.only:
        figures.update(size_figures(fp32, int8, calib))
    if "step" in args.only:
        figures.update(step_figures(shape, args))
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()

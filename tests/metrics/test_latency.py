"""Measured latency: recorded conditions, pinned and restored threads, every runtime on FP32 and INT8,
failures and hangs raise, bad arguments are named. No timing is asserted (the machine is shared)."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from torch import nn

from shrinkviz.deploy.runtimes import make_runner
from shrinkviz.metrics.latency import (
    LatencyError,
    LatencyTimeoutError,
    compare_latency,
    compare_runtimes,
    cpu_model,
    latency_metrics,
    measure_latency,
    percentile,
)
from shrinkviz.models import create_model
from shrinkviz.techniques.quant import convert, prepare_qat

FAST = {"warmup": 2, "warmup_s": 0.0, "rounds": 5, "min_time_s": 0.0}


@pytest.fixture(scope="module")
def fp32():
    return create_model("tiny_cnn", input_shape=(1, 8, 8), seed=0).eval()


@pytest.fixture(scope="module")
def int8(fp32):
    qat = prepare_qat(fp32)
    qat(fp32.example_input(8))
    return convert(qat)


class _Probe(nn.Module):
    """Records the torch thread count and the input shape of every call."""

    input_shape = (2, 3, 4)

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[int, tuple[int, ...]]] = []

    def forward(self, x):
        self.seen.append((torch.get_num_threads(), tuple(x.shape)))
        return x.flatten(1)


def test_records_the_conditions():
    probe = _Probe()
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        row = measure_latency(probe, batch=3, threads=1, **FAST)
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(previous)
    assert {n for n, _ in probe.seen} == {1} and {s for _, s in probe.seen} == {(3, 2, 3, 4)}
    assert len(probe.seen) >= 1 + 2 + 5  # probe call, warm-up, timed rounds
    assert row["latency_runtime"] == "eager" and row["latency_threads"] == 1 and row["latency_batch"] == 3
    assert row["latency_input_shape"] == "2x3x4" and row["latency_dtype"] == "fp32"
    assert row["latency_rounds"] == 5
    assert row["torch_version"] == torch.__version__
    import onnxruntime

    assert row["onnxruntime_version"] == onnxruntime.__version__
    with open("/proc/cpuinfo") as fh:
        expected = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    assert row["cpu_model"] == cpu_model() == expected
    assert 0 < row["latency_ms_min"] <= row["latency_ms_p50"] <= row["latency_ms_p90"]


@pytest.mark.parametrize("runtime", ["eager", "compiled", "onnxruntime"])
def test_every_runtime_runs_fp32_and_int8(runtime, fp32, int8):
    for model, dtype in ((fp32, "fp32"), (int8, "int8")):
        if runtime == "compiled" and dtype == "fp32":
            model = create_model("tiny_mlp", input_shape=(1, 8, 8), seed=0)  # torch.compile: smallest graph
        row = measure_latency(model, runtime, batch=2, **FAST)
        assert row["latency_runtime"] == runtime and row["latency_dtype"] == dtype
        assert row["latency_ms_p50"] > 0 and row["latency_batch"] == 2


def test_runners_compute_the_models_output(int8):
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        expected = int8(x)
    onnx_out = make_runner(int8, "onnxruntime", x, 1).call()[0]
    assert onnx_out.shape == (2, 10)
    torch.testing.assert_close(make_runner(int8, "compiled", x, 1).call(), expected, rtol=0, atol=0)


def test_onnxruntime_session_is_pinned(fp32):
    runner = make_runner(fp32, "onnxruntime", torch.zeros(1, 1, 8, 8), 2)
    options = runner.keep[0].get_session_options()
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1


def test_compare_runtimes_same_conditions(int8):
    rows = compare_runtimes(int8, ["eager", "onnxruntime"], threads=1, batch=1, **FAST)
    assert [r["latency_runtime"] for r in rows] == ["eager", "onnxruntime"]
    assert {r["latency_threads"] for r in rows} == {1} and {r["latency_input_shape"] for r in rows} == {
        "1x8x8"
    }
    assert set(latency_metrics(int8, **FAST)) >= {
        "latency_ms_p50",
        "latency_ms_p90",
        "latency_runtime",
        "latency_threads",
        "latency_batch",
        "cpu_model",
    }


class _Broken(_Probe):
    def forward(self, x):
        raise RuntimeError("kernel missing")


class _Hangs(_Probe):
    def __init__(self):
        super().__init__()
        self.release = threading.Event()

    def forward(self, x):
        self.release.wait(30)
        return x


def test_failing_model_raises():
    with pytest.raises(
        LatencyError, match="eager inference of _Broken on input \\(1, 2, 3, 4\\) failed.*kernel missing"
    ):
        measure_latency(_Broken(), **FAST)


def test_hanging_model_raises_instead_of_blocking():
    model = _Hangs()
    try:
        with pytest.raises(LatencyTimeoutError, match="timeout_s=0.5"):
            measure_latency(model, timeout_s=0.5, **FAST)
    finally:
        model.release.set()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"batch": 0}, "batch=0"),
        ({"threads": 0}, "threads=0"),
        ({"rounds": 0}, "rounds=0"),
        ({"runtime": "tensorrt"}, "runtime='tensorrt'"),
        ({"input_shape": (3, 32)}, "input_shape=\\(3, 32\\)"),
        ({"timeout_s": 0}, "timeout_s=0"),
        ({"warmup": -1}, "warmup=-1"),
    ],
)
def test_bad_arguments_are_named(kwargs, field, fp32):
    with pytest.raises(ValueError, match=field):
        measure_latency(fp32, **kwargs)


def test_fake_quant_model_is_refused(fp32):
    with pytest.raises(ValueError, match="convert it to INT8"):
        measure_latency(prepare_qat(fp32), **FAST)


def test_model_without_input_shape_needs_one():
    with pytest.raises(ValueError, match="input_shape"):
        measure_latency(nn.Linear(2, 2), **FAST)


def test_percentile():
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 90) == pytest.approx(4.6)
    assert percentile([7.0], 90) == 7.0


class _Sleeps(_Probe):
    """A model whose call takes a known wall time (sleeping needs no CPU, so load barely moves it)."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        time.sleep(self.seconds)
        return x.flatten(1)


def test_compare_latency_takes_ratios_within_interleaved_rounds():
    fast, slow = _Sleeps(0.002), _Sleeps(0.006)
    rows = compare_latency({"fast": fast, "slow": slow}, blocks=4, block_s=0.05, warmup=1, warmup_s=0)
    assert [r["model"] for r in rows] == ["fast", "slow"]
    by = {r["model"]: r for r in rows}
    assert by["fast"]["latency_vs_reference"] == 1.0 and by["fast"]["latency_reference"] == "fast"
    assert 2.0 < by["slow"]["latency_vs_reference"] < 3.6  # 6 ms / 2 ms, oversleeping allowed for
    assert (
        by["slow"]["latency_vs_reference_min"]
        <= by["slow"]["latency_vs_reference"]
        <= by["slow"]["latency_vs_reference_max"]
    )
    assert all(r["latency_blocks"] == 4 and r["latency_rounds"] >= 4 for r in rows)
    assert fast.calls > slow.calls  # each ran for the same time per round
    assert {"latency_ms_p50", "latency_runtime", "latency_threads", "cpu_model"} <= set(rows[0])
    other = compare_latency({"fast": fast, "slow": slow}, reference="slow", blocks=1, block_s=0.02, warmup=1)
    assert other[1]["latency_vs_reference"] == 1.0 and other[0]["latency_vs_reference"] < 0.6


def test_compare_latency_on_real_models_and_runtimes(fp32, int8):
    rows = compare_latency(
        {"fp32": fp32, "int8": int8},
        "onnxruntime",
        blocks=2,
        block_s=0.01,
        **{k: v for k, v in FAST.items() if k in ("warmup", "warmup_s")},
    )
    assert [(r["model"], r["latency_dtype"], r["latency_runtime"]) for r in rows] == [
        ("fp32", "fp32", "onnxruntime"),
        ("int8", "int8", "onnxruntime"),
    ]
    mixed = compare_latency({"eager": fp32, "ort": (fp32, "onnxruntime")}, blocks=1, block_s=0.01, warmup=1)
    assert [r["latency_runtime"] for r in mixed] == ["eager", "onnxruntime"]
    with pytest.raises(ValueError, match="runtime='tvm'"):
        compare_latency({"a": fp32, "b": (fp32, "tvm")})


def test_compare_latency_bad_input(fp32):
    with pytest.raises(ValueError, match="models is empty"):
        compare_latency({})
    with pytest.raises(ValueError, match="reference='c' is not one of the models: a, b"):
        compare_latency({"a": fp32, "b": fp32}, reference="c")
    with pytest.raises(
        ValueError, match="one input shape for all models.*a: \\(1, 8, 8\\), b: \\(2, 3, 4\\)"
    ):
        compare_latency({"a": fp32, "b": _Probe()})
    with pytest.raises(ValueError, match="blocks=0"):
        compare_latency({"a": fp32}, blocks=0)
    with pytest.raises(ValueError, match="convert it to INT8"):
        compare_latency({"a": fp32, "qat": prepare_qat(fp32)})
    with pytest.raises(LatencyError, match="'broken'.*kernel missing"):
        compare_latency({"ok": _Probe(), "broken": _Broken()}, blocks=1, block_s=0.01)

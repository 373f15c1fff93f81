"""INT8 for any traceable model: graph-mode quantization (``torch.ao`` FX, x86 backend config).

A model of the user's own (torchvision, timm, a hand-written ``nn.Module`` with functional ops and
residual adds) needs no QuantStub, no FloatFunctional and no fusion list: the FX tracer sees the whole
graph, fuses conv-bn(-relu) and linear-relu itself (BatchNorm folded, trained through during QAT), and
puts quantize / dequantize at the graph's edges and quantized adds where the graph adds tensors.

Why FX rather than PT2E (torchao's ``prepare_qat_pt2e`` + ``X86InductorQuantizer``), measured on x86 with
torch 2.13: the FX-prepared model is an ordinary ``GraphModule`` whose ``train()`` / ``eval()`` work and
which takes any batch size, so the one training loop (``fit``) and ``evaluate`` drive it unchanged; its
converted model runs real quantized kernels without a compiler (CIFAR ResNet-18: FX INT8 4.9 ms vs PT2E
uncompiled 73 ms), traces and freezes with TorchScript and exports to an ONNX QDQ graph like the eager
models. ``torch.ao.quantization`` is deprecated; the port target is PT2E once its artefacts run fast
without ``torch.compile``; this file is the one to port, its functions keep their signatures.

The QAT qconfig is the x86 one with non-fused fake-quant modules (``version=0``): the fused
``fused_moving_avg_obs_fake_quant`` op rejected some timm models ("zero_point must be between quant_min
and quant_max") and is not exportable.

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
    >>> qat = prepare_qat_graph(net, torch.randn(2, 1, 8, 8))
    >>> _ = qat(torch.randn(8, 1, 8, 8))   # or train it: shrinkviz.loop.train.fit(qat, ...)
    >>> int8 = convert_graph(qat)
    >>> sorted(int8_weights(int8)), int8.input_shape
    (['0', '4'], (1, 8, 8))
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.ao.quantization as tq
from torch import nn

from shrinkviz.loop.masks import get_masks
from shrinkviz.techniques.quant.eager import (
    BACKEND,
    QuantizationError,
    _check_backend,
    _check_zeros,
    _quiet,
    _set_masks,
    _sync_observers,
    _unobserved,
    calibrate,
    int8_weights,
    is_int8,
    is_qat,
    run_named,
)

__all__ = ["calibrate_graph", "convert_graph", "int8_weights", "prepare_qat_graph", "uses_stubs"]


def uses_stubs(model: nn.Module) -> bool:
    """Whether ``model`` is built for eager-mode quantization (holds a QuantStub, as registry models do).

    Example:
        >>> uses_stubs(nn.Linear(2, 2))
        False
    """
    return any(isinstance(m, tq.QuantStub) for m in model.modules())


def _backend_config() -> Any:
    from torch.ao.quantization.backend_config.x86 import get_x86_backend_config

    return get_x86_backend_config()


def _trace_error(model: nn.Module, exc: Exception) -> QuantizationError:
    return QuantizationError(
        f"{type(model).__name__} cannot be traced for INT8 ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
        "graph-mode quantization needs a symbolically traceable forward (no data-dependent Python "
        "control flow): move such code out of forward or quantize the traceable submodules separately"
    )


def _prepare(model: nn.Module, example: torch.Tensor, qat: bool) -> nn.Module:
    from torch.ao.quantization.quantize_fx import prepare_fx, prepare_qat_fx

    _check_backend()
    if is_qat(model) or is_int8(model):
        raise QuantizationError("model is already prepared for QAT or converted to INT8")
    if not isinstance(example, torch.Tensor):
        raise TypeError(f"example_input must be a tensor batch, got {type(example).__name__}")
    work = copy.deepcopy(model).cpu()
    masks = get_masks(work)
    work.train(qat)
    try:
        with _quiet():
            if qat:
                mapping = tq.get_default_qat_qconfig_mapping(BACKEND, version=0)
                prepared = prepare_qat_fx(work, mapping, (example,), backend_config=_backend_config())
            else:
                mapping = tq.get_default_qconfig_mapping(BACKEND)
                prepared = prepare_fx(work, mapping, (example,), backend_config=_backend_config())
    except Exception as exc:  # noqa: BLE001 - tracing errors of arbitrary user code become one message
        raise _trace_error(model, exc) from exc
    _set_masks(prepared, masks)
    _keep_identity(model, prepared)
    prepared.input_shape = tuple(example.shape[1:])
    return prepared


IDENTITY = ("arch", "num_classes", "shrinkviz_manifest")
"""Attributes a traced model carries over from the model it came from (registry name, class count, zoo
manifest), so artefacts, teachers and counts still know what it is."""


def _keep_identity(source: nn.Module, target: nn.Module) -> None:
    for name in IDENTITY:
        if hasattr(source, name):
            setattr(target, name, getattr(source, name))


def prepare_qat_graph(model: nn.Module, example_input: torch.Tensor, *, check: bool = True) -> nn.Module:
    """Trace ``model`` and insert fake quantization for QAT (x86: per-channel int8 weights, uint8
    activations); conv-bn(-relu) fused with BatchNorm trained through. ``model`` is not modified.

    Pruning masks carry over (the fused module takes the conv's name) and stay enforced in training;
    observers learn ranges in train mode only. The result trains with ``shrinkviz.loop.train.fit``.

    Args:
        model: any symbolically traceable float model.
        example_input: an input batch (for tracing and the conversion check).
        check: convert a throw-away copy and run it, so an op the INT8 backend cannot run is named now.

    Raises:
        QuantizationError: the model cannot be traced, or a layer fails in INT8 (named).
    """
    prepared = _prepare(model, example_input, qat=True)
    prepared.register_forward_pre_hook(_sync_observers)
    if check:
        trial = copy.deepcopy(prepared)
        run_named(trial, example_input, "fake-quant")
        convert_graph(trial, example_input=example_input)
    return prepared


def convert_graph(prepared: nn.Module, *, example_input: torch.Tensor | None = None) -> nn.Module:
    """Convert an FX-prepared (QAT-trained or calibrated) model into an INT8 ``GraphModule`` on the CPU.

    Pruned zeros stay exactly zero (verified against the masks); the result keeps ``input_shape``.

    Raises:
        QuantizationError: observers have seen no data, a layer fails in INT8, or a zero did not stay.
    """
    from torch.ao.quantization.quantize_fx import convert_fx

    unobserved = _unobserved(prepared)
    if unobserved:
        raise QuantizationError(
            f"the activation observers of {unobserved!r} have seen no data, so their INT8 scales would "
            "be placeholders: train the QAT model or run calibration batches through it first"
        )
    work = copy.deepcopy(prepared).cpu().eval()
    masks = get_masks(work)
    for hook_id, hook in list(work._forward_pre_hooks.items()):
        if hook is _sync_observers:
            del work._forward_pre_hooks[hook_id]
    shape = getattr(prepared, "input_shape", None)
    with _quiet():
        int8 = convert_fx(work, backend_config=_backend_config())
    int8.input_shape = shape
    _keep_identity(prepared, int8)
    x = example_input if example_input is not None else torch.randn(2, *shape)
    run_named(int8, x.cpu(), "INT8")
    _check_zeros(int8, masks)
    return int8.eval()


def calibrate_graph(
    model: nn.Module,
    data: Any,
    example_input: torch.Tensor,
    *,
    calib_batches: int = 32,
    batch_size: int = 128,
) -> nn.Module:
    """Post-training static INT8 of any traceable model: trace, observe ``calib_batches``, convert.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, groups=1), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
        >>> is_int8(calibrate_graph(net, torch.randn(64, 1, 8, 8), torch.randn(2, 1, 8, 8), calib_batches=2))
        True
    """
    if calib_batches < 1:
        raise ValueError(f"calib_batches={calib_batches}: must be >= 1")
    prepared = _prepare(model, example_input, qat=False)
    calibrate(prepared, data, calib_batches, batch_size)
    return convert_graph(prepared, example_input=example_input)

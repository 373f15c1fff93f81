"""INT8 quantization on x86 CPUs with PyTorch's eager-mode quantization (``torch.ao.quantization``).

:func:`shrinkviz.techniques.quant.quantize` and the pipeline use graph mode
(:mod:`shrinkviz.techniques.quant.graph`) for every model; this module is the lower-level eager API for
models built with QuantStubs and FloatFunctional adds (all registry models), and holds the helpers both
routes share (observer sync, zero checks, calibration batches, layer-named errors).

Why eager mode was chosen over PT2E (measured on an x86 CPU with torch 2.13, CIFAR ResNet-18, batch 1;
graph mode shares these properties):

* It plugs into THE training loop unchanged. The fake-quant model is an ordinary ``nn.Module`` whose
  ``train()`` / ``eval()`` work, whose module names are the float model's names (so pruning masks map
  one-to-one) and which takes any batch size. PT2E (torchao's ``prepare_qat_pt2e`` with
  ``X86InductorQuantizer``) produces an exported graph on which ``train()`` / ``eval()`` raise
  ``NotImplementedError`` and whose batch size is fixed at export (the last partial batch of
  ``evaluate`` fails a guard), so ``fit`` and ``evaluate`` could not drive it without special cases.
* Its converted model is a real INT8 model (``quantized.Conv2d`` / ``Linear`` with qint8 packed weights)
  that runs fast without a compiler: eager INT8 x86 5.1 ms vs FP32 eager 15.8 ms for CIFAR ResNet-18,
  2.9 ms after TorchScript trace + freeze, and it exports to an ONNX QDQ graph that keeps
  the QAT-learned scales (ONNX Runtime INT8, the fastest runtime measured). PT2E's artefact needs
  ``torch.compile`` to be fast (73 ms uncompiled, 5.3 ms compiled) and keeps FP32 weight copies (53 MiB
  vs 10.8 MiB on disk).
* The cost: ``torch.ao.quantization`` is deprecated (the warning says "will be removed in 2.10", yet it
  works in 2.13). The deprecation warnings are silenced only around the prepare / convert calls that
  raise them (:func:`_quiet`), so everything else still warns. If a future torch removes it, this file
  is the one to port; its interface (``prepare_qat`` / ``convert`` / ``quantize_ptq``) stays.

Example:
    >>> from shrinkviz.models import create_model
    >>> model = create_model("tiny_cnn", input_shape=(1, 8, 8))
    >>> qat = prepare_qat(model)
    >>> _ = qat(torch.randn(16, 1, 8, 8))  # or train it: shrinkviz.loop.train.fit(qat, ...)
    >>> int8 = convert(qat)
    >>> is_int8(int8)
    True
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.ao.nn.quantized as nnq
import torch.ao.quantization as tq
from torch import nn

from shrinkviz.loop.masks import get_masks, set_masks
from shrinkviz.models.base import fusion_groups

BACKEND = "x86"
"""The quantized engine and qconfig family: x86 (fbgemm + oneDNN kernels, per-channel int8 weights)."""


class QuantizationError(RuntimeError):
    """A model cannot be quantized; the message names the layer and why."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the deprecation noise of ``torch.ao.quantization`` around the calls that raise it.

    torch 2.13 warns on every prepare/convert that eager quantization is deprecated, once per observer
    that ``reduce_range`` will be deprecated, and that quantized tensor creation is deprecated. Those
    warnings are about the backend we chose knowingly (see the module docstring), not about the user's
    code, so they are filtered here by message, and only here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning
        )
        warnings.filterwarnings("ignore", message=r"Please use quant_min and quant_max", category=UserWarning)
        warnings.filterwarnings(
            "ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel", category=UserWarning
        )
        yield


def _check_backend() -> None:
    if BACKEND not in torch.backends.quantized.supported_engines:
        raise QuantizationError(
            f"the {BACKEND!r} quantized engine is not available in this torch build "
            f"(available: {torch.backends.quantized.supported_engines})"
        )
    torch.backends.quantized.engine = BACKEND


def _set_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Re-attach pruning masks after fusion / QAT module swaps (names are kept: the fused module takes the
    first name of its group) and zero the masked weights."""
    if not masks:
        return
    try:
        set_masks(model, masks)
    except ValueError as exc:
        raise QuantizationError(f"pruning masks cannot be carried across fusion: {exc}") from exc


def _check_zeros(int8: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Every pruned weight of a masked float layer is exactly 0 in the INT8 layer of the same name."""
    weights = int8_weights(int8)
    for name, mask in masks.items():
        layer, _, attr = name.rpartition(".")
        if attr == "weight" and layer in weights and bool((weights[layer][~mask.cpu()] != 0).any()):
            raise QuantizationError(f"pruned weights of layer {layer!r} are not zero after INT8 conversion")


def _example(model: nn.Module, example_input: torch.Tensor | None) -> torch.Tensor:
    if example_input is not None:
        return example_input
    if hasattr(model, "example_input"):
        return model.example_input(2)
    raise QuantizationError(f"{type(model).__name__} has no example_input(); pass example_input=")


def _check_stubs(model: nn.Module) -> None:
    if not any(isinstance(m, tq.QuantStub) for m in model.modules()):
        raise QuantizationError(
            f"{type(model).__name__} has no QuantStub: eager INT8 needs quant/dequant stubs "
            "at the model's edges (every shrinkviz registry model has them)"
        )


def run_named(model: nn.Module, x: torch.Tensor, what: str) -> torch.Tensor:
    """Run ``model(x)``; if it raises, re-raise as :class:`QuantizationError` naming the innermost layer.

    Example:
        >>> run_named(nn.Sequential(nn.Linear(2, 3)), torch.zeros(1, 2), "float").shape
        torch.Size([1, 3])
    """
    stack: list[str] = []

    def enter(name: str) -> Any:
        return lambda *_: stack.append(name)

    def leave(*_: Any) -> None:
        stack.pop()

    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(enter(name)))
        handles.append(module.register_forward_hook(leave))
    try:
        with torch.no_grad():
            return model(x)
    except Exception as exc:  # noqa: BLE001 - any kernel error is reported with the layer it came from
        where = stack[-1] if stack else ""
        layer = dict(model.named_modules()).get(where, model)
        hint = (
            "a residual add or other arithmetic outside FloatFunctional, or a layer with no quantized "
            "kernel; use FloatFunctional / a fusable block, or wrap the layer in DeQuantStub/QuantStub"
        )
        raise QuantizationError(
            f"layer {where or '<model>'!r} ({type(layer).__name__}) fails in the {what} "
            f"model: {exc}. Likely cause: {hint}"
        ) from exc
    finally:
        for handle in handles:
            handle.remove()


def _sync_observers(module: nn.Module, args: tuple) -> None:
    """Forward pre-hook of a QAT model: observers learn ranges only in train mode.

    ``fit`` validates after every epoch and ``evaluate`` may be called on the test split; without this
    the moving-average observers would fold validation / test statistics into the quantization scales.
    """
    observing = module.training
    if getattr(module, "_sv_observing", None) != observing:
        module.apply(tq.enable_observer if observing else tq.disable_observer)
        module._sv_observing = observing


def is_qat(model: nn.Module) -> bool:
    """Whether the model holds fake-quant modules (prepared for QAT, not yet converted)."""
    return any(isinstance(m, tq.FakeQuantizeBase) for m in model.modules())


def is_int8(model: nn.Module) -> bool:
    """Whether the model is a converted INT8 model: quantized weighted layers and no float Conv/Linear."""
    quantized = any(isinstance(m, nnq.Conv2d | nnq.Linear) for m in model.modules())
    floating = any(type(m) in (nn.Conv2d, nn.Linear) for m in model.modules())
    return quantized and not floating


def int8_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The int8 weight tensors (``int_repr``) of every quantized Conv2d/Linear, keyed by module name.

    Example:
        >>> from shrinkviz.models import create_model
        >>> qat = prepare_qat(create_model("tiny_mlp", input_shape=(1, 8, 8)))
        >>> _ = qat(torch.randn(4, 1, 8, 8))
        >>> w = int8_weights(convert(qat))
        >>> sorted(w)[0], w[sorted(w)[0]].dtype
        ('classifier', torch.int8)
    """
    return {
        name: m.weight().int_repr()
        for name, m in model.named_modules()
        if isinstance(m, nnq.Conv2d | nnq.Linear)
    }


def _fuse(model: nn.Module, qat: bool) -> None:
    groups = fusion_groups(model)
    if groups:
        fuse = tq.fuse_modules_qat if qat else tq.fuse_modules
        fuse(model, groups, inplace=True)


def prepare_qat(
    model: nn.Module, *, example_input: torch.Tensor | None = None, inplace: bool = False, check: bool = True
) -> nn.Module:
    """Insert fake quantization (x86 QAT qconfig: per-channel symmetric int8 weights, uint8 activations).

    Fuses conv-bn(-relu) and linear-relu groups (BatchNorm is folded during QAT as in Jacob et al.),
    carries pruning masks to the fused modules, and makes observers learn only in train mode. The result
    trains with ``shrinkviz.loop.train.fit`` like any model.

    Args:
        model: a float model with QuantStub/DeQuantStub at its edges (all registry models).
        example_input: an input for the conversion check (default ``model.example_input(2)``).
        inplace: modify ``model`` instead of a deep copy.
        check: convert a throw-away copy and run it once, so a layer the INT8 backend cannot run is
            named now rather than after training.

    Raises:
        QuantizationError: no quant stubs, or a layer that cannot be quantized (named).

    Example:
        >>> from shrinkviz.models import create_model
        >>> is_qat(prepare_qat(create_model("tiny_cnn", input_shape=(1, 8, 8))))
        True
    """
    _check_backend()
    _check_stubs(model)
    if is_qat(model) or is_int8(model):
        raise QuantizationError("model is already prepared for QAT or converted to INT8")
    qat = model if inplace else copy.deepcopy(model)
    masks = get_masks(qat)
    qat.train()
    with _quiet():
        _fuse(qat, qat=True)
        qat.qconfig = tq.get_default_qat_qconfig(BACKEND)
        tq.prepare_qat(qat, inplace=True)
    _set_masks(qat, masks)
    qat.register_forward_pre_hook(_sync_observers)
    if check:
        trial = copy.deepcopy(qat).cpu()
        x = _example(model, example_input).cpu()
        trial.train()
        run_named(trial, x, "fake-quant")
        convert(trial, example_input=x, inplace=True)
    return qat


def _unobserved(model: nn.Module) -> str | None:
    """Name of the first activation observer that never saw data (weights are observed at conversion)."""
    for name, module in model.named_modules():
        if not isinstance(module, tq.ObserverBase) or "weight_fake_quant" in name:
            continue
        low = getattr(module, "min_val", None)
        if isinstance(low, torch.Tensor) and (low.numel() == 0 or bool(torch.isinf(low).all())):
            return name.replace(".activation_post_process", "") or "<model>"
    return None


def convert(
    qat_model: nn.Module, *, example_input: torch.Tensor | None = None, inplace: bool = False
) -> nn.Module:
    """Convert a QAT (or calibrated PTQ) model into a real INT8 model on the CPU.

    BatchNorm is folded into the int8 conv weights; pruned zeros stay exactly zero (folding scales a
    zero by the BN factor and int8 weights are symmetric, zero point 0) and this is verified against the
    masks. The result runs quantized kernels; evaluate it with ``shrinkviz.loop.train.evaluate`` on the CPU.

    Raises:
        QuantizationError: the activation observers have seen no data (the INT8 model would use
            placeholder scales), a layer fails under INT8 (named), or a pruned weight did not stay zero.

    Example:
        >>> from shrinkviz.models import create_model
        >>> qat = prepare_qat(create_model("lenet5", input_shape=(1, 28, 28)))
        >>> _ = qat(torch.randn(8, 1, 28, 28))  # training (shrinkviz.loop.train.fit) sets the ranges
        >>> int8_weights(convert(qat))["classifier"].dtype
        torch.int8
    """
    _check_backend()
    if not any(isinstance(m, tq.FakeQuantizeBase | tq.ObserverBase) for m in qat_model.modules()):
        raise QuantizationError("convert() needs a model from prepare_qat() or a calibrated PTQ model")
    unobserved = _unobserved(qat_model)
    if unobserved:
        raise QuantizationError(
            f"the activation observers of {unobserved!r} have seen no data, so their INT8 "
            "scales would be placeholders: train the QAT model (shrinkviz.loop.train.fit) or run "
            "calibration batches through it before convert()"
        )
    model = qat_model if inplace else copy.deepcopy(qat_model)
    masks = get_masks(model)
    model.cpu().eval()
    for hook_id, hook in list(model._forward_pre_hooks.items()):
        if hook is _sync_observers:
            del model._forward_pre_hooks[hook_id]
    with _quiet():
        tq.convert(model, inplace=True)
    run_named(model, _example(model, example_input).cpu(), "INT8")
    _check_zeros(model, masks)
    return model


def calibrate(prepared: nn.Module, data: Any, calib_batches: int, batch_size: int) -> None:
    """Run up to ``calib_batches`` batches of ``data`` through a model prepared for PTQ (its observers
    record ranges); ValueError when the data yields none."""
    seen = 0
    with torch.no_grad():
        for x in _calibration_batches(data, calib_batches, batch_size):
            run_named(prepared, x.cpu(), "calibration")
            seen += 1
    if seen == 0:
        raise ValueError("calibration data is empty")


def _calibration_batches(data: Any, calib_batches: int, batch_size: int) -> Iterator[torch.Tensor]:
    from shrinkviz.data import Dataset, Normalizer, batches

    if isinstance(data, Dataset):
        normalize = Normalizer(data.mean, data.std)
        for i, (x, _) in enumerate(batches(data.train, batch_size, normalize, torch.device("cpu"))):
            if i >= calib_batches:
                break
            yield x
    elif isinstance(data, torch.Tensor):
        yield from data.split(batch_size)[:calib_batches]
    elif isinstance(data, Iterable):
        for i, item in enumerate(data):
            if i >= calib_batches:
                break
            yield item[0] if isinstance(item, tuple | list) else item
    else:
        raise TypeError(
            f"calibration data must be a Dataset, a tensor or an iterable of batches, "
            f"got {type(data).__name__}"
        )


def quantize_ptq(
    model: nn.Module,
    data: Any,
    *,
    calib_batches: int = 32,
    batch_size: int = 128,
    example_input: torch.Tensor | None = None,
) -> nn.Module:
    """Post-training static quantization: fuse, observe ``calib_batches`` training batches, convert.

    The baseline QAT is judged against. Pruned zeros stay zero (BN folding and symmetric int8 weights).

    Args:
        model: a float model with quant stubs (not modified).
        data: a ``Dataset`` (its training split, unshuffled, normalised), a tensor of inputs, or an
            iterable of input batches / (input, label) pairs.
        calib_batches: batches to observe (>= 1).
        batch_size: batch size when slicing a Dataset or tensor.
        example_input: input for the conversion check.

    Example:
        >>> from shrinkviz.models import create_model
        >>> m = create_model("tiny_cnn", input_shape=(1, 8, 8))
        >>> is_int8(quantize_ptq(m, torch.randn(64, 1, 8, 8), calib_batches=2, batch_size=32))
        True
    """
    if calib_batches < 1:
        raise ValueError(f"calib_batches={calib_batches}: must be >= 1")
    _check_backend()
    _check_stubs(model)
    if is_qat(model) or is_int8(model):
        raise QuantizationError("quantize_ptq() needs a float model")
    ptq = copy.deepcopy(model).cpu().eval()
    masks = get_masks(ptq)
    with _quiet():
        _fuse(ptq, qat=False)
        ptq.qconfig = tq.get_default_qconfig(BACKEND)
        tq.prepare(ptq, inplace=True)
    calibrate(ptq, data, calib_batches, batch_size)
    int8 = convert(ptq, example_input=_example(model, example_input), inplace=True)
    _check_zeros(int8, masks)
    return int8

"""What every registry model shares: a declared input shape (checked on every call), quant/dequant
stubs at the edges, quantization-aware residual adds, and blocks whose conv-bn-relu groups can be
fused, so that eager-mode INT8 QAT works on every architecture without edits.

Example:
    >>> import torch
    >>> from shrinkviz.models.base import ConvBNAct
    >>> block = ConvBNAct(3, 8, 3, padding=1)
    >>> block(torch.zeros(2, 3, 8, 8)).shape
    torch.Size([2, 8, 8, 8])
"""

from __future__ import annotations

import torch
from torch import nn
from torch.ao.nn.quantized import FloatFunctional
from torch.ao.quantization import DeQuantStub, QuantStub
from torch.nn.modules import module as torch_module


class InputShapeError(ValueError):
    """A model was called with an input shape it was not built for."""


def _check_input(module: ShrinkNet, args: tuple) -> None:
    x = args[0]
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != module.input_shape:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputShapeError(
            f"{module.arch} expects inputs of shape (N, {', '.join(map(str, module.input_shape))}), got {got}; "
            f"build it for your data with create_model({module.arch!r}, input_shape=...)"
        )


class ShrinkNet(nn.Module):
    """Base of registry models: ``forward = dequant(head(features(quant(x))))``.

    Subclasses set ``self.features`` (a module from images to a flat or pooled tensor) and
    ``self.classifier`` (the final layer, excluded from pruning by default).
    """

    arch: str = "net"

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        if len(input_shape) != 3 or min(input_shape) < 1:
            raise ValueError(f"input_shape={input_shape}: must be (channels, height, width), all positive")
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes}: must be at least 2")
        self.input_shape = tuple(int(v) for v in input_shape)
        self.num_classes = int(num_classes)
        self.quant = QuantStub()
        self.dequant = DeQuantStub()
        self.register_forward_pre_hook(_check_input)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quant(x)
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.dequant(self.classifier(x))

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """A random input of the shape the model takes."""
        return torch.randn(batch, *self.input_shape)


class ConvBNAct(nn.Module):
    """Conv2d -> optional BatchNorm2d -> optional ReLU; fusable as one unit."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        padding: int = 0,
        bn: bool = True,
        act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=not bn)
        self.bn = nn.BatchNorm2d(cout) if bn else None
        self.act = nn.ReLU() if act else None

    def pre_act(self, x: torch.Tensor) -> torch.Tensor:
        """Conv, then BatchNorm when there is one: the block without its activation."""
        x = self.conv(x)
        return self.bn(x) if self.bn is not None else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre_act(x)
        return self.act(x) if self.act is not None else x


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_GLOBAL_HOOK_DICTS = tuple(f"_global{name}" for name in _HOOK_DICTS)


def _hooked(*modules: nn.Module) -> bool:
    """Whether a hook (on these modules, or on every module) would see the difference in order."""
    if any(getattr(torch_module, name, None) for name in _GLOBAL_HOOK_DICTS):
        return True
    return any(getattr(m, name, None) for m in modules for name in _HOOK_DICTS)


def _tracing() -> bool:
    import torch.fx._symbolic_trace as fx_trace

    return (
        fx_trace.is_fx_symbolic_tracing()
        or torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
        or torch.compiler.is_exporting()
    )


class Features(nn.Sequential):
    """``nn.Sequential`` that, in a training step, applies a :class:`ConvBNAct`'s ReLU after the
    ``MaxPool2d`` that follows it instead of before.

    Max-pooling commutes with ReLU exactly (``max(relu(a)) == relu(max(a))``, and the gradient reaches the
    same element with the same value), so the weights a training run produces are bit-identical; the
    ReLU and its backward then run on a quarter of the elements, and the full-size activation is neither
    kept nor masked. MnistNet channels-last, batch 128, one AMD EPYC core: 0.88x the written order's
    epoch (``benchmarks/bench_fit.py``, ``bare_channels_last`` against ``bare_relu_before_pool``).

    The written order is kept whenever anything could see the difference: in evaluation mode or without
    gradients (inference, latency, export), while FX / TorchScript tracing or ONNX export records the
    graph (INT8 fusion patterns read it), when a hook is registered on the block, its ReLU or the pool
    (activation statistics, observers), and when the activation is anything but a plain ``nn.ReLU``
    (fused for quantization, or another function).

    Example:
        >>> net = Features(ConvBNAct(1, 4, 3, bn=False), nn.MaxPool2d(2))
        >>> x = torch.randn(2, 1, 8, 8)
        >>> torch.equal(net(x), net[1](net[0](x)))
        True
    """

    def _pool_next(self, block: nn.Module, after: nn.Module | None) -> bool:
        return (
            type(block) is ConvBNAct
            and type(block.act) is nn.ReLU
            and type(after) is nn.MaxPool2d
            and not _hooked(block, block.act, after)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        modules = list(self._modules.values())
        reorder = self.training and torch.is_grad_enabled() and not _tracing()
        i = 0
        while i < len(modules):
            block, after = modules[i], modules[i + 1] if i + 1 < len(modules) else None
            if reorder and self._pool_next(block, after):
                x = block.act(after(block.pre_act(x)))
                i += 2
            else:
                x = block(x)
                i += 1
        return x


class LinearAct(nn.Module):
    """Linear -> ReLU; fusable as one unit."""

    def __init__(self, fin: int, fout: int) -> None:
        super().__init__()
        self.linear = nn.Linear(fin, fout)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.linear(x))


class Residual(nn.Module):
    """``act(body(x) + shortcut(x))`` with a quantization-aware add (FloatFunctional)."""

    def __init__(self, body: nn.Module, shortcut: nn.Module | None, act: bool = True) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.add = FloatFunctional()
        self.act = nn.ReLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.add.add(self.body(x), self.shortcut(x)))


def fusion_groups(model: nn.Module) -> list[list[str]]:
    """Qualified module names to fuse for eager-mode quantization: conv-bn(-relu), conv-relu, linear-relu.

    Example:
        >>> fusion_groups(nn.Sequential(ConvBNAct(1, 2, 3)))
        [['0.conv', '0.bn', '0.act']]
    """
    groups: list[list[str]] = []
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, ConvBNAct):
            group = [prefix + "conv"] + [
                prefix + part for part in ("bn", "act") if getattr(module, part) is not None
            ]
            if len(group) > 1:
                groups.append(group)
        elif isinstance(module, LinearAct):
            groups.append([prefix + "linear", prefix + "act"])
    return groups

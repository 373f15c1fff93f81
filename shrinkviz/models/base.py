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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.act is not None:
            x = self.act(x)
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

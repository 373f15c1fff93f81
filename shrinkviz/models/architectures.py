"""The standard architectures of pruning papers, written once on the shared blocks of ``base``.

All take any input channels, resolution and class count. Residual shortcuts that change shape use a
1x1 conv + BN projection (He et al.'s option B) rather than zero-padding, because a projection is
fusable and quantizable in every backend; this adds ~2% parameters to the CIFAR ResNets. WRN-28-10 is
written in the post-activation (conv-bn-relu) form for the same reason.

Example:
    >>> from shrinkviz.models.architectures import CifarResNet
    >>> sum(p.numel() for p in CifarResNet(20).parameters())  # 269,722 with zero-padded shortcuts
    272474
"""

from __future__ import annotations

import torch
from torch import nn

from shrinkviz.models.base import ConvBNAct, Features, LinearAct, Residual, ShrinkNet


def _flat_size(features: nn.Module, input_shape: tuple[int, int, int], arch: str) -> int:
    try:
        with torch.no_grad():
            return int(features(torch.zeros(1, *input_shape)).numel())
    except RuntimeError as exc:
        raise ValueError(f"{arch} cannot take inputs of shape {input_shape}: {exc}") from exc


class MnistNet(ShrinkNet):
    """ShrinkBench's MNIST network: two unpadded 5x5 convs with max-pooling, then 500-unit and output
    fully connected layers (2.29M MACs on 28x28, not the 4.40M ShrinkBench reported)."""

    arch = "mnistnet"

    def __init__(self, input_shape=(1, 28, 28), num_classes=10) -> None:
        super().__init__(input_shape, num_classes)
        features = nn.Sequential(
            ConvBNAct(input_shape[0], 20, 5, bn=False),
            nn.MaxPool2d(2),
            ConvBNAct(20, 50, 5, bn=False),
            nn.MaxPool2d(2),
        )
        flat = _flat_size(features, self.input_shape, self.arch)
        self.features = Features(*features, nn.Flatten(), LinearAct(flat, 500))
        self.classifier = nn.Linear(500, num_classes)


class LeNet5(ShrinkNet):
    """LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling: a padded 5x5 conv, an unpadded 5x5 conv,
    then 120-84-classes fully connected layers."""

    arch = "lenet5"

    def __init__(self, input_shape=(1, 28, 28), num_classes=10) -> None:
        super().__init__(input_shape, num_classes)
        features = nn.Sequential(
            ConvBNAct(input_shape[0], 6, 5, padding=2, bn=False),
            nn.MaxPool2d(2),
            ConvBNAct(6, 16, 5, bn=False),
            nn.MaxPool2d(2),
        )
        flat = _flat_size(features, self.input_shape, self.arch)
        self.features = Features(*features, nn.Flatten(), LinearAct(flat, 120), LinearAct(120, 84))
        self.classifier = nn.Linear(84, num_classes)


def basic_block(cin: int, cout: int, stride: int) -> Residual:
    """Two 3x3 conv-bn layers with a residual connection (projection when the shape changes)."""
    body = nn.Sequential(ConvBNAct(cin, cout, 3, stride, 1), ConvBNAct(cout, cout, 3, 1, 1, act=False))
    shortcut = ConvBNAct(cin, cout, 1, stride, act=False) if stride != 1 or cin != cout else None
    return Residual(body, shortcut)


def _stages(stem: int, widths: list[int], blocks: int, first_stride: int = 1) -> list[nn.Module]:
    layers: list[nn.Module] = []
    cin = stem
    for i, width in enumerate(widths):
        for j in range(blocks):
            stride = (first_stride if i == 0 else 2) if j == 0 else 1
            layers.append(basic_block(cin, width, stride))
            cin = width
    return layers


class CifarResNet(ShrinkNet):
    """He et al. (2016) CIFAR ResNet of depth 6n+2 (20, 32, 44, 56, 110): stages of 16/32/64 channels."""

    def __init__(self, depth: int, input_shape=(3, 32, 32), num_classes=10, width: int = 16) -> None:
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"depth={depth}: a CIFAR ResNet has depth 6n+2 (8, 20, 32, 44, 56, 110)")
        self.arch = f"resnet{depth}"
        super().__init__(input_shape, num_classes)
        n = (depth - 2) // 6
        self.features = nn.Sequential(
            ConvBNAct(input_shape[0], width, 3, 1, 1),
            *_stages(width, [width, 2 * width, 4 * width], n),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(4 * width, num_classes)


class ResNet18Cifar(ShrinkNet):
    """ResNet-18 with the CIFAR stem (3x3 conv, stride 1, no max-pool): 11.2M parameters."""

    arch = "resnet18"

    def __init__(self, input_shape=(3, 32, 32), num_classes=10) -> None:
        super().__init__(input_shape, num_classes)
        self.features = nn.Sequential(
            ConvBNAct(input_shape[0], 64, 3, 1, 1),
            *_stages(64, [64, 128, 256, 512], 2),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(512, num_classes)


class WideResNet(ShrinkNet):
    """Wide ResNet (Zagoruyko & Komodakis 2016) of depth 6n+4 and widen factor k (WRN-28-10: 36.5M)."""

    def __init__(self, depth: int = 28, widen: int = 10, input_shape=(3, 32, 32), num_classes=10) -> None:
        if (depth - 4) % 6 != 0:
            raise ValueError(f"depth={depth}: a Wide ResNet has depth 6n+4 (16, 22, 28, 40)")
        self.arch = f"wrn{depth}_{widen}"
        super().__init__(input_shape, num_classes)
        widths = [16 * widen, 32 * widen, 64 * widen]
        self.features = nn.Sequential(
            ConvBNAct(input_shape[0], 16, 3, 1, 1),
            *_stages(16, widths, (depth - 4) // 6),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(widths[-1], num_classes)


_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG16BN(ShrinkNet):
    """VGG-16 with BatchNorm, CIFAR variant (one linear classifier over 512 pooled features).

    Max-pools use ``ceil_mode`` so inputs smaller than 32x32 (e.g. 28x28) still reach 1x1."""

    arch = "vgg16_bn"

    def __init__(self, input_shape=(3, 32, 32), num_classes=10) -> None:
        super().__init__(input_shape, num_classes)
        layers: list[nn.Module] = []
        cin = input_shape[0]
        for v in _VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                layers.append(ConvBNAct(cin, int(v), 3, 1, 1))
                cin = int(v)
        self.features = Features(*layers, nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(512, num_classes)


class TinyCNN(ShrinkNet):
    """A registered test net (~1k parameters): conv-bn-relu, one residual block, pooled linear head.
    Tests walk the same code paths as real runs with it."""

    arch = "tiny_cnn"

    def __init__(self, input_shape=(1, 8, 8), num_classes=10, width: int = 8) -> None:
        super().__init__(input_shape, num_classes)
        self.features = nn.Sequential(
            ConvBNAct(input_shape[0], width, 3, 1, 1),
            basic_block(width, width, 1),
            basic_block(width, 2 * width, 2),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(2 * width, num_classes)


class TinyMLP(ShrinkNet):
    """A registered test net: flatten, one hidden layer, linear head."""

    arch = "tiny_mlp"

    def __init__(self, input_shape=(1, 8, 8), num_classes=10, hidden: int = 32) -> None:
        super().__init__(input_shape, num_classes)
        c, h, w = self.input_shape
        self.features = nn.Sequential(nn.Flatten(), LinearAct(c * h * w, hidden))
        self.classifier = nn.Linear(hidden, num_classes)

"""The architecture registry.

Example:
    >>> from shrinkviz.models import create_model
    >>> model = create_model("resnet20", input_shape=(1, 28, 28), num_classes=10)
    >>> model.arch, model.input_shape
    ('resnet20', (1, 28, 28))
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from shrinkviz.models import architectures as A
from shrinkviz.models.base import ConvBNAct, InputShapeError, LinearAct, Residual, ShrinkNet, fusion_groups

_REGISTRY: dict[str, Callable[..., ShrinkNet]] = {
    "mnistnet": A.MnistNet,
    "lenet5": A.LeNet5,
    "resnet8": partial(A.CifarResNet, 8),
    "resnet20": partial(A.CifarResNet, 20),
    "resnet32": partial(A.CifarResNet, 32),
    "resnet44": partial(A.CifarResNet, 44),
    "resnet56": partial(A.CifarResNet, 56),
    "resnet110": partial(A.CifarResNet, 110),
    "resnet18": A.ResNet18Cifar,
    "vgg16_bn": A.VGG16BN,
    "wrn28_10": partial(A.WideResNet, 28, 10),
    "tiny_cnn": A.TinyCNN,
    "tiny_mlp": A.TinyMLP,
}

TEST_MODELS = ("tiny_cnn", "tiny_mlp")
"""Registered test nets: small enough for unit tests, built from the same blocks as the real ones."""


def available_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(_REGISTRY)


def register_model(name: str, builder: Callable[..., ShrinkNet], overwrite: bool = False) -> None:
    """Add an architecture: ``builder(input_shape=..., num_classes=...)`` must return a ShrinkNet."""
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"model {name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[name] = builder


def create_model(
    name: str,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    num_classes: int = 10,
    dataset=None,
    seed: int | None = None,
    **kwargs,
) -> ShrinkNet:
    """Build a registry model for an input shape and class count (or for a ``Dataset``).

    ``seed`` makes the initial weights reproducible without touching the global RNG.

    Raises:
        ValueError: unknown name (listing valid ones) or a shape the architecture cannot take.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(available_models())}")
    if dataset is not None:
        input_shape, num_classes = dataset.input_shape, dataset.num_classes
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = _REGISTRY[name](input_shape=tuple(input_shape), num_classes=num_classes, **kwargs)
    model.arch = name
    return model


__all__ = [
    "ConvBNAct",
    "InputShapeError",
    "LinearAct",
    "Residual",
    "ShrinkNet",
    "TEST_MODELS",
    "available_models",
    "create_model",
    "fusion_groups",
    "register_model",
]

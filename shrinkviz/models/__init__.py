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
from typing import Any

import torch
from torch import nn

from shrinkviz.core.registry import Registry
from shrinkviz.models import architectures as A
from shrinkviz.models.base import ConvBNAct, InputShapeError, LinearAct, Residual, ShrinkNet, fusion_groups

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
"""Architectures by name: ``builder(input_shape=..., num_classes=..., **kwargs) -> nn.Module``."""
MODELS.register("mnistnet", A.MnistNet)
MODELS.register("lenet5", A.LeNet5)
MODELS.register("resnet8", partial(A.CifarResNet, 8))
MODELS.register("resnet20", partial(A.CifarResNet, 20))
MODELS.register("resnet32", partial(A.CifarResNet, 32))
MODELS.register("resnet44", partial(A.CifarResNet, 44))
MODELS.register("resnet56", partial(A.CifarResNet, 56))
MODELS.register("resnet110", partial(A.CifarResNet, 110))
MODELS.register("resnet18", A.ResNet18Cifar)
MODELS.register("vgg16_bn", A.VGG16BN)
MODELS.register("wrn28_10", partial(A.WideResNet, 28, 10))
MODELS.register("tiny_cnn", A.TinyCNN)
MODELS.register("tiny_mlp", A.TinyMLP)

TEST_MODELS = ("tiny_cnn", "tiny_mlp")
"""Registered test nets: small enough for unit tests, built from the same blocks as the real ones."""


def available_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return MODELS.names()


def register_model(
    name: str, builder: Callable[..., nn.Module] | None = None, *, overwrite: bool = False
) -> Any:
    """Add an architecture (usable as a decorator); it is then available to :func:`create_model`, the zoo,
    experiments, sweeps and the CLI.

    ``builder(input_shape=(C, H, W), num_classes=N, **kwargs)`` returns the model; a
    :class:`~shrinkviz.models.base.ShrinkNet` gets fusion groups for INT8 and structured pruning, any other
    ``nn.Module`` works for pruning, counting and training.

    Example:
        >>> from torch import nn
        >>> @register_model("example_linear", overwrite=True)
        ... def linear(input_shape, num_classes):
        ...     return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0] * input_shape[1] * input_shape[2], num_classes))
        >>> create_model("example_linear", input_shape=(1, 8, 8)).arch
        'example_linear'
        >>> MODELS.unregister("example_linear")
    """
    if builder is None:
        return lambda fn: register_model(name, fn, overwrite=overwrite)
    if not callable(builder):
        raise TypeError(f"model {name!r}: builder must be callable(input_shape=..., num_classes=...)")
    return MODELS.register(name, builder, overwrite=overwrite)


def create_model(
    name: str,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    num_classes: int = 10,
    dataset=None,
    seed: int | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registry model for an input shape and class count (or for a ``Dataset``).

    ``seed`` makes the initial weights reproducible without touching the global RNG.

    Raises:
        ValueError: unknown name (listing valid ones) or a shape the architecture cannot take.
    """
    builder = MODELS.get(name)
    if dataset is not None:
        input_shape, num_classes = dataset.input_shape, dataset.num_classes
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = builder(input_shape=tuple(input_shape), num_classes=num_classes, **kwargs)
    model.arch = name
    if getattr(model, "input_shape", None) is None:  # a plain nn.Module: the registry knows its input
        model.input_shape = tuple(input_shape)
    return model


__all__ = [
    "ConvBNAct",
    "MODELS",
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

"""Device choice and deterministic seeding.

Example:
    >>> import os, torch
    >>> from shrinkviz.core.device import default_device, seed_everything
    >>> saved = os.environ.pop("SHRINKVIZ_DEVICE", None)
    >>> default_device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    True
    >>> os.environ["SHRINKVIZ_DEVICE"] = "cpu"
    >>> default_device()
    device(type='cpu')
    >>> _ = os.environ.pop("SHRINKVIZ_DEVICE") if saved is None else os.environ.update(SHRINKVIZ_DEVICE=saved)
    >>> _ = seed_everything(3); first = torch.rand(2)
    >>> _ = seed_everything(3); torch.equal(first, torch.rand(2))
    True
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

DEVICE_ENV = "SHRINKVIZ_DEVICE"


def default_device() -> torch.device:
    """CUDA when present, else CPU; ``$SHRINKVIZ_DEVICE`` overrides (e.g. ``cpu`` on a GPU machine)."""
    forced = os.environ.get(DEVICE_ENV)
    if forced:
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Turn ``None`` / a string / a device into a ``torch.device``."""
    return default_device() if device is None else torch.device(device)


def model_device(model: torch.nn.Module) -> torch.device:
    """Where ``model`` lives: the device of its first parameter or buffer (CPU for a model with neither).

    Example:
        >>> model_device(torch.nn.Linear(2, 2)).type
        'cpu'
    """
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator seeded with ``seed`` for explicit use."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)

"""torchvision compatibility, confined to this one module.

The registry's only torchvision 0.28.0 build is CUDA-linked. Against the CPU torch 2.13 wheel its
compiled extension does not load, and ``import torchvision`` fails while registering fake kernels
with "operator torchvision::nms does not exist" (upstream pytorch/vision#9085). Declaring the two op
schemas it registers against (``torchvision::nms`` and ``torchvision::qnms``) before the import lets the
import finish: models, ``transforms.v2`` and datasets work; ``torchvision.ops`` and ``torchvision.io``
stay broken (their kernels are in the missing extension). Nothing in shrinkviz's core imports
torchvision; this is for users who want torchvision models or transforms.

Example:
    >>> from shrinkviz.core.compat import import_torchvision
    >>> tv = import_torchvision()
    >>> sum(p.numel() for p in tv.models.resnet18(num_classes=10).parameters())
    11181642
    >>> from torchvision.transforms import v2
    >>> v2.RandomHorizontalFlip(p=1.0)(torch.arange(4.0).reshape(1, 2, 2)).flatten().tolist()
    [1.0, 0.0, 3.0, 2.0]
"""

from __future__ import annotations

import sys
from types import ModuleType

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library: torch.library.Library | None = None  # kept alive: dropping it would unregister the schemas


def _declare_missing_schemas() -> None:
    global _library
    missing = [name for name in _SCHEMAS if not _schema_exists(name)]
    if not missing:
        return
    _library = torch.library.Library("torchvision", "DEF")  # noqa: TID251 - the documented workaround
    for name in missing:
        _library.define(_SCHEMAS[name])


def _schema_exists(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


def import_torchvision() -> ModuleType:
    """Import torchvision, working around the CUDA-only build when needed.

    Raises:
        ImportError: torchvision is not installed (``pip install -c constraints.txt -e .[torchvision]``).
    """
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"]
    try:
        import torchvision  # noqa: F401 - a working build (e.g. CUDA torch) needs no workaround

        return sys.modules["torchvision"]
    except ModuleNotFoundError as exc:
        raise ImportError(
            "torchvision is not installed: pip install -c constraints.txt -e '.[torchvision]'"
        ) from exc
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # drop the half-imported package before retrying
    _declare_missing_schemas()
    import torchvision

    return torchvision

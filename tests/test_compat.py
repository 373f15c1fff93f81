"""The torchvision workaround: the registry's CUDA-only build imports against CPU torch through
shrinkviz.core.compat, in a fresh interpreter so the state of this one does not matter."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is None, reason="torchvision (optional extra) is not installed"
)


def test_import_torchvision_gives_working_models_and_transforms():
    code = (
        "import torch\n"
        "from shrinkviz.core.compat import import_torchvision\n"
        "tv = import_torchvision()\n"
        "m = tv.models.resnet18(num_classes=7).eval()\n"
        "from torchvision.transforms import v2\n"
        "x = v2.RandomHorizontalFlip(p=1.0)(torch.arange(4.).reshape(1, 1, 2, 2))\n"
        "print(tuple(m(torch.zeros(1, 3, 32, 32)).shape), x.flatten().tolist())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "(1, 7) [1.0, 0.0, 3.0, 2.0]"

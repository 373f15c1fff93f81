"""INT8 for models that are not in the registry: torchvision, timm and a hand-written net.

Tolerance (stated once): on BatchNorm-calibrated random weights, INT8 logits are within 15% relative L2
error of the FP32 logits, whichever runtime runs them (PyTorch eager, TorchScript freeze, ONNX Runtime
QDQ); TorchScript matches eager within 5% (same kernels). ONNX Runtime rounds differently (a few output
quantization steps), so it is held to the FP32 tolerance.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import shrinkviz as sv
from shrinkviz.core.compat import import_torchvision
from shrinkviz.deploy.export import export_onnx, onnx_session, torchscript
from shrinkviz.loop.masks import get_masks
from shrinkviz.techniques.quant import QuantizationError, int8_weights, is_int8

INT8_TOL = 0.15
RUNTIME_TOL = 0.05


class HandNet(nn.Module):
    """Functional ops, a residual add, depthwise and grouped convs, no stubs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.dw, self.bn2 = nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16)
        self.gc, self.bn3 = nn.Conv2d(16, 32, 3, stride=2, padding=1, groups=4), nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stem(x)))
        x = x + F.relu(self.bn2(self.dw(x)))
        x = F.relu(self.bn3(self.gc(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "hand":
        model = HandNet()
    elif name == "resnet10t":
        timm = pytest.importorskip("timm")
        model = timm.create_model("resnet10t", num_classes=10)
    else:
        model = getattr(import_torchvision().models, name)(num_classes=10)
    model.train()
    with torch.no_grad():  # realistic BatchNorm statistics for random weights
        for batch in torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(1)).split(16):
            model(batch)
    return model.eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _zeros_kept(pruned: nn.Module, int8: nn.Module) -> None:
    weights, masks = int8_weights(int8), get_masks(pruned)
    assert masks and {name.rpartition(".")[0] for name in masks} <= set(weights)
    for name, mask in masks.items():
        assert int(weights[name.rpartition(".")[0]][~mask].count_nonzero()) == 0, name


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "resnet10t", "hand"])
def test_ptq_of_own_models_keeps_zeros_matches_fp32_and_deploys(name):
    pruned = sv.prune(_model(name), strategy="layer_weight", compression=2).model
    calib = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    int8 = sv.quantize(pruned, calib, "ptq", calib_batches=4).model  # shape taken from the data
    assert is_int8(int8) and int8.input_shape == (3, 32, 32)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in int8.modules())  # folded
    _zeros_kept(pruned, int8)
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref, out = pruned(x), int8(x)
        assert _rel(out, ref) < INT8_TOL
        assert _rel(torchscript(int8, batch=8)(x), out) < RUNTIME_TOL
    with tempfile.TemporaryDirectory() as tmp:
        session = onnx_session(export_onnx(int8, Path(tmp) / "m.onnx"))
        ort_out = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    assert _rel(ort_out, ref) < INT8_TOL


def _tensor_data() -> sv.data.Dataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (96,), generator=g)
    return sv.data.from_tensors("own_qat", images[:80], labels[:80], images[80:], labels[80:], num_classes=10)


@pytest.mark.parametrize("name", ["hand", "resnet18"])
def test_qat_of_own_models_trains_in_the_loop_and_keeps_zeros(name):
    pruned = sv.prune(_model(name), strategy="global_weight", compression=2).model
    cfg = sv.TrainConfig.preset("adam_fast").replace(epochs=1, batch_size=32)
    res = sv.quantize(pruned, _tensor_data(), "qat", cfg=cfg, progress=False)
    assert is_int8(res.model) and [row["stage"] for row in res.history] == ["Q"]
    assert res.history[0]["sparsity"] >= 0.49  # masks enforced while training the fake-quant graph
    _zeros_kept(pruned, res.model)


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if x.sum() > 0 else -self.fc(x)


def test_untraceable_model_and_missing_shape_get_one_line_errors():
    with pytest.raises(QuantizationError, match=r"cannot be traced.*data-dependent") as info:
        sv.quantize(Branchy(), torch.randn(8, 4), "ptq")
    assert "\n" not in str(info.value)
    with pytest.raises(QuantizationError, match=r"pass example_input="):
        sv.quantize(HandNet(), [torch.randn(2, 3, 8, 8)], "ptq")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert is_int8(
            sv.quantize(
                HandNet(), [torch.randn(2, 3, 8, 8)], "ptq", example_input=torch.randn(2, 3, 8, 8)
            ).model
        )

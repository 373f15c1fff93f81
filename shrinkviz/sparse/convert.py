"""Turn a model's sparse Conv2d / Linear layers into sparse-kernel modules where that is faster.

FP32 models are first fused for inference on a copy (conv-bn(-relu), conv-relu, linear-relu, the BN
folded into the conv weights, as ONNX Runtime does), so a fused ReLU runs inside the kernel's epilogue.
INT8 models (``torch.ao`` eager-converted) have their ``quantized.Conv2d`` / ``ConvReLU2d`` / ``Linear`` /
``LinearReLU`` layers considered. Every candidate that has zero weights is timed dense and sparse on its
real input (:mod:`shrinkviz.sparse.autotune`) and the faster form is kept, so the converted model is not
slower than dense by more than timing noise. An INT8 conv whose weights come in 1x4 blocks along input
channels, on a CPU with AVX512-VNNI, first has its two sparse kernels timed against each other (the
1x4-block ``b4i8`` and the FP32-lane one) and keeps the faster before facing dense. Each layer's outcome is a :class:`LayerNote` in the
:class:`SparseReport`.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 4))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.mul_(torch.rand_like(net[0].weight) < 0.1)
    >>> timer = lambda dense, sparse: (1.0, 0.5)  # injected timings; by default each layer is timed
    >>> fast, report = convert(net, torch.zeros(1, 3, 6, 6), timer=timer, cache=False)  # doctest: +SKIP
    >>> report.summary()  # doctest: +SKIP
    'sparse: 1/2 layers sparse (FP32)'
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from shrinkviz.deploy.errors import LatencyError
from shrinkviz.sparse import autotune
from shrinkviz.sparse.build import load
from shrinkviz.sparse.fuse import fuse_residuals, unwrap
from shrinkviz.sparse.modules import SparseConv2d, SparseLinear


class SparseConversionError(LatencyError):
    """The model cannot run on the sparse runtime (the message says why and what to do)."""


@dataclass(frozen=True)
class LayerNote:
    """What happened to one conv / linear layer: ``choice`` is ``sparse`` or ``dense``, ``reason`` why."""

    name: str
    kind: str
    density: float
    choice: str
    reason: str
    dense_ms: float | None = None
    sparse_ms: float | None = None


@dataclass
class SparseReport:
    """The conversion's outcome: one note per conv / linear layer, in module order."""

    dtype: str
    notes: list[LayerNote] = field(default_factory=list)

    @property
    def sparse_layers(self) -> list[str]:
        """Names of the layers that run on the sparse kernels."""
        return [n.name for n in self.notes if n.choice == "sparse"]

    def summary(self) -> str:
        """``"sparse: 17/20 layers sparse (FP32)"``."""
        return f"sparse: {len(self.sparse_layers)}/{len(self.notes)} layers sparse ({self.dtype.upper()})"

    def table(self) -> list[dict]:
        """The notes as dicts (``pandas.DataFrame(report.table())`` for a table)."""
        return [n.__dict__.copy() for n in self.notes]


def _kinds() -> dict[type, tuple[str, str, bool]]:
    """Module type -> (kind, dtype, fused relu), most specific types first."""
    import torch.ao.nn.intrinsic as nni
    import torch.ao.nn.intrinsic.quantized as nniq
    import torch.ao.nn.quantized as nnq

    return {
        nniq.ConvReLU2d: ("conv", "int8", True),
        nniq.LinearReLU: ("linear", "int8", True),
        nnq.Conv2d: ("conv", "int8", False),
        nnq.Linear: ("linear", "int8", False),
        nni.ConvReLU2d: ("conv", "fp32", True),
        nni.LinearReLU: ("linear", "fp32", True),
        nn.Conv2d: ("conv", "fp32", False),
        nn.Linear: ("linear", "fp32", False),
    }


def _classify(module: nn.Module) -> tuple[str, str, bool] | None:
    for cls, kind in _kinds().items():
        if type(module) is cls:
            return kind
    return None


def _dense_weight(module: nn.Module, dtype: str) -> torch.Tensor:
    if dtype == "int8":
        return module.weight().int_repr()
    inner = module[0] if isinstance(module, nn.Sequential) else module
    return inner.weight.detach()


def _sparse_module(module: nn.Module, kind: str, dtype: str, relu: bool) -> nn.Module:
    cls = SparseConv2d if kind == "conv" else SparseLinear
    if dtype == "int8":
        return cls.from_quantized(module, relu=relu)
    inner = module[0] if isinstance(module, nn.Sequential) else module
    return cls.from_dense(inner, relu=relu)


def _geometry(module: nn.Module, kind: str, x: torch.Tensor) -> str:
    inner = module[0] if isinstance(module, nn.Sequential) else module
    if kind == "linear":
        return f"in={inner.in_features},out={inner.out_features},batch={x.reshape(-1, x.shape[-1]).shape[0]}"
    return (
        f"in={'x'.join(map(str, x.shape))},out={inner.out_channels},k={inner.kernel_size},"
        f"s={inner.stride},p={inner.padding},d={inner.dilation},g={inner.groups}"
    )


def _fused_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy with conv-bn(-relu) / linear-relu fused (registry models' fusable units)."""
    from torch.ao.quantization import fuse_modules

    from shrinkviz.models.base import ConvBNAct, fusion_groups

    work = copy.deepcopy(model).eval()
    groups = fusion_groups(work)
    if groups:
        fuse_modules(work, groups, inplace=True)
    for module in work.modules():  # fusion leaves Identity in place of bn / act: skip their calls
        if isinstance(module, ConvBNAct):
            module.bn = None if isinstance(module.bn, nn.Identity) else module.bn
            module.act = None if isinstance(module.act, nn.Identity) else module.act
    return work


def _inputs(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each named module's input on one forward pass of ``x``."""
    seen: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(n).register_forward_pre_hook(lambda _m, args, n=n: seen.setdefault(n, args[0]))
        for n in names
    ]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def convert(
    model: nn.Module,
    x: torch.Tensor,
    *,
    timer: autotune.Timer | None = None,
    cache: autotune.DecisionCache | None | bool = True,
) -> tuple[nn.Module, SparseReport]:
    """A copy of ``model`` whose sparse conv / linear layers run on the sparse kernels where faster.

    Args:
        model: an FP32 model or an eager-converted INT8 model (``shrinkviz.techniques.quant.convert``).
        x: an example input of the shape it will be run on (layers are timed and packed for it).
        timer: injected ``timer(dense, sparse) -> (dense_s, sparse_s)`` for the per-layer choice; ``dense`` and
            ``sparse`` are ``functools.partial(module, layer_input)`` (``.func`` is the module).
        cache: a :class:`~shrinkviz.sparse.autotune.DecisionCache`, True for the default one, or
            False / None to time every layer and record nothing.

    Returns:
        ``(converted model in eval mode, SparseReport)``; ``model`` itself is not modified. The
        converted model also loses the wrappers and residual adds the kernels absorb, FP32 and INT8
        (:mod:`shrinkviz.sparse.fuse`); the report's layer names are those of ``model``.

    Raises:
        SparseUnavailableError: the kernels cannot be built here (the reason is the message).
        SparseConversionError: a dtype the kernels do not cover, or no layer with zero weights.
    """
    from shrinkviz.deploy.forms import model_dtype

    load()
    try:
        dtype = model_dtype(model)
    except ValueError as exc:
        raise SparseConversionError(str(exc)) from exc
    float_params = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if dtype == "fp32" and float_params - {torch.float32}:
        raise SparseConversionError(
            f"parameters of dtype {sorted(map(str, float_params))}: the sparse kernels "
            "cover FP32 and INT8; call model.float() or convert to INT8 first"
        )
    if dtype == "fp32" and x.dtype != torch.float32:
        raise SparseConversionError(f"input of dtype {x.dtype}: the FP32 sparse kernels need a float32 input")
    work = _fused_copy(model) if dtype == "fp32" else copy.deepcopy(model).eval()
    cache_obj = autotune.DecisionCache() if cache is True else (cache or None)
    candidates = {name: _classify(m) for name, m in work.named_modules()}
    candidates = {n: k for n, k in candidates.items() if k is not None and k[1] == dtype}
    candidates = {
        n: k for n, k in candidates.items() if n.rpartition(".")[0] not in candidates
    }  # fused units once
    inputs = _inputs(work, list(candidates), x)
    report = SparseReport(dtype)
    position = {name: i for i, (name, _) in enumerate(work.named_modules())}
    for name, module in work.named_modules():  # weighted layers of kinds the kernels do not cover
        weight = getattr(module, "weight", None)
        if name not in candidates and not _inside(name, candidates) and _other_layer(module, weight):
            density = float(weight.count_nonzero()) / max(1, weight.numel())
            report.notes.append(
                LayerNote(
                    name,
                    type(module).__name__,
                    density,
                    "dense",
                    "not convertible: the sparse kernels cover Conv2d and Linear only",
                )
            )
    any_zero = False
    for name, (kind, _, relu) in candidates.items():
        module = work.get_submodule(name)
        weight = _dense_weight(module, dtype)
        density = float(weight.count_nonzero()) / weight.numel()
        label = f"{type(module).__name__}{tuple(weight.shape)}"
        if name not in inputs:
            report.notes.append(LayerNote(name, label, density, "dense", "not called in the forward pass"))
            continue
        if density == 1.0:
            report.notes.append(LayerNote(name, label, density, "dense", "no zero weights"))
            continue
        any_zero = True
        try:
            sparse = _sparse_module(module, kind, dtype, relu)
        except ValueError as exc:
            report.notes.append(LayerNote(name, label, density, "dense", f"not convertible: {exc}"))
            continue
        inp = inputs[name]
        # each form timed on the input layout its own kind of producer hands it: torch.ao's INT8 convs emit
        # channels-last tensors, the sparse kernels contiguous ones (a copy the dense model never makes)
        sparse_inp = inp.contiguous()
        with torch.inference_mode():
            got, want = sparse(sparse_inp), module(inp)
        if got.shape != want.shape:
            report.notes.append(LayerNote(name, label, density, "dense", "output shape differs; kept dense"))
            continue
        key = autotune.layer_key(kind, dtype, _geometry(module, kind, inp), density)
        sparse, kernel_note = _pick_kernel(sparse, sparse_inp, key, timer, cache_obj)
        with torch.inference_mode():
            decision = autotune.decide(
                key, partial(module, inp), partial(sparse, sparse_inp), timer=timer, cache=cache_obj
            )
        faster = "sparse" if decision.choice == "sparse" else "dense"
        reason = (
            f"{faster} faster: dense {decision.dense_s * 1e3:.3f} ms vs sparse {decision.sparse_s * 1e3:.3f} ms"
            f"{' (cached)' if decision.cached else ''}{kernel_note}"
        )
        if decision.choice == "sparse" and not sparse.exact:
            reason += "; INT8 within one step, not bit-exact: partial sums may exceed 2**24"
        report.notes.append(
            LayerNote(
                name, label, density, decision.choice, reason, decision.dense_s * 1e3, decision.sparse_s * 1e3
            )
        )
        if decision.choice == "sparse":
            _replace(work, name, sparse)
    if not any_zero:
        raise SparseConversionError(
            f"{type(model).__name__} has no sparse layer: none of its {len(report.notes)} "
            "conv / linear layers has zero weights; prune it first (shrinkviz.techniques.prune)"
        )
    report.notes.sort(key=lambda note: position[note.name])  # module order
    fuse_residuals(unwrap(work))
    work.sparse_report = report
    return work, report


def _pick_kernel(
    sparse: nn.Module,
    inp: torch.Tensor,
    key: str,
    timer: autotune.Timer | None,
    cache: autotune.DecisionCache | None,
) -> tuple[nn.Module, str]:
    """An INT8 conv offered the 1x4-block VNNI kernel is timed against the FP32-lane kernel first (as
    ``decide``'s "dense" side) and the faster kept; returns it and a note for the reason."""
    if getattr(sparse, "kernel", "lanes") != "b4i8":
        return sparse, ""
    lanes = copy.deepcopy(sparse).use_kernel("lanes")
    with torch.inference_mode():
        pick = autotune.decide(
            key + "|b4i8-vs-lanes", partial(lanes, inp), partial(sparse, inp), timer=timer, cache=cache
        )
    chosen = sparse if pick.choice == "sparse" else lanes
    note = (
        f"; kernel {chosen.kernel}: b4i8 (VNNI) {pick.sparse_s * 1e3:.3f} ms vs lanes "
        f"{pick.dense_s * 1e3:.3f} ms"
    )
    return chosen, note


def _inside(name: str, names: dict) -> bool:
    return any(name.startswith(n + ".") for n in names)


def _other_layer(module: nn.Module, weight: object) -> bool:
    """A conv / linear-like layer (any ``_ConvNd``, ``Bilinear``) that is not a Conv2d / Linear candidate."""
    from torch.nn.modules.conv import _ConvNd

    return isinstance(module, _ConvNd | nn.Bilinear) and isinstance(weight, torch.Tensor)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)

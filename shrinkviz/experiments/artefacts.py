"""A run's deployable artefact: the deployed model as bytes that rebuild it exactly, for re-timing and export.

The file is one ``torch.save`` dict, loaded with ``weights_only=True``: the packed state_dict of the deployed
model (:mod:`shrinkviz.metrics.packed`: sparse tensors as bitmask + values, exact round trip) and the
few facts needed to rebuild the module around it: registry architecture, input shape, class count,
deployment form (``fp32`` or ``int8``) and the weight shape of every conv / linear layer (structured
pruning changes them) and the width of every BatchNorm. An INT8 model is rebuilt by the same eager
quantization path that made it (fuse, prepare, observe once, convert) and then takes the stored state,
scales and zero points included, so its outputs are bit-identical.

Example:
    >>> import torch
    >>> from shrinkviz.models import create_model
    >>> net = create_model("tiny_cnn", input_shape=(1, 8, 8), seed=0).eval()
    >>> back = load_artefact(artefact_bytes(net))
    >>> x = torch.randn(2, 1, 8, 8)
    >>> torch.equal(net(x), back(x)), back.arch
    (True, 'tiny_cnn')
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shrinkviz.deploy.forms import model_dtype
from shrinkviz.metrics.packed import pack_state_dict, unpack_state_dict
from shrinkviz.metrics.size import deployable_state_dict

FORMAT = "shrinkviz-artefact"
VERSION = 1


class ArtefactError(ValueError):
    """An artefact that cannot be rebuilt into a module (its state is still readable)."""


def _weight_shape(module: nn.Module) -> list[int] | None:
    weight = getattr(module, "weight", None)
    if callable(weight) and not isinstance(weight, torch.Tensor):  # quantized conv / linear
        try:
            weight = weight()
        except Exception:  # noqa: BLE001 - not a layer with a weight
            return None
    return list(weight.shape) if isinstance(weight, torch.Tensor) else None


def _shapes(model: nn.Module) -> dict[str, list[int]]:
    """Weight shape of every conv / linear layer (float or quantized) and width of every BatchNorm."""
    out: dict[str, list[int]] = {}
    for name, module in model.named_modules():
        kind = type(module).__name__
        if "Conv" in kind or "Linear" in kind:
            shape = _weight_shape(module)
            if shape is not None:
                out[name] = shape
        elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
            out[name] = [module.num_features]
    return out


def artefact_bytes(model: nn.Module) -> bytes:
    """The artefact of a deployed model (float, pruned or converted INT8; pruning masks dropped).

    Raises:
        ValueError: a fake-quant QAT model (convert it first).
    """
    dtype = model_dtype(model)
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "arch": str(getattr(model, "arch", "") or ""),
        "input_shape": list(getattr(model, "input_shape", None) or []),
        "num_classes": int(getattr(model, "num_classes", 0) or 0),
        "dtype": dtype,
        "int8_route": ("graph" if isinstance(model, torch.fx.GraphModule) else "eager")
        if dtype == "int8"
        else "",
        "shapes": _shapes(model),
        "packed": pack_state_dict(deployable_state_dict(model)),
    }
    buffer = io.BytesIO()
    torch.save(doc, buffer)
    return buffer.getvalue()


def read_artefact(source: str | os.PathLike[str] | bytes) -> dict[str, Any]:
    """The artefact's facts plus ``state`` (the exact state_dict), without building a module.

    Raises:
        ValueError: not a shrinkviz artefact, or a newer version.
    """
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)
        doc = torch.load(handle, weights_only=True)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError("not a shrinkviz artefact (one is written per run into <store>/artefacts/)")
    if doc.get("version") != VERSION:
        raise ValueError(
            f"artefact version {doc.get('version')!r}; this shrinkviz reads {VERSION}: upgrade shrinkviz"
        )
    out = {k: v for k, v in doc.items() if k != "packed"}
    out["state"] = unpack_state_dict(doc["packed"])
    return out


def _resized(old: nn.Module, shape: list[int]) -> nn.Module:
    """A fresh layer like ``old`` with the recorded weight shape (or BatchNorm width)."""
    if isinstance(old, nn.Conv2d):
        groups = old.groups if old.groups == 1 else shape[0]
        return nn.Conv2d(
            shape[1] * groups,
            shape[0],
            old.kernel_size,
            old.stride,
            old.padding,
            old.dilation,
            groups,
            old.bias is not None,
        )
    if isinstance(old, nn.Linear):
        return nn.Linear(shape[1], shape[0], old.bias is not None)
    if isinstance(old, nn.BatchNorm2d | nn.BatchNorm1d):
        return type(old)(shape[0], old.eps, old.momentum, old.affine, old.track_running_stats)
    raise ArtefactError(f"cannot resize a {type(old).__name__} layer to {shape}")


def _resize(model: nn.Module, shapes: dict[str, list[int]]) -> None:
    """Give every conv / linear / BatchNorm of ``model`` its recorded shape; BatchNorms fused into a conv
    (absent from an INT8 artefact) follow their conv's output channels."""
    from shrinkviz.models import fusion_groups

    widths = dict(shapes)
    for group in fusion_groups(model):
        conv, rest = group[0], group[1:]
        for name in rest:
            if conv in shapes and name not in widths:
                widths[name] = [shapes[conv][0]]
    for name, module in list(model.named_modules()):
        want = widths.get(name)
        if (
            not name
            or want is None
            or not isinstance(module, nn.Conv2d | nn.Linear | nn.BatchNorm2d | nn.BatchNorm1d)
        ):
            continue
        have = (
            _weight_shape(module)
            if not isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d)
            else [module.num_features]
        )
        if have != want:
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, _resized(module, want))


def load_artefact(source: str | os.PathLike[str] | bytes) -> nn.Module:
    """Rebuild the deployed model of an artefact (eval mode, CPU).

    Raises:
        ArtefactError: the architecture is not registered here (register it, or load
            ``read_artefact(...)["state"]`` into your own module).
    """
    from shrinkviz.models import MODELS, create_model

    doc = read_artefact(source)
    arch = doc["arch"]
    if arch not in MODELS:
        raise ArtefactError(
            f"the artefact's architecture {arch!r} is not registered here: register it "
            "(shrinkviz.register_model) or load read_artefact(...)['state'] into your own module"
        )
    model = create_model(arch, input_shape=tuple(doc["input_shape"]), num_classes=doc["num_classes"], seed=0)
    _resize(model, doc["shapes"])
    if doc["dtype"] == "int8":  # rebuild the INT8 module of the route that made it, then load its weights
        example = torch.randn(2, *doc["input_shape"], generator=torch.Generator().manual_seed(0))
        if doc.get("int8_route") == "eager":  # the lower-level eager API (shrinkviz.techniques.quant.eager)
            from shrinkviz.techniques.quant import convert, prepare_qat

            qat = prepare_qat(model, inplace=True, check=False)
            qat.train()
            with torch.no_grad():
                qat(example)
            model = convert(qat, inplace=True)
        else:  # the graph route every verb uses
            from shrinkviz.techniques.quant.graph import calibrate_graph

            model = calibrate_graph(model, example, example, calib_batches=1)
    model.load_state_dict(doc["state"])
    return model.cpu().eval()


class ArtefactAccess:
    """The artefact side of :class:`shrinkviz.experiments.store.Store` (needs ``get`` and ``artefacts_dir``)."""

    artefacts_dir: Path

    def get(self, run_id: str) -> Any:  # pragma: no cover - provided by Store
        raise NotImplementedError

    def artefact_file(self, run_id: str) -> Path:
        """The artefact file of a stored run (``artefacts/<run_id>.pt``).

        Raises:
            KeyError: the run is not stored or has no artefact (stored before artefacts existed, or its
                model could not be packed).
        """
        record = self.get(run_id)
        if not record.artefact:
            raise KeyError(
                f"run {run_id!r} in {self} has no stored artefact (written before artefacts were kept, or "
                "its model could not be packed): re-run it with sweep(..., force=True) to store one"
            )
        return self.artefacts_dir / record.artefact["file"]

    def artefact_bytes(self, run_id: str) -> bytes:
        """The artefact's bytes, checked against the sha256 in the record.

        Raises:
            KeyError: no artefact; ArtefactError: the file is missing or does not match its checksum.
        """
        path = self.artefact_file(run_id)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ArtefactError(f"artefact of run {run_id!r} is unreadable ({exc}): re-run the run") from exc
        if hashlib.sha256(data).hexdigest() != self.get(run_id).artefact["sha256"]:
            raise ArtefactError(f"artefact {path} does not match its checksum (damaged): re-run the run")
        return data

    def artefact(self, run_id: str) -> Any:
        """The deployed model of a stored run, rebuilt exactly from its artefact (``nn.Module``, eval, CPU).

        Example:
            >>> import tempfile
            >>> from shrinkviz.experiments.store import Store
            >>> Store(tempfile.mkdtemp()).artefact("nothere")  # doctest: +IGNORE_EXCEPTION_DETAIL
            Traceback (most recent call last):
            KeyError: "run 'nothere' is not in Store(...)"
        """
        return load_artefact(self.artefact_bytes(run_id))


EXPORT_FORMATS = ("state_dict", "onnx")


def export_artefact(
    store: Any, run_id: str, path: str | os.PathLike[str], format: str = "state_dict"
) -> Path:
    """Write a stored run's deployed model out of the store: ``state_dict`` (a ``torch.save`` file that
    loads with ``weights_only=True`` into the rebuilt architecture) or ``onnx`` (INT8 as a QDQ graph).

    Args:
        store: a :class:`~shrinkviz.experiments.store.Store`.
        run_id: the run.
        path: destination file (written atomically); a folder gets ``<run_id>.pt`` / ``<run_id>.onnx``.
        format: one of :data:`EXPORT_FORMATS`.

    Raises:
        ValueError: unknown format; KeyError: the run or its artefact is not stored.
    """
    from shrinkviz.core.registry import unknown_name

    if format not in EXPORT_FORMATS:
        raise unknown_name("export format", format, EXPORT_FORMATS, "format")
    target = Path(path)
    if target.is_dir():
        target = target / f"{run_id}.{'pt' if format == 'state_dict' else 'onnx'}"
    model = store.artefact(run_id)
    if format == "onnx":
        from shrinkviz.deploy.export import export_onnx

        return export_onnx(model, target)
    from shrinkviz.core.io import atomic_write_bytes

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return atomic_write_bytes(target, buffer.getvalue())

"""The packed artefact: a state_dict whose sparse tensors are stored as a bitmask plus their nonzero values.

Unstructured sparsity stored densely shows only after gzip, and gzip codes it badly: deflate works on whole
bytes with whole-bit Huffman codes, so the scattered zeros of a 90%-sparse int8 tensor cost it close to a
bit per weight, while their positions carry about 0.47 bits of information (the binary entropy of 0.1).
The packed artefact stores every sparse tensor as a bitmask (8 weights per byte) and its nonzero values, in
two streams: all masks one after the other, all values concatenated per dtype, each tensor keeping its
offsets. gzip then gets close to the weights' entropy. This is the layout sparse-weight formats use (Deep
Compression's index + value arrays, ONNX's sparse initializers); here it is one ``torch.save`` file that
:func:`load_packed` turns back into the exact state_dict, so any runtime can load it.

A tensor is packed only when that makes it smaller (for int8 below 7/8 nonzero, for float32 below 31/32),
so the packed artefact of a dense model is its plain state_dict plus a few bytes.

Example:
    >>> import torch
    >>> state = {"w": torch.tensor([[0.0, 1.5], [0.0, 0.0]]).repeat(8, 8), "n": 3}
    >>> restored = unpack_state_dict(pack_state_dict(state))
    >>> torch.equal(restored["w"], state["w"]), restored["n"]
    (True, 3)
"""

from __future__ import annotations

import io
import os
import warnings
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

FORMAT = "shrinkviz-packed"
VERSION = 1
_TAG = "__shrinkviz_packed__"
_PER_TENSOR = (torch.per_tensor_affine, torch.per_tensor_symmetric)


def _zero_codes(tensor: torch.Tensor) -> torch.Tensor:
    """The stored integer that means 0.0 at each position of a quantized tensor (its zero point)."""
    if tensor.qscheme() in _PER_TENSOR:
        return torch.tensor(tensor.q_zero_point())
    shape = [1] * tensor.dim()
    shape[tensor.q_per_channel_axis()] = -1
    return tensor.q_per_channel_zero_points().reshape(shape)


class _Streams:
    """The two streams of a packed artefact: every packed tensor's bitmask bytes, one after the other, and
    its nonzero values, concatenated per dtype. One long stream of each kind is what gzip codes best (its
    Huffman tables adapt to masks and to values separately instead of to their mix)."""

    def __init__(self) -> None:
        self.masks: list[np.ndarray] = []
        self.mask_bytes = 0
        self.values: dict[str, list[torch.Tensor]] = {}
        self.value_counts: dict[str, int] = {}

    def add(self, nonzero: torch.Tensor, values: torch.Tensor) -> dict[str, Any]:
        bits = np.packbits(nonzero.cpu().numpy().ravel())
        key = str(values.dtype)
        ref = {
            "mask_offset": self.mask_bytes,
            "values_dtype": key,
            "values_offset": self.value_counts.get(key, 0),
            "count": values.numel(),
        }
        self.masks.append(bits)
        self.mask_bytes += bits.size
        self.values.setdefault(key, []).append(values.cpu())
        self.value_counts[key] = ref["values_offset"] + values.numel()
        return ref

    def tensors(self) -> dict[str, Any]:
        masks = np.concatenate(self.masks) if self.masks else np.zeros(0, dtype=np.uint8)
        return {"masks": torch.from_numpy(masks), "values": {k: torch.cat(v) for k, v in self.values.items()}}


def _pack_tensor(tensor: torch.Tensor, streams: _Streams) -> torch.Tensor | dict[str, Any]:
    """``tensor`` as a packed entry (its mask and values added to ``streams``) when that is smaller."""
    if tensor.layout != torch.strided or tensor.numel() == 0 or tensor.dtype == torch.bool:
        return tensor
    codes = tensor.int_repr() if tensor.is_quantized else tensor.detach()
    nonzero = (codes != _zero_codes(tensor)) if tensor.is_quantized else (codes != 0)
    values = codes[nonzero]
    if (
        tensor.numel() + 7
    ) // 8 + values.numel() * values.element_size() >= codes.numel() * codes.element_size():
        return tensor
    entry: dict[str, Any] = {_TAG: VERSION, "shape": tuple(tensor.shape), **streams.add(nonzero, values)}
    if tensor.is_quantized:
        entry["dtype"] = str(tensor.dtype)
        if tensor.qscheme() in _PER_TENSOR:
            entry["scale"], entry["zero_point"] = float(tensor.q_scale()), int(tensor.q_zero_point())
        else:
            entry["scales"] = tensor.q_per_channel_scales().clone()
            entry["zero_points"] = tensor.q_per_channel_zero_points().clone()
            entry["axis"] = int(tensor.q_per_channel_axis())
    return entry


def _unpack_tensor(entry: dict[str, Any], streams: dict[str, Any]) -> torch.Tensor:
    shape = tuple(entry["shape"])
    numel = int(np.prod(shape)) if shape else 1
    start, stop = entry["mask_offset"], entry["mask_offset"] + (numel + 7) // 8
    pool = streams["values"].get(entry["values_dtype"])
    if (
        stop > streams["masks"].numel()
        or pool is None
        or entry["values_offset"] + entry["count"] > pool.numel()
    ):
        raise ValueError(
            f"corrupt packed tensor of shape {shape}: its mask or values lie outside the streams"
        )
    bits = np.unpackbits(streams["masks"][start:stop].numpy(), count=numel).astype(bool)
    nonzero = torch.from_numpy(bits).reshape(shape)
    values = pool[entry["values_offset"] : entry["values_offset"] + entry["count"]]
    if int(nonzero.sum()) != values.numel():
        raise ValueError(
            f"corrupt packed tensor of shape {shape}: the mask marks {int(nonzero.sum())} "
            f"nonzeros but {values.numel()} values are stored"
        )
    if "dtype" not in entry:
        dense = torch.zeros(shape, dtype=values.dtype)
        dense[nonzero] = values
        return dense
    if "axis" in entry:
        view = [1] * len(shape)
        view[entry["axis"]] = -1
        codes = entry["zero_points"].reshape(view).expand(shape).to(values.dtype).clone()
        codes[nonzero] = values
        return torch._make_per_channel_quantized_tensor(
            codes, entry["scales"], entry["zero_points"], entry["axis"]
        )
    codes = torch.full(shape, entry["zero_point"], dtype=values.dtype)
    codes[nonzero] = values
    return torch._make_per_tensor_quantized_tensor(codes, entry["scale"], entry["zero_point"])


def _map(obj: Any, tensor_fn, entry_fn) -> Any:
    """Apply ``tensor_fn`` to tensors and ``entry_fn`` to packed entries, through dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        return tensor_fn(obj)
    if isinstance(obj, dict):
        if _TAG in obj:
            return entry_fn(obj)
        return type(obj)((k, _map(v, tensor_fn, entry_fn)) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return type(obj)(_map(v, tensor_fn, entry_fn) for v in obj)
    return obj


def pack_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with every tensor that is smaller packed (bitmask + nonzero values); other values kept.

    Handles float and quantized (per-tensor and per-channel) tensors, also inside the tuples quantized
    Linear layers keep in their state_dict.
    """
    streams = _Streams()
    tree = _map(dict(state), lambda t: _pack_tensor(t, streams), lambda e: e)
    return {
        "format": FORMAT,
        "version": VERSION,
        "state": tree,
        **streams.tensors(),
        # per-module state_dict versions: quantized layers read them in load_state_dict
        "metadata": dict(getattr(state, "_metadata", None) or {}),
    }


def unpack_state_dict(packed: dict[str, Any]) -> dict[str, Any]:
    """The exact state_dict :func:`pack_state_dict` was given.

    Raises:
        ValueError: not a packed artefact, or one of a newer version, or a corrupt entry.
    """
    if not isinstance(packed, dict) or packed.get("format") != FORMAT:
        raise ValueError(
            "not a shrinkviz packed artefact (write one with "
            "shrinkviz.metrics.measure_size(model, 'packed', path=...))"
        )
    if packed.get("version") != VERSION:
        raise ValueError(
            f"packed artefact version {packed.get('version')!r}; this shrinkviz reads version "
            f"{VERSION}: upgrade shrinkviz"
        )
    state = OrderedDict(_map(packed["state"], lambda t: t, lambda e: _unpack_tensor(e, packed)))
    state._metadata = OrderedDict(packed.get("metadata", {}))  # type: ignore[attr-defined]
    return state


def packed_bytes(state: dict[str, Any]) -> bytes:
    """The bytes of the packed artefact of ``state`` (what ``measure_size(model, "packed")`` measures)."""
    buffer = io.BytesIO()
    torch.save(pack_state_dict(state), buffer)
    return buffer.getvalue()


def load_packed(source: str | os.PathLike[str] | bytes) -> dict[str, Any]:
    """Read a packed artefact (path or bytes) and return its state_dict, ready for ``model.load_state_dict``.

    Loads with ``weights_only=True``: the file holds only tensors, numbers, strings and containers.
    """
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    with warnings.catch_warnings():
        # torch's own unpickler of quantized tensors (torch._utils._rebuild_qtensor, kept dense when packing
        # would not save bytes) touches TypedStorage.device and warns; nothing the caller can act on
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)
        packed = torch.load(handle, weights_only=True)
    return unpack_state_dict(packed)

"""The validation figures of a model as ``fit`` left it, so a caller that measures the same model on the
same split afterwards does not evaluate it twice.

``fit`` validates after its last epoch; a sweep's run then measured the same model on the same split again
(6,000 Fashion-MNIST images, ~0.55 s of a ~7 s run on one EPYC core). :func:`remember` keeps the figures
with a fingerprint of everything the forward pass reads (every parameter and buffer, by value, and the
split, normaliser, batch size, device and layout of the evaluation); :func:`recall` hands them back only
while all of it is unchanged, so a model trained further, restored to another epoch, converted, or
evaluated on another split is evaluated afresh. The record lives beside the model in a weak mapping: it
adds nothing to the module and goes when the model does.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from shrinkviz.data import Normalizer, Split
    >>> net, split = nn.Linear(4, 2), Split(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.zeros(3).long())
    >>> key = dict(normalize=Normalizer((0.0,), (1.0,)), batch_size=128, device="cpu", memory_format="auto")
    >>> remember(net, split, {"top1": 0.5}, **key)
    >>> recall(net, split, **key)
    {'top1': 0.5}
    >>> _ = net.weight.data.add_(1.0)  # the model changed: nothing to recall
    >>> recall(net, split, **key) is None
    True
"""

from __future__ import annotations

import hashlib
import weakref
from typing import Any

import torch
from torch import nn

_RECORDS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], Any, dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)


def fingerprint(model: nn.Module) -> str | None:
    """A digest of every parameter and buffer of ``model`` (names, dtypes, shapes and values; the layout
    does not matter), or None for a tensor kind it cannot read (e.g. quantized tensors)."""
    digest = hashlib.blake2b(digest_size=16)
    for kind, named in (("p", model.named_parameters()), ("b", model.named_buffers())):
        for name, tensor in named:
            if tensor.is_quantized or tensor.is_sparse or tensor.layout is not torch.strided:
                return None
            value = tensor.detach().cpu().contiguous()
            digest.update(f"{kind}:{name}:{value.dtype}:{tuple(value.shape)};".encode())
            if value.numel():
                digest.update(value.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def _key(model: nn.Module, normalize: Any, batch_size: int, device: Any, memory_format: str) -> tuple | None:
    state = fingerprint(model)
    if state is None:
        return None
    return (state, tuple(normalize.mean), tuple(normalize.std), int(batch_size), str(device), memory_format)


def _same_split(ref: Any, split: Any) -> bool:
    images, labels, version = ref
    return (
        images() is split.images
        and labels() is split.labels
        and version == (split.images._version, split.labels._version)
    )


def remember(
    model: nn.Module,
    split: Any,
    metrics: dict[str, Any],
    *,
    normalize: Any,
    batch_size: int,
    device: Any,
    memory_format: str,
) -> None:
    """Keep ``metrics`` (what ``evaluate`` returned for ``model`` on ``split`` with these settings)."""
    key = _key(model, normalize, batch_size, device, memory_format)
    if key is None:
        _RECORDS.pop(model, None)
        return
    ref = (
        weakref.ref(split.images),
        weakref.ref(split.labels),
        (split.images._version, split.labels._version),
    )
    _RECORDS[model] = (key, ref, dict(metrics))


def recall(
    model: nn.Module, split: Any, *, normalize: Any, batch_size: int, device: Any, memory_format: str
) -> dict[str, Any] | None:
    """The remembered metrics of ``model`` on ``split``, or None unless the model, the split and every
    setting are exactly what they were when they were remembered."""
    record = _RECORDS.get(model)
    if record is None or not _same_split(record[1], split):
        return None
    if _key(model, normalize, batch_size, device, memory_format) != record[0]:
        return None
    return dict(record[2])

"""The ``sparse`` latency runtime: C kernels that run pruned Conv2d / Linear layers over their nonzeros.

Dense CPU kernels do the same work whatever the sparsity; these do work proportional to the nonzeros
(direct sparse convolution, FP32 and INT8, one thread). :func:`convert` swaps each sparse layer for a
sparse-kernel module where timing on this machine says it is faster; the ``sparse`` runtime of :mod:`shrinkviz.deploy.runtimes` is what
``make_runner(model, "sparse", x, threads)`` calls. The kernels are compiled at first use and cached (see
:mod:`shrinkviz.sparse.build`); importing this package builds nothing.

Example:
    >>> import shrinkviz.sparse as sp
    >>> isinstance(sp.availability()[1], str)  # doctest: +SKIP
    True
"""

from __future__ import annotations

from typing import Any

from shrinkviz.sparse.build import SparseUnavailableError, availability
from shrinkviz.sparse.convert import LayerNote, SparseConversionError, SparseReport, convert

__all__ = [
    "LayerNote",
    "SparseConversionError",
    "SparseReport",
    "SparseUnavailableError",
    "availability",
    "convert",
    "report_of",
]


def report_of(runner: Any) -> Any:
    """The :class:`SparseReport` of a sparse runner (which layers were converted, which kept dense, why)."""
    for item in getattr(runner, "keep", []):
        if type(item).__name__ == "SparseReport":
            return item
    raise ValueError(f"runner for {getattr(runner, 'runtime', '?')!r} carries no sparse report")

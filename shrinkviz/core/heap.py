"""glibc's heap kept steady while training: freed activation buffers are reused, not faulted in again.

A CPU training step frees and allocates the same activation buffers (a few MiB each) every step.
glibc's ``malloc`` serves them from the heap, but with its default *dynamic* thresholds it trims the
heap's top back to the kernel whenever more than about twice the largest freed block is free there, which
a step that frees all its saved activations at once does: the next step's buffers fault their pages in
again. Measured on a 2-core AMD EPYC (KVM guest), one thread, ResNet-20 channels-last at batch 64: 2,800 to
6,100 minor page faults in the median step with glibc's defaults, none with the heap held
(``tests/test_heap.py``); MnistNet in :func:`~shrinkviz.loop.train.fit` sees occasional steps of 2,000-2,800
faults. Peak RSS is unchanged (what a step needs is resident at its peak either way). What it buys in time
is small where glibc's heuristics behave: ``benchmarks/bench_fit.py``'s bare loop held against glibc's
defaults, one EPYC core, 0.95x for MnistNet and 1.01x for ResNet-20 (within the machine's noise); it
removes the case where they do not (a loop over one reused batch: 40 against 34 ms a MnistNet step), and
Dask's own ``MALLOC_TRIM_THRESHOLD_=65536`` doubled a sweep's epoch (see
:data:`shrinkviz.experiments.executors.WORKER_ENVIRON_UNSET`).

:func:`steady_heap` fixes glibc's mmap threshold, once per process, at :data:`MMAP_THRESHOLD` (32 MiB,
glibc's own ceiling for its dynamic threshold on 64-bit), so blocks up to it come from the heap. While the
outermost :func:`steady_heap` runs, the heap is not trimmed (:data:`TRAINING_TRIM_THRESHOLD`); leaving it
hands the free memory back (``malloc_trim``) and sets the trim threshold to :data:`TRIM_THRESHOLD` (twice
the mmap threshold, as glibc pairs them), so a notebook kernel does not keep a training step's buffers
after training. Nothing is changed where the C
library is not glibc, or where the user has chosen the allocator's behaviour (``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TOP_PAD_`` or ``glibc.malloc`` tunables in ``GLIBC_TUNABLES``), or
``LD_PRELOAD`` loads another allocator (jemalloc, tcmalloc), or ``SHRINKVIZ_HEAP=default`` asks for glibc's
defaults.

Example:
    >>> with steady_heap():
    ...     pass
    >>> heap_state() == "held" or heap_state().endswith(("not glibc", "setting kept", "=default"))
    True
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
import threading
from collections.abc import Iterator

MMAP_THRESHOLD = 32 * 1024 * 1024
"""Bytes above which a block is ``mmap``-ed on its own (glibc's ceiling for its dynamic threshold)."""

TRIM_THRESHOLD = 2 * MMAP_THRESHOLD
"""Free bytes at the heap's top kept rather than returned outside training (glibc pairs its dynamic trim
threshold with twice the mmap threshold)."""

TRAINING_TRIM_THRESHOLD = 2**31 - 1
"""Free bytes at the heap's top kept while training (``mallopt`` takes an ``int``): all of a step's buffers,
whatever the model (ResNet-20 at batch 128 frees ~160 MiB of saved activations every step)."""

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
USER_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")

_lock = threading.Lock()
_depth = 0
_state: str | None = None
_libc: ctypes.CDLL | None = None


def _user_choice() -> str | None:
    """Why the user's own allocator setting stands, or None."""
    if os.environ.get("SHRINKVIZ_HEAP") == "default":
        return "glibc defaults kept: SHRINKVIZ_HEAP=default"
    if any(os.environ.get(v) for v in USER_VARIABLES):
        return "user's setting kept"
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return "user's setting kept"
    preload = os.environ.get("LD_PRELOAD", "")
    if any(name in preload for name in ("jemalloc", "tcmalloc", "mimalloc")):
        return "user's setting kept"
    return None


def _apply() -> str:
    global _libc
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "glibc defaults kept: not glibc"
    reason = _user_choice()
    if reason:
        return reason
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)  # steady_heap sets the trim threshold
    except (OSError, AttributeError):
        return "glibc defaults kept: not glibc"
    if not ok:
        return "glibc defaults kept: mallopt refused"
    _libc = libc
    return "held"


def heap_state() -> str:
    """``held`` once :func:`steady_heap` has set glibc's thresholds in this process, else why not (or
    ``not yet``)."""
    return _state or "not yet"


@contextlib.contextmanager
def steady_heap() -> Iterator[None]:
    """Keep freed blocks in glibc's heap while the body runs (re-entrant); the outermost exit returns the
    free memory to the system. Values computed are unaffected: only where memory comes from changes."""
    global _depth, _state
    with _lock:
        if _state is None:
            _state = _apply()
        if _depth == 0 and _libc is not None:
            _libc.mallopt(_M_TRIM_THRESHOLD, TRAINING_TRIM_THRESHOLD)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _libc is not None:
                _libc.malloc_trim(0)
                _libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)


__all__ = [
    "MMAP_THRESHOLD",
    "TRAINING_TRIM_THRESHOLD",
    "TRIM_THRESHOLD",
    "USER_VARIABLES",
    "heap_state",
    "steady_heap",
]

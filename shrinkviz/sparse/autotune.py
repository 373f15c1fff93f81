"""Per-layer choice between the dense module and its sparse replacement, timed on this machine, cached.

Each candidate layer is timed both ways on its real input: rounds of a few calls, alternating dense and
sparse, the fastest round per side (on a shared machine other processes only ever add time, so the
minimum is the steadier estimate of each form's own cost; medians of these short rounds let a burst of
load decide); the faster one is kept. The decision is cached in ``autotune.json`` in
:func:`shrinkviz.sparse.build.cache_dir` keyed by the layer's geometry, density bucket, dtype and the CPU
(model and ISA flags), written atomically (temporary file, then rename).

Example:
    >>> fake = lambda dense, sparse: (2e-3, 1e-3)   # an injected timer: sparse is faster
    >>> decide("example-key", lambda: None, lambda: None, timer=fake, cache=None).choice
    'sparse'
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from shrinkviz.core.machine import cpu_model
from shrinkviz.sparse.build import cache_dir, isa_flags, kernel_id

Timer = Callable[[Callable[[], object], Callable[[], object]], tuple[float, float]]
BUCKETS = 100
"""Density buckets of the cache key (1% wide)."""
TIMING = "t2"
"""Version of how a layer is timed, part of the cache key: t2 = fastest round, the sparse side on a contiguous
input (decisions timed otherwise are not reused)."""


@dataclass(frozen=True)
class Decision:
    """The kept form and the seconds per call of each, fastest round (from the cache when ``cached``)."""

    choice: str
    dense_s: float
    sparse_s: float
    cached: bool = False


def interleaved_timer(
    dense: Callable[[], object], sparse: Callable[[], object], *, rounds: int = 7, budget_s: float = 0.004
) -> tuple[float, float]:
    """Seconds per call of ``dense`` and ``sparse`` in their fastest round, timed in alternating rounds.

    Each round runs a batch of calls sized so a round costs about ``budget_s / rounds`` per side.
    """
    dense()
    sparse()
    start = time.perf_counter()
    dense()
    sparse()
    pair = max(time.perf_counter() - start, 1e-7)
    reps = max(1, int(budget_s / rounds / pair))
    times: dict[int, list[float]] = {0: [], 1: []}
    for r in range(rounds):
        order = (0, 1) if r % 2 == 0 else (1, 0)
        for side in order:
            fn = dense if side == 0 else sparse
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            times[side].append((time.perf_counter() - t0) / reps)
    return min(times[0]), min(times[1])


def layer_key(kind: str, dtype: str, geometry: str, density: float) -> str:
    """Cache key: layer kind and geometry, dtype, density bucket, the CPU's model and ISA flags, the kernel
    build (a changed kernel source or compiler re-times every layer) and :data:`TIMING`."""
    bucket = min(BUCKETS, round(density * BUCKETS))
    cpu = f"{cpu_model()}|{'+'.join(isa_flags())}"
    return f"{kind}|{dtype}|{geometry}|density~{bucket}/{BUCKETS}|{cpu}|{kernel_id()}|{TIMING}"


class DecisionCache:
    """Decisions in a small JSON file (``path`` default: ``<cache dir>/autotune.json``)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else cache_dir() / "autotune.json"
        self._data: dict[str, dict] | None = None

    def _load(self) -> dict[str, dict]:
        if self._data is None:
            try:
                self._data = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self._data = {}
        return self._data

    def get(self, key: str) -> Decision | None:
        """The cached decision for ``key``, or None."""
        entry = self._load().get(key)
        if not isinstance(entry, dict) or entry.get("choice") not in ("dense", "sparse"):
            return None
        return Decision(entry["choice"], float(entry["dense_s"]), float(entry["sparse_s"]), cached=True)

    def put(self, key: str, decision: Decision) -> None:
        """Record ``decision`` (merged with the file's current content; atomic replace)."""
        self._data = None
        data = self._load()
        entry = asdict(decision)
        entry.pop("cached")
        data[key] = entry
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".autotune-", suffix=".json")
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only cache only costs re-timing next time


def decide(
    key: str,
    dense: Callable[[], object],
    sparse: Callable[[], object],
    *,
    timer: Timer | None = None,
    cache: DecisionCache | None = None,
) -> Decision:
    """Keep the faster of ``dense`` and ``sparse`` (ties go to dense), from ``cache`` when it knows ``key``.

    Args:
        key: see :func:`layer_key`.
        dense, sparse: zero-argument calls of the two forms on the layer's input.
        timer: ``timer(dense, sparse) -> (dense_s, sparse_s)``; default :func:`interleaved_timer`.
        cache: where decisions are read and recorded; None times every time and records nothing.
    """
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return hit
    dense_s, sparse_s = (timer or interleaved_timer)(dense, sparse)
    decision = Decision("sparse" if sparse_s < dense_s else "dense", float(dense_s), float(sparse_s))
    if cache is not None:
        cache.put(key, decision)
    return decision

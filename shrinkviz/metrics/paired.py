"""Paired statistics for comparing compressed models: per-example correctness, a hierarchical bootstrap over
seeds and test examples, flip rates, and Holm's correction for many comparisons.

Two configurations evaluated on the same test split are *paired by example*: each test image is either
right or wrong under both, so their accuracy difference is measured with far less noise than two independent
accuracies. A run stores which examples it got right (:func:`pack_correct`, the ``test_correct`` column);
:class:`Bootstrap` resamples the test examples (one shared draw for every configuration, which keeps the
pairing) and, inside each draw, the seeds, so an interval covers both sources of chance: another test set
of the same distribution, and another training seed.

Why not ``scipy.stats.bootstrap``: it resamples one level (here: either seeds or examples), and with 3
seeds a one-level bootstrap over seeds alone has ten distinct resamples; the two-level resample below is a
matrix product over shared example weights, so hundreds of comparisons in a claim reuse one draw.
p-values come from the bootstrap standard error (a normal approximation), because Holm's correction over
a hundred comparisons needs p-values far below the 1/draws floor of a percentile p-value.

Example:
    >>> import numpy as np
    >>> unpack_correct(pack_correct(np.array([True, False, True])))
    array([ True, False,  True])
    >>> holm([0.01, 0.04, 0.03]).round(2).tolist()
    [0.03, 0.06, 0.06]
"""

from __future__ import annotations

import base64
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Bootstrap",
    "Effect",
    "flip_matrix",
    "flip_rate",
    "holm",
    "normal_p",
    "pack_correct",
    "seed_ranks",
    "unpack_correct",
]

DRAWS = 2000
"""Bootstrap draws per claim: the standard error of a 95% percentile bound is then ~0.5% of its width."""
_EXAMPLE_WEIGHTS: dict[tuple[int, int, int], np.ndarray] = {}


def pack_correct(correct: Sequence[bool] | np.ndarray) -> str:
    """Per-example correctness as compact text: ``'<count>:<base64 of numpy.packbits (little bit order)>'``.

    10,000 test examples take 1,672 characters.
    """
    flags = np.asarray(correct, dtype=bool).ravel()
    return f"{flags.size}:{base64.b64encode(np.packbits(flags, bitorder='little')).decode('ascii')}"


def unpack_correct(text: str) -> np.ndarray:
    """The bool array :func:`pack_correct` packed.

    Raises:
        ValueError: the text is not of that form (names what is wrong).
    """
    count, sep, payload = str(text).partition(":")
    if not sep or not count.isdigit():
        raise ValueError(f"test_correct {str(text)[:40]!r}: expected '<count>:<base64 bits>'")
    try:
        raw = np.frombuffer(base64.b64decode(payload, validate=True), dtype=np.uint8)
    except ValueError as exc:
        raise ValueError(f"test_correct: the bits are not valid base64 ({exc})") from exc
    n = int(count)
    if raw.size != (n + 7) // 8:
        raise ValueError(f"test_correct: {raw.size} bytes cannot hold exactly {n} flags")
    return np.unpackbits(raw, bitorder="little")[:n].astype(bool)


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), in the input's order.

    Rejecting where the adjusted p < alpha keeps the family-wise error rate at alpha for any dependence
    between the tests. NaN p-values stay NaN and do not count as tests.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


def normal_p(estimate: float, se: float, *, margin: float = 0.0, alternative: str = "greater") -> float:
    """p-value of ``estimate - margin`` against 0 with standard error ``se`` (normal approximation).

    ``alternative``: ``greater`` (H1: effect > margin), ``less`` (H1: effect < margin), ``two-sided``.
    A zero standard error gives 0 or 1 (the effect is then exactly known), NaN input gives NaN.
    """
    if not (math.isfinite(estimate) and math.isfinite(se)):
        return math.nan
    diff = estimate - margin
    if se <= 0:
        if alternative == "two-sided":
            return 0.0 if diff != 0 else 1.0
        return 0.0 if (diff > 0 if alternative == "greater" else diff < 0) else 1.0
    z = diff / se
    sf = 0.5 * math.erfc(z / math.sqrt(2))  # P(Z > z)
    if alternative == "greater":
        return sf
    if alternative == "less":
        return 1.0 - sf
    if alternative == "two-sided":
        return min(1.0, 2.0 * min(sf, 1.0 - sf))
    raise ValueError(f"alternative={alternative!r}: use 'greater', 'less' or 'two-sided'")


def flip_rate(a: Mapping[int, float], b: Mapping[int, float]) -> float:
    """How often A beats B across the seeds both have (ties count one half); NaN without a common seed.

    Example:
        >>> flip_rate({0: 0.9, 1: 0.8, 2: 0.7}, {0: 0.8, 1: 0.8, 2: 0.75})
        0.5
    """
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return math.nan
    wins = sum(1.0 if a[s] > b[s] else 0.5 if a[s] == b[s] else 0.0 for s in seeds)
    return wins / len(seeds)


@dataclass(frozen=True)
class Effect:
    """A difference ``A - B`` with its bootstrap uncertainty.

    ``estimate`` is the observed difference of the mean accuracies over seeds; ``low`` / ``high`` the 95%
    percentile interval; ``se`` the bootstrap standard error; ``seeds`` how many seeds each side had;
    ``per_example`` whether test examples were resampled (False when a run lacked ``test_correct``: then
    only seeds were).
    """

    estimate: float
    low: float
    high: float
    se: float
    seeds: tuple[int, int]
    per_example: bool

    def p(self, margin: float = 0.0, alternative: str = "greater") -> float:
        """p-value of the effect against ``margin`` (see :func:`normal_p`)."""
        return normal_p(self.estimate, self.se, margin=margin, alternative=alternative)


class Bootstrap:
    """Two-level bootstrap of accuracies: one shared resample of the test examples, then seeds.

    ``configs`` maps a key (any hashable naming a configuration) to ``seed -> per-example correctness``
    (bool arrays of one common length) or ``seed -> accuracy`` (a float: then only its seeds are resampled).
    A side of a comparison is a weighted sum of configurations given as ``(weight, key)`` pairs (weights
    summing to 1: one configuration, an average of several, or an interpolation between two), evaluated on
    the seeds all its configurations share.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> truth = rng.random(10_000)
        >>> configs = {"a": {s: truth < 0.9 for s in range(3)}, "b": {s: truth < 0.8 for s in range(3)}}
        >>> e = Bootstrap(configs, seed=0).effect([(1.0, "a")], [(1.0, "b")])
        >>> round(e.estimate, 2), 0.09 < e.low < e.estimate < e.high < 0.12, e.per_example
        (0.1, True, True)
    """

    def __init__(
        self, configs: Mapping[Hashable, Mapping[int, object]], draws: int = DRAWS, seed: int = 0
    ) -> None:
        if draws < 100:
            raise ValueError(f"Bootstrap: draws={draws}; use at least 100")
        self.configs = configs
        self.draws, self.seed = draws, seed
        self.rng = np.random.default_rng(seed)
        self._seed_draws: dict[int, np.ndarray] = {}
        self._cache: dict[Hashable, tuple[dict[int, float], dict[int, np.ndarray] | None]] = {}

    def _example_weights(self, n: int) -> np.ndarray:
        """(draws, n) resampling weights of n test examples: counts of n draws with replacement, over n.

        The same for every Bootstrap with this draw count and seed (cached per process: a notebook's claims
        share one resample of the test set, and it is drawn once)."""
        key = (n, self.draws, self.seed)
        if key not in _EXAMPLE_WEIGHTS:
            rng = np.random.default_rng([self.seed, n])
            picks = rng.integers(0, n, size=(self.draws, n))
            counts = np.stack([np.bincount(row, minlength=n) for row in picks])
            _EXAMPLE_WEIGHTS.clear()  # keep one (draws x n float32: 80 MB at 2,000 x 10,000)
            _EXAMPLE_WEIGHTS[key] = (counts / n).astype(np.float32)
        return _EXAMPLE_WEIGHTS[key]

    def _seed_index(self, k: int) -> np.ndarray:
        """(draws, k) indices into k seeds: the seed resample (the same for every side with k seeds)."""
        if k not in self._seed_draws:
            self._seed_draws[k] = self.rng.integers(0, k, size=(self.draws, k))
        return self._seed_draws[k]

    def observed(self, key: Hashable) -> dict[int, float]:
        """Accuracy per seed of one configuration."""
        return self._replicates(key)[0]

    def _replicates(self, key: Hashable) -> tuple[dict[int, float], dict[int, np.ndarray] | None]:
        """(observed accuracy per seed, bootstrap accuracies per seed, or None when not per example)."""
        if key in self._cache:
            return self._cache[key]
        if key not in self.configs:
            raise KeyError(f"Bootstrap: no configuration {key!r}")
        arrays = {int(s): np.asarray(v) for s, v in self.configs[key].items()}
        if not arrays:
            raise ValueError(f"Bootstrap: configuration {key!r} has no seed")
        observed = {s: float(a.astype(float).mean()) for s, a in arrays.items()}
        reps: dict[int, np.ndarray] | None = None
        if all(a.ndim == 1 and a.size > 1 for a in arrays.values()):
            sizes = {a.size for a in arrays.values()}
            if len(sizes) != 1:
                raise ValueError(f"Bootstrap: {key!r} has per-example arrays of lengths {sorted(sizes)}")
            seeds = sorted(arrays)
            boot = self._example_weights(sizes.pop()) @ np.stack(
                [arrays[s].astype(np.float32) for s in seeds], 1
            )
            reps = {s: boot[:, i].astype(np.float64) for i, s in enumerate(seeds)}
        self._cache[key] = (observed, reps)
        return self._cache[key]

    def _side(
        self, side: Sequence[tuple[float, Hashable]]
    ) -> tuple[list[int], np.ndarray, np.ndarray | None]:
        """(seeds, observed per seed, bootstrap per seed (draws, seeds) or None) of a weighted side."""
        if not side:
            raise ValueError("Bootstrap: a side needs at least one configuration")
        parts = [(w, *self._replicates(k)) for w, k in side]
        seeds = sorted(set.intersection(*(set(obs) for _, obs, _ in parts)))
        if not seeds:
            raise ValueError(f"Bootstrap: the configurations {[k for _, k in side]} share no seed")
        observed = sum(w * np.array([obs[s] for s in seeds]) for w, obs, _ in parts)
        boot = None
        if all(reps is not None for _, _, reps in parts):
            boot = sum(w * np.stack([reps[s] for s in seeds], axis=1) for w, _, reps in parts)
        return seeds, np.asarray(observed, dtype=float), boot

    def effect(self, a: Sequence[tuple[float, Hashable]], b: Sequence[tuple[float, Hashable]]) -> Effect:
        """The difference of mean accuracy ``A - B`` (means over each side's seeds) with its interval.

        When both sides have the same seeds they are resampled together (paired by seed: the runs of one
        seed share a pruning draw, a data order, a baseline); otherwise each side's seeds on their own.
        """
        sa, oa, ba = self._side(a)
        sb, ob, bb = self._side(b)
        estimate = float(oa.mean() - ob.mean())
        per_example = ba is not None and bb is not None
        if not per_example:  # seeds only: each side's seed values stand for every draw
            ba = np.broadcast_to(oa, (self.draws, len(oa)))
            bb = np.broadcast_to(ob, (self.draws, len(ob)))
        if sa == sb:
            diffs = np.take_along_axis(ba - bb, self._seed_index(len(sa)), axis=1).mean(axis=1)
        else:
            ib = self.rng.integers(0, len(sb), size=(self.draws, len(sb)))
            diffs = np.take_along_axis(ba, self._seed_index(len(sa)), axis=1).mean(
                axis=1
            ) - np.take_along_axis(bb, ib, axis=1).mean(axis=1)
        low, high = np.percentile(diffs, [2.5, 97.5])
        return Effect(
            estimate, float(low), float(high), float(diffs.std(ddof=1)), (len(sa), len(sb)), per_example
        )


def seed_ranks(
    runs, compare: str, within: Sequence[str] = (), metric: str = "top1", replicate: Sequence[str] = ("seed",)
):
    """Rank (1 = best ``metric``) of every ``compare`` value, replicate by replicate, inside each ``within``
    group: one row per (within..., compare value), one column per replicate, plus the mean rank.

    Example:
        >>> import pandas as pd
        >>> runs = pd.DataFrame({"strategy": ["a", "b", "a", "b"], "seed": [0, 0, 1, 1], "top1": [0.9, 0.8, 0.7, 0.8]})
        >>> seed_ranks(runs, "strategy")[[0, 1]].values.tolist()
        [[1.0, 2.0], [2.0, 1.0]]
    """
    within, replicate = list(within), list(replicate)
    ranked = runs.assign(
        rank=runs.groupby(within + replicate)[metric].rank(ascending=False, method="average")
    )
    table = ranked.pivot_table(index=within + [compare], columns=replicate, values="rank")
    table.columns = [c if len(replicate) == 1 else "/".join(map(str, c)) for c in table.columns]
    return table.assign(mean_rank=table.mean(axis=1))


def flip_matrix(
    runs, compare: str, within: Sequence[str] = (), metric: str = "top1", replicate: Sequence[str] = ("seed",)
):
    """How often (over replicates) each ``compare`` value beats each other one, inside each ``within``
    group: rows (within..., A), columns B, cells :func:`flip_rate` of A over B.

    Example:
        >>> import pandas as pd
        >>> runs = pd.DataFrame({"strategy": ["a", "b", "a", "b"], "seed": [0, 0, 1, 1], "top1": [0.9, 0.8, 0.7, 0.8]})
        >>> float(flip_matrix(runs, "strategy").loc["a", "b"])
        0.5
    """
    import pandas as pd

    within, replicate = list(within), list(replicate)
    rows = []
    groups = runs.groupby(within) if within else [((), runs)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        values = {
            v: {
                tuple(r): float(m)
                for r, m in zip(g[replicate].itertuples(index=False), g[metric], strict=True)
            }
            for v, g in group.groupby(compare)
        }
        for a, va in values.items():
            rows.append(
                {
                    **dict(zip(within, key, strict=True)),
                    compare: a,
                    **{b: flip_rate(va, vb) for b, vb in values.items() if b != a},
                }
            )
    return pd.DataFrame(rows).set_index([*within, compare])

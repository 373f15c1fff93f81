"""The tests a claim spec can name, each with its parameters and its decision rule.

Every test compares *configurations*: the runs matching a filter (a table of runs column = value), one run
per replicate (``seed`` unless the spec says e.g. ``replicate = ["baseline_seed", "seed"]``). Accuracy
differences are bootstrapped over seeds and test examples (:class:`shrinkviz.metrics.paired.Bootstrap`);
all the comparisons inside one claim form a family whose p-values are Holm-corrected, so a claim's
error rate is ``alpha`` however many comparisons it makes. Outcomes:

* ``difference``: ``A - B > margin`` (``direction = "greater"``, default) or ``< -margin`` (``"less"``)
  for every level of ``over`` (and every value of a list in ``a`` / ``b``, unless that side is in
  ``pool``, which averages them). A comparison *holds* when the corrected one-sided test of the claimed
  direction rejects, is *not held* when the test of the opposite rejects, else is inconclusive.
  ``family = "all"`` (default): held when every comparison holds, not held when any is not held;
  ``"any"``: held when one holds, not held when all are not held. ``at_speedup = "highest_common"``
  compares the sides at the highest theoretical speedup both reach, each interpolated (log2 speedup)
  between its two bracketing ``over`` levels. ``quantity`` other than ``top1`` (e.g.
  ``speedup_theoretical``) bootstraps over seeds only.
* ``flip``: does the ranking of two methods (``pairs`` of ``compare`` values, or ``"all"``) change with
  ``factor`` between its two ``levels``? ``mode = "within"``: A - B under level 1 against A - B under
  level 2. ``mode = "across"``: A - B on a common level against A on one level - B on the other (e.g.
  methods reported on different baselines). A *flip* is a case where the effects compared are all
  significant (two-sided, corrected) with opposite signs. Held: at least one flip; not held: every case
  has significant effects and none flips; else inconclusive.
* ``spread``: the seed-to-seed standard deviation of ``by`` groups grows from the ``low`` level to the
  ``high`` level by more than ``margin`` times (pooled variances, F test; held / not held when the
  one-sided test of ratio > margin / < margin rejects).
* ``any_difference``: do the ``levels`` of ``compare`` differ at all? Every pair is tested two-sided;
  held when one pair differs (corrected), not held when every pair is shown equivalent within
  ``+-margin`` (two one-sided tests, corrected), else inconclusive.
* ``latency_ratio`` / ``size_ratio``: the stored side-by-side latency ratio on ``runtimes`` (or an
  artefact size relative to the baseline run's, ``quantity`` e.g. ``size_bytes_gzip``) of each ``by`` group
  lies within ``bounds``. Held when every run's figure does, not held when a group's median does not,
  else inconclusive. The interval shown is the range over runs (and, for latency, over rounds).
"""

from __future__ import annotations

from shrinkviz.experiments.claimtests import bounds, differences, rankings  # noqa: F401 - registers the tests
from shrinkviz.experiments.claimtests.base import (
    OUTCOMES,
    TESTS,
    Claim,
    ClaimSpecError,
    ClaimTest,
    Context,
    Verdict,
    available_tests,
    register_test,
)

__all__ = [
    "OUTCOMES",
    "TESTS",
    "Claim",
    "ClaimSpecError",
    "ClaimTest",
    "Context",
    "Verdict",
    "available_tests",
    "register_test",
]

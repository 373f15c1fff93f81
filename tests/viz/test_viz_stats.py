"""shrinkviz.metrics.stats: seed aggregates with Student-t CIs, Pareto sets, curve crossings."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pytest

from shrinkviz.metrics.stats import aggregate, curve_crossings, pareto_mask, t_quantile

# Student t 0.975 quantiles (reference values, 16 significant digits)
T975 = {
    1: 12.706204736174705,
    2: 4.302652729749464,
    4: 2.7764451051977943,
    9: 2.2621571627982053,
    29: 2.0452296421327043,
    1000: 1.9623390808264085,
}


@pytest.mark.parametrize("dof", sorted(T975))
def test_t_quantile_matches_reference(dof: int) -> None:
    assert t_quantile(0.975, dof) == pytest.approx(T975[dof], abs=1e-9)


def test_t_quantile_symmetry_and_bad_input() -> None:
    assert t_quantile(0.025, 4) == pytest.approx(-T975[4], abs=1e-12)
    assert t_quantile(0.5, 7) == 0.0
    with pytest.raises(ValueError, match="dof"):
        t_quantile(0.975, 0)
    with pytest.raises(ValueError, match="p must be"):
        t_quantile(1.0, 3)


def test_aggregate_ci_matches_hand_computation(runs: pd.DataFrame) -> None:
    agg = aggregate(runs, by=["strategy", "compression"], metrics=["top1", "compression_ratio"])
    assert list(agg.columns[:3]) == ["strategy", "compression", "n"]
    row = agg.loc[(agg["strategy"] == "global_weight") & (agg["compression"] == 2.0)].iloc[0]
    vals = [0.90, 0.92, 0.91]
    mean, sd = statistics.fmean(vals), statistics.stdev(vals)
    half = T975[2] * sd / math.sqrt(3)
    assert row["n"] == 3 and row["top1_n"] == 3
    assert row["top1_mean"] == pytest.approx(mean, abs=1e-12)
    assert row["top1_std"] == pytest.approx(sd, abs=1e-12)
    assert row["top1_ci95_low"] == pytest.approx(mean - half, abs=1e-12)
    assert row["top1_ci95_high"] == pytest.approx(mean + half, abs=1e-12)
    assert row["compression_ratio_mean"] == pytest.approx((2.0 + 2.1 + 1.9) / 3, abs=1e-12)
    # two seeds: t with one degree of freedom
    row = agg.loc[(agg["strategy"] == "random") & (agg["compression"] == 8.0)].iloc[0]
    half = T975[1] * statistics.stdev([0.60, 0.64]) / math.sqrt(2)
    assert (row["top1_ci95_low"], row["top1_ci95_high"]) == pytest.approx(
        (0.62 - half, 0.62 + half), abs=1e-12
    )


def test_aggregate_ignores_nan_and_counts_rows(runs: pd.DataFrame) -> None:
    agg = aggregate(runs, by="compression", metrics="top1")
    row = agg.loc[agg["compression"] == 16.0].iloc[0]
    assert row["n"] == 1 and row["top1_n"] == 0
    assert math.isnan(row["top1_mean"]) and math.isnan(row["top1_ci95_low"])
    assert agg["compression"].tolist() == [2.0, 4.0, 8.0, 16.0]
    assert agg["n"].tolist() == [5, 5, 5, 1]


def test_aggregate_single_value_collapses_band() -> None:
    agg = aggregate(pd.DataFrame({"k": ["a"], "top1": [0.7]}), by="k", metrics="top1")
    assert agg[["top1_mean", "top1_std", "top1_ci95_low", "top1_ci95_high"]].iloc[0].tolist() == [
        0.7,
        0.0,
        0.7,
        0.7,
    ]


def test_aggregate_whole_table_and_nan_keys() -> None:
    df = pd.DataFrame({"k": ["a", None, None], "v": [1.0, 2.0, 4.0]})
    whole = aggregate(df, by=[], metrics="v")
    assert whole["n"].tolist() == [3] and whole["v_mean"].iloc[0] == pytest.approx(7 / 3)
    by_key = aggregate(df, by="k", metrics="v")
    assert by_key["n"].tolist() == [1, 2]  # NaN keys form their own group, sorted last
    assert by_key["v_mean"].tolist() == [1.0, 3.0]


def test_aggregate_bad_input() -> None:
    df = pd.DataFrame({"k": ["a"], "v": [1.0], "s": ["x"]})
    with pytest.raises(ValueError, match=r"aggregate\(\) needs column\(s\) \['seed', 'top1'\]"):
        aggregate(df, by=["seed"], metrics=["top1"])
    with pytest.raises(ValueError, match="'s' is not numeric"):
        aggregate(df, by="k", metrics="s")


@pytest.fixture
def pareto_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ["A", "B", "C", "D", "E", "F", "G"],
            "top1": [0.90, 0.85, 0.85, 0.80, 0.80, 0.90, np.nan],
            "latency_ms_p50": [3.0, 1.0, 2.0, 2.0, 2.0, 3.0, 0.5],
            "size_bytes_gzip": [100, 100, 100, 50, 60, 100, 10],
        },
        index=[10, 11, 12, 13, 14, 15, 16],
    )


def test_pareto_mask_hand_table(pareto_table: pd.DataFrame) -> None:
    mask = pareto_mask(pareto_table)
    assert mask.index.tolist() == pareto_table.index.tolist()
    # C dominated by B, E by D, G has NaN; A and F are equal and both optimal
    assert pareto_table.loc[mask, "id"].tolist() == ["A", "B", "D", "F"]
    two_d = pareto_mask(pareto_table, maximize=["top1"], minimize=["latency_ms_p50"])
    assert pareto_table.loc[two_d, "id"].tolist() == ["A", "B", "F"]
    only_size = pareto_mask(pareto_table, maximize=[], minimize="size_bytes_gzip")
    assert pareto_table.loc[only_size, "id"].tolist() == ["G"]


def test_pareto_mask_bad_input(pareto_table: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="at least one"):
        pareto_mask(pareto_table, maximize=[], minimize=[])
    with pytest.raises(ValueError, match=r"pareto_mask\(\) needs column\(s\) \['latency_ms_p90'\]"):
        pareto_mask(pareto_table, minimize=["latency_ms_p90"])
    assert pareto_mask(pareto_table.iloc[0:0]).tolist() == []


def test_curve_crossings_linear_and_log() -> None:
    assert curve_crossings([0, 1, 2], [0, 1, 0], [0, 2], [0.5, 0.5]) == pytest.approx(
        [(0.5, 0.5), (1.5, 0.5)]
    )
    # in log2 space the crossing is halfway between log2(2)=1 and log2(4)=2, i.e. x = 2**1.5
    ((x, y),) = curve_crossings([2, 4], [0.9, 0.7], [2, 4], [0.8, 0.8], log_x=True)
    assert x == pytest.approx(2**1.5, abs=1e-12) and y == pytest.approx(0.8, abs=1e-12)
    assert curve_crossings([1, 2], [0, 0], [1, 2], [1, 1]) == []  # parallel


def test_pareto_tolerance_makes_noise_sized_latency_differences_ties():
    runs = pd.DataFrame(
        {"top1": [0.90, 0.89, 0.80], "latency_vs_baseline": [1.00, 0.98, 0.50], "size": [10, 10, 10]}
    )
    exact = pareto_mask(runs, maximize=["top1"], minimize=["latency_vs_baseline"])
    assert exact.tolist() == [True, True, True]  # 2% faster at 1 point less accuracy: on the exact front
    tied = pareto_mask(runs, ["top1"], ["latency_vs_baseline"], tolerance={"latency_vs_baseline": 0.05})
    assert tied.tolist() == [True, False, True]  # 2% is inside the noise: run 0 dominates run 1
    wide = pareto_mask(runs, ["top1"], ["latency_vs_baseline"], tolerance={"top1": 0.2})
    assert wide.tolist() == [False, False, True]  # accuracies within 20% count as equal: the fastest wins
    with pytest.raises(ValueError, match="not objectives"):
        pareto_mask(runs, ["top1"], ["size"], tolerance={"latency_vs_baseline": 0.05})
    with pytest.raises(ValueError, match=r"fractions in \[0, 1\)"):
        pareto_mask(runs, ["top1"], ["size"], tolerance={"size": 1.5})

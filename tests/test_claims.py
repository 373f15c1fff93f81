"""Claims as data: the verdict function on hand-made stores whose answer is known.

Each store is written through the real Store (rows validated as a sweep writes them), with per-example
correctness made so the truth is clear: a large true difference must be *held*, the reverse *not held*,
and a difference of a few examples out of thousands, or one seed, *inconclusive*.
"""

from __future__ import annotations

import numpy as np
import pytest

from shrinkviz.experiments.claims import (
    ClaimSpec,
    ClaimSpecError,
    evaluate_claims,
    export_tables,
    load_tables,
    verdict_markdown,
)
from shrinkviz.experiments.store import Store
from shrinkviz.metrics.paired import Bootstrap, flip_rate, holm, pack_correct, unpack_correct

N = 4000  # test examples


def row(
    run_id,
    *,
    top1_bits,
    strategy="a",
    compression=8.0,
    seed=0,
    finetune="shrinkbench",
    recipe="default",
    baseline_seed=0,
    method="prune",
    order="",
    speedup=4.0,
    gzip=5000,
    **extra,
):
    bits = np.asarray(top1_bits, dtype=bool)
    out = {
        "run_id": run_id,
        "status": "ok",
        "error": "",
        "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-01T00:00:01+00:00",
        "duration_s": 1.0,
        "shrinkviz_version": "0.2.0",
        "torch_version": "2.13.0",
        "device": "cpu",
        "config_json": "{}",
        "dataset": "digits",
        "model": "tiny_mlp",
        "baseline_recipe": recipe,
        "baseline_seed": baseline_seed,
        "method": method,
        "strategy": strategy if method == "prune" else "",
        "compression": compression if method == "prune" else 1.0,
        "finetune": finetune,
        "order": order,
        "stage_epochs": "",
        "quantization": "none",
        "seed": seed,
        "top1": float(bits.mean()),
        "top5": 0.99,
        "val_top1": float(bits.mean()),
        "baseline_top1": 0.9,
        "test_correct": pack_correct(bits),
        "params": 1000,
        "params_nonzero": 250,
        "compression_ratio": 4.0,
        "macs": 1000,
        "macs_nonzero": int(1000 / speedup),
        "speedup_theoretical": speedup,
        "size_bytes_raw": 12000,
        "size_bytes_gzip": gzip,
        "latency_ms_p50": 0.05,
        "latency_ms_p90": 0.07,
        "latency_runtime": "eager",
        "latency_threads": 1,
        "latency_batch": 1,
        "cpu_model": "test cpu",
    }
    out.update(extra)
    return out


def bits(accuracy, seed, shared=None):
    """Correctness with the given accuracy; with ``shared`` the same examples are hard for every model."""
    rng = np.random.default_rng(seed)
    difficulty = shared if shared is not None else rng.random(N)
    noise = rng.random(N) * 0.02  # a little per-run disagreement
    return (difficulty + noise - 0.01) < accuracy


HARD = np.random.default_rng(123).random(N)


def store_with(tmp_path, rows, latency=None):
    store = Store(tmp_path / "store")
    for r in rows:
        store.put(r, latency=[row for row in latency or [] if row["run_id"] == r["run_id"]])
    return store


def spec(*claims, **top):
    return ClaimSpec.from_dict({"title": "test", "claim": list(claims), **top})


DIFF = {
    "id": "1",
    "title": "a beats b",
    "test": "difference",
    "a": {"strategy": "a"},
    "b": {"strategy": "b"},
    "over": {"compression": [8]},
}


def two_strategies(acc_a, acc_b, seeds=(0, 1, 2)):
    return [
        row(f"{s}{k}", top1_bits=bits(acc, 10 * k + (s == "b"), HARD), strategy=s, seed=k)
        for k in seeds
        for s, acc in (("a", acc_a), ("b", acc_b))
    ]


@pytest.mark.parametrize(
    ("acc_a", "acc_b", "expected"),
    [(0.80, 0.60, "held"), (0.60, 0.80, "not held"), (0.700, 0.699, "inconclusive")],
)
def test_difference_decides_known_answers(tmp_path, acc_a, acc_b, expected):
    store = store_with(tmp_path, two_strategies(acc_a, acc_b))
    (verdict,) = evaluate_claims(spec(DIFF), store)
    assert verdict.outcome == expected, verdict.summary
    d = verdict.details.iloc[0]
    assert d["ci95_low"] <= d["estimate"] <= d["ci95_high"]
    assert abs(d["estimate"] - (acc_a - acc_b)) < 0.03


def test_a_margin_turns_a_small_sure_difference_into_not_held(tmp_path):
    store = store_with(tmp_path, two_strategies(0.72, 0.70))
    (small,) = evaluate_claims(spec(DIFF), store)
    (big,) = evaluate_claims(spec({**DIFF, "margin": 0.1}), store)
    assert small.outcome == "held" and big.outcome == "not held", (small.summary, big.summary)


def test_one_seed_is_inconclusive_and_says_why(tmp_path):
    store = store_with(tmp_path, two_strategies(0.8, 0.6, seeds=(0,)))
    (verdict,) = evaluate_claims(spec(DIFF), store)
    assert verdict.outcome == "inconclusive" and "replicate(s), the spec needs 2" in verdict.summary


def test_missing_runs_are_inconclusive_not_an_error(tmp_path):
    store = store_with(tmp_path, two_strategies(0.8, 0.6))
    (verdict,) = evaluate_claims(spec({**DIFF, "over": {"compression": [8, 32]}}), store)
    assert verdict.outcome == "inconclusive" and "no runs with x32" in verdict.summary


def test_family_all_needs_every_comparison_and_holm_counts_them(tmp_path):
    rows = two_strategies(0.8, 0.6) + [
        row(
            f"{s}{k}-16",
            top1_bits=bits(acc, 100 + 10 * k + (s == "b"), HARD),
            strategy=s,
            seed=k,
            compression=16.0,
        )
        for k in (0, 1, 2)
        for s, acc in (("a", 0.5), ("b", 0.5))
    ]
    store = store_with(tmp_path, rows)
    claim = {**DIFF, "over": {"compression": [8, 16]}}
    (all_,) = evaluate_claims(spec(claim), store)
    (any_,) = evaluate_claims(spec({**claim, "family": "any"}), store)
    assert all_.outcome == "inconclusive" and any_.outcome == "held"
    assert all_.details["outcome"].tolist() == ["held", "inconclusive"]


def test_seed_variance_widens_the_interval(tmp_path):
    """Same mean difference, but seeds that disagree: the two-level bootstrap must not be fooled."""
    steady = [(0, 0.72, 0.70), (1, 0.72, 0.70), (2, 0.72, 0.70)]
    shaky = [(0, 0.80, 0.70), (1, 0.64, 0.70), (2, 0.72, 0.70)]
    widths = []
    for name, plan in (("steady", steady), ("shaky", shaky)):
        rows = [
            row(f"{s}{k}", top1_bits=bits(acc, 10 * k + (s == "b"), HARD), strategy=s, seed=k)
            for k, a, b in plan
            for s, acc in (("a", a), ("b", b))
        ]
        (v,) = evaluate_claims(spec(DIFF), store_with(tmp_path / name, rows))
        widths.append(v.details["ci95_high"].iloc[0] - v.details["ci95_low"].iloc[0])
    assert widths[1] > 3 * widths[0]


def flip_rows(b_better_under_second: bool, seeds=(0, 1, 2)):
    rows = []
    for k in seeds:
        for preset in ("p1", "p2"):
            acc = {"a": 0.8, "b": 0.6}
            if preset == "p2" and b_better_under_second:
                acc = {"a": 0.6, "b": 0.8}
            for s in ("a", "b"):
                rows.append(
                    row(
                        f"{preset}{s}{k}",
                        top1_bits=bits(acc[s], hash((preset, s, k)) % 1000, HARD),
                        strategy=s,
                        seed=k,
                        finetune=preset,
                    )
                )
    return rows


FLIP = {
    "id": "5",
    "title": "the recipe changes the ranking",
    "test": "flip",
    "compare": "strategy",
    "factor": "finetune",
    "levels": ["p1", "p2"],
    "over": {"compression": [8]},
}


def test_flip_held_when_the_ranking_reverses_and_not_held_when_it_is_stable(tmp_path):
    (held,) = evaluate_claims(spec(FLIP), store_with(tmp_path / "f", flip_rows(True)))
    (stable,) = evaluate_claims(spec(FLIP), store_with(tmp_path / "s", flip_rows(False)))
    assert held.outcome == "held" and "significant flips: 1" in held.summary
    assert stable.outcome == "not held", stable.summary
    assert "in 3 of 3 comparisons" in held.summary and "in 0 of 3 comparisons" in stable.summary


def test_flip_across_baselines_finds_a_reversal_only_a_cross_comparison_shows(tmp_path):
    """A beats B on either baseline, but the weaker baseline drags A below B when compared across."""
    rows = []
    for k in (0, 1, 2):
        for recipe, shift in (("strong", 0.0), ("weak", -0.3)):
            for s, acc in (("a", 0.8), ("b", 0.7)):
                rows.append(
                    row(
                        f"{recipe}{s}{k}",
                        top1_bits=bits(acc + shift, hash((recipe, s, k)) % 997, HARD),
                        strategy=s,
                        seed=k,
                        recipe=recipe,
                    )
                )
    claim = {**FLIP, "factor": "baseline_recipe", "levels": ["strong", "weak"], "mode": "across"}
    (verdict,) = evaluate_claims(spec(claim), store_with(tmp_path, rows))
    (within,) = evaluate_claims(spec({**claim, "mode": "within"}), store_with(tmp_path, rows))
    assert verdict.outcome == "held" and within.outcome == "not held", (verdict.summary, within.summary)


def spread_rows(high_sd):
    rows, rng = [], np.random.default_rng(5)
    for strategy in ("a", "b", "c"):
        for comp, sd in ((2.0, 0.002), (16.0, high_sd)):
            for k in range(3):
                acc = float(np.clip(0.7 + rng.normal(0, sd), 0, 1))
                rows.append(
                    row(
                        f"{strategy}{comp}{k}",
                        top1_bits=bits(acc, k, HARD),
                        strategy=strategy,
                        compression=comp,
                        seed=k,
                    )
                )
    return rows


SPREAD = {
    "id": "3",
    "title": "seed variance grows",
    "test": "spread",
    "by": "strategy",
    "low": {"compression": 2},
    "high": {"compression": 16},
    "margin": 2,
}


def test_spread_grows_held_and_flat_not_held(tmp_path):
    (grows,) = evaluate_claims(spec(SPREAD), store_with(tmp_path / "g", spread_rows(0.05)))
    (flat,) = evaluate_claims(spec(SPREAD), store_with(tmp_path / "f", spread_rows(0.0001)))
    assert grows.outcome == "held", grows.summary
    assert flat.outcome == "not held", flat.summary


def test_any_difference_held_equivalent_and_inconclusive(tmp_path):
    def order_rows(accs):
        return [
            row(f"{o}{k}", top1_bits=bits(acc, 7 * k + i, HARD), method="pipeline", order=o, seed=k)
            for k in (0, 1, 2)
            for i, (o, acc) in enumerate(accs.items())
        ]

    claim = {
        "id": "3",
        "title": "order matters",
        "test": "any_difference",
        "compare": "order",
        "levels": ["PQD", "QPD", "DPQ"],
        "margin": 0.02,
    }
    (differ,) = evaluate_claims(
        spec(claim), store_with(tmp_path / "d", order_rows({"PQD": 0.8, "QPD": 0.8, "DPQ": 0.6}))
    )
    (same,) = evaluate_claims(
        spec(claim), store_with(tmp_path / "s", order_rows({"PQD": 0.7, "QPD": 0.7, "DPQ": 0.7}))
    )
    (unsure,) = evaluate_claims(
        spec({**claim, "margin": 0.0005}),
        store_with(tmp_path / "s", order_rows({"PQD": 0.7, "QPD": 0.7, "DPQ": 0.7})),
    )
    assert differ.outcome == "held" and same.outcome == "not held" and unsure.outcome == "inconclusive"


def latency_row(run_id, ratio, lo, hi, runtime="eager"):
    return {
        "run_id": run_id,
        "runtime": runtime,
        "choice": "",
        "fastest": False,
        "runtime_detail": "",
        "dtype": "fp32",
        "threads": 1,
        "batch": 1,
        "latency_ms_p50": 0.05 * ratio,
        "latency_ms_p90": 0.06,
        "baseline_ms_p50": 0.05,
        "baseline_runtime": runtime,
        "latency_vs_baseline": ratio,
        "latency_vs_baseline_min": lo,
        "latency_vs_baseline_max": hi,
        "rounds": 10,
        "measured_at": "2026-01-01T00:00:00+00:00",
        "sitting": "run",
        "machine_id": "m",
        "cpu_model": "test cpu",
        "cpu_isa": "avx2",
        "cpu_cores": 2,
        "torch_version": "2.13.0",
        "onnxruntime_version": "",
        "openvino_version": "",
        "error": "",
    }


@pytest.mark.parametrize(
    ("ratios", "expected"),
    [((0.98, 1.01), "held"), ((1.3, 1.4), "not held"), ((0.98, 1.3, 1.0), "inconclusive")],
)
def test_latency_ratio_within_bounds(tmp_path, ratios, expected):
    rows = [row(f"r{i}", top1_bits=bits(0.7, i, HARD), seed=i) for i in range(len(ratios))]
    lat = [latency_row(f"r{i}", r, r - 0.02, r + 0.02) for i, r in enumerate(ratios)]
    claim = {
        "id": "6",
        "title": "no speedup",
        "test": "latency_ratio",
        "by": "compression",
        "bounds": [0.9, 1.1],
    }
    (verdict,) = evaluate_claims(spec(claim), store_with(tmp_path, rows, lat))
    assert verdict.outcome == expected, verdict.summary
    assert "test cpu" in verdict.summary


def test_size_ratio_divides_by_the_baseline_run_outside_the_claims_filter(tmp_path):
    rows = [row("base", top1_bits=bits(0.9, 0, HARD), method="baseline", gzip=10000)]
    rows += [row(f"p{k}", top1_bits=bits(0.8, k, HARD), seed=k, gzip=1500) for k in range(2)]
    claim = {
        "id": "2",
        "title": "zeros compress",
        "test": "size_ratio",
        "where": {"method": "prune"},
        "bounds": [0, 0.5],
    }
    (verdict,) = evaluate_claims(spec(claim), store_with(tmp_path, rows))
    assert verdict.outcome == "held" and "0.150x" in verdict.summary


def test_interpolated_comparison_at_the_highest_common_speedup(tmp_path):
    """b reaches more speedup per compression; at a's top speedup (4x) b sits halfway between x2 and x4."""
    rows = []
    for k in (0, 1, 2):
        for comp, sa, sb, acc_a, acc_b in (
            (2.0, 2.0, 2.0, 0.9, 0.9),
            (4.0, 2.828, 4.0, 0.5, 0.85),
            (8.0, 4.0, 8.0, 0.3, 0.1),
        ):
            rows.append(
                row(
                    f"a{comp}{k}",
                    top1_bits=bits(acc_a, k, HARD),
                    strategy="a",
                    compression=comp,
                    seed=k,
                    speedup=sa,
                )
            )
            rows.append(
                row(
                    f"b{comp}{k}",
                    top1_bits=bits(acc_b, k + 50, HARD),
                    strategy="b",
                    compression=comp,
                    seed=k,
                    speedup=sb,
                )
            )
    claim = {
        "id": "1c",
        "title": "b wins at equal speedup",
        "test": "difference",
        "a": {"strategy": "b"},
        "b": {"strategy": "a"},
        "over": {"compression": [2, 4, 8]},
        "at_speedup": "highest_common",
    }
    (verdict,) = evaluate_claims(spec(claim), store_with(tmp_path, rows))
    d = verdict.details.iloc[0]
    assert verdict.outcome == "held" and abs(d["a_mean"] - 0.85) < 0.02 and abs(d["b_mean"] - 0.3) < 0.02


def test_csv_round_trip_gives_the_same_verdicts(tmp_path):
    store = store_with(tmp_path, two_strategies(0.8, 0.6))
    export_tables(store, tmp_path / "csv")
    assert {p.name for p in (tmp_path / "csv").iterdir()} == {"runs.csv", "correct.csv", "latency.csv"}
    runs, _ = load_tables(tmp_path / "csv")
    assert unpack_correct(runs.sort_values("run_id")["test_correct"].iloc[0]).size == N
    a, b = evaluate_claims(spec(DIFF), store)[0], evaluate_claims(spec(DIFF), tmp_path / "csv")[0]
    assert a.outcome == b.outcome and a.summary == b.summary
    assert verdict_markdown([a]).startswith("| claim | outcome | the numbers |")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"claim": [{**DIFF, "marign": 0.1}]}, "unknown key 'marign'; did you mean 'margin'?"),
        ({"claim": [{**DIFF, "test": "diference"}]}, "did you mean 'difference'"),
        ({"claim": [{**DIFF, "a": {"stratgy": "a"}}]}, "not a runs column"),
        ({"claim": [{**DIFF, "direction": "up"}]}, "direction='up'"),
        ({"claim": [DIFF, DIFF]}, "claim ids repeat"),
        ({"claim": []}, "declare at least one"),
        ({"alpha": 2, "claim": [DIFF]}, "alpha=2"),
    ],
)
def test_bad_specs_fail_before_any_work_with_the_fix(doc, message):
    with pytest.raises(ClaimSpecError, match=None) as info:
        ClaimSpec.from_dict({"title": "t", **doc}, source="x.toml")
    assert message in str(info.value) and str(info.value).startswith("x.toml")


def test_the_committed_specs_are_valid():
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "notebooks" / "claims"
    specs = sorted(folder.glob("*.toml"))
    assert len(specs) >= 2
    for path in specs:
        assert ClaimSpec.load(path).claims


def test_paired_helpers():
    x = np.random.default_rng(0).random(1001) < 0.5
    assert np.array_equal(unpack_correct(pack_correct(x)), x)
    with pytest.raises(ValueError, match="expected '<count>:<base64 bits>'"):
        unpack_correct("garbage")
    assert holm([0.01, 0.02, np.nan]).tolist()[:2] == [0.02, 0.02]
    assert flip_rate({0: 1, 1: 0}, {0: 0, 1: 0}) == 0.75
    with pytest.raises(ValueError, match="share no seed"):
        Bootstrap({"a": {0: 0.5}, "b": {1: 0.4}}).effect([(0.5, "a"), (0.5, "b")], [(1.0, "a")])
    unpaired = Bootstrap({"a": {0: 0.5, 1: 0.6}, "b": {2: 0.4, 3: 0.4}}).effect([(1.0, "a")], [(1.0, "b")])
    assert unpaired.seeds == (2, 2) and not unpaired.per_example and round(unpaired.estimate, 6) == 0.15

"""shrinkviz.viz.report: pruning curves are drawn per protocol (baseline x finetuning), never averaged across
the confounders, and the runs table names the protocol when it varies."""

from __future__ import annotations

import pandas as pd
import pytest

from shrinkviz.viz.report import build_sections


def _stored(runs: pd.DataFrame) -> pd.DataFrame:
    """The viz fixture plus the provenance columns a store adds."""
    return runs.assign(shrinkviz_version="0.1.0", torch_version="2.13.0+cpu")


def _headings(sections) -> list[str]:
    return [name for name, _ in sections]


def test_one_pruning_figure_per_protocol(runs: pd.DataFrame) -> None:
    runs = _stored(runs)
    other = runs.assign(baseline_recipe="adam_lr1e-4", run_id=runs["run_id"] + "-b", top1=runs["top1"] - 0.1)
    sections = build_sections(pd.concat([runs, other], ignore_index=True))
    pruning = [h for h in _headings(sections) if h.startswith("Pruning")]
    assert pruning == [
        "Pruning (baseline_recipe adam_lr1e-4): accuracy vs compression and vs theoretical speedup",
        "Pruning (baseline_recipe shrinkbench): accuracy vs compression and vs theoretical speedup",
    ]
    figures = dict(sections)
    for heading, expected in zip(pruning, ([0.81, 0.78, 0.72], [0.91, 0.88, 0.82]), strict=True):
        fig = figures[heading]  # global_weight's mean top-1 per compression: this protocol's runs only
        assert not isinstance(fig, str), fig
        means = [list(t.y) for t in fig.data if t.name == "global_weight"]
        assert means and all(m == pytest.approx(expected, abs=1e-9) for m in means), means
    table = figures["All successful runs"]
    assert "baseline_recipe" in table.columns and "finetune" not in table.columns


def test_single_protocol_keeps_the_plain_heading(runs: pd.DataFrame) -> None:
    sections = build_sections(_stored(runs))
    assert "Pruning: accuracy vs compression and vs theoretical speedup" in _headings(sections)
    assert "baseline_recipe" not in dict(sections)["All successful runs"].columns

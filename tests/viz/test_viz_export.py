"""shrinkviz.viz.export: standalone offline HTML, written atomically."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from plotly.offline import get_plotlyjs

from shrinkviz.viz import CompressionExplorer, FrontierExplorer, curves, frontier, report_html, to_html

PLOTLY_BANNER = get_plotlyjs()[:40]  # "/**\n* plotly.js v..." header of the embedded bundle


def figure_payloads(text: str) -> list[dict]:
    """The data arrays passed to Plotly.newPlot in an exported page."""
    return [
        json.loads(m) for m in re.findall(r'Plotly\.newPlot\(\s*"[^"]+",\s*(\[.*?\]),\s*\{', text, flags=re.S)
    ]


def values(v: list | dict) -> list:
    """Plain list of a JSON array, decoding plotly's base64 typed arrays ({'bdata', 'dtype'})."""
    if isinstance(v, dict):
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]).tolist()
    return v


def test_to_html_figure_is_standalone_and_atomic(tmp_path: Path, runs: pd.DataFrame) -> None:
    target = tmp_path / "out" / "curves.html"
    path = to_html(curves(runs), target)
    assert path == target and target.is_file()
    text = target.read_text(encoding="utf-8")
    assert text.count(PLOTLY_BANNER) == 1  # plotly.js embedded: opens offline
    assert re.search(r"<script[^>]*\bsrc=", text) is None  # nothing fetched from a CDN
    data = figure_payloads(text)[0]
    assert [t["name"] for t in data][:2] == ["global_weight 95% CI", "global_weight"]
    assert values(data[1]["y"]) == pytest.approx([0.91, 0.88, 0.82], abs=1e-12)
    assert sorted(p.name for p in target.parent.iterdir()) == ["curves.html"]  # no temp file left


def test_to_html_overwrites_and_failed_write_leaves_nothing(tmp_path: Path, runs: pd.DataFrame) -> None:
    target = tmp_path / "f.html"
    target.write_text("old")
    to_html(frontier(runs), target, title="Frontier")
    assert (
        target.read_text(encoding="utf-8").startswith("<!doctype html>") and "Frontier" in target.read_text()
    )
    with pytest.raises(TypeError, match="expected a plotly Figure or an explorer"):
        to_html({"data": []}, tmp_path / "bad.html")
    with pytest.raises(TypeError, match="cannot render a section of type int"):
        report_html([("x", 3)], tmp_path / "bad.html")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.html"]


def test_report_html_embeds_plotlyjs_once(tmp_path: Path, runs: pd.DataFrame) -> None:
    table = runs[["run_id", "strategy", "top1"]].head(3)
    path = report_html(
        [
            ("Curves", curves(runs)),
            ("Frontier", frontier(runs)),
            ("Runs", table),
            "Plain text <not html>",
            go.FigureWidget(curves(runs, x="speedup_theoretical")),
        ],
        tmp_path / "report.html",
        title="Sweep & report",
    )
    text = path.read_text(encoding="utf-8")
    assert text.count(PLOTLY_BANNER) == 1
    assert text.count("Plotly.newPlot(") == 3
    assert "<title>Sweep &amp; report</title>" in text and "<h2>Runs</h2>" in text
    assert "Plain text &lt;not html&gt;" in text
    assert "<td>gl-2-0</td>" in text and "<th>top1</th>" in text
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_report_html_cdn_is_small_and_fetches_the_installed_version(
    tmp_path: Path, runs: pd.DataFrame
) -> None:
    import plotly

    inline = report_html({"Curves": curves(runs)}, tmp_path / "inline.html")
    cdn = report_html({"Curves": curves(runs)}, tmp_path / "cdn.html", plotlyjs="cdn")
    text = cdn.read_text(encoding="utf-8")
    assert PLOTLY_BANNER not in text and text.count("Plotly.newPlot(") == 1
    (src,) = re.findall(r"<script[^>]*\bsrc='([^']+)'", text)
    assert src.startswith("https://") and src.endswith(".js")
    assert plotly.__version__ in src or re.search(r"plotly-\d+\.\d+\.\d+", src)  # pinned, not "latest"
    assert inline.stat().st_size - cdn.stat().st_size > 3_000_000
    with pytest.raises(ValueError, match="plotlyjs='web': valid values are inline, cdn"):
        report_html({"Curves": curves(runs)}, tmp_path / "bad.html", plotlyjs="web")
    assert not (tmp_path / "bad.html").exists()


def test_report_html_accepts_mapping(tmp_path: Path, runs: pd.DataFrame) -> None:
    path = report_html({"A": curves(runs), "B": runs.head(1)}, tmp_path / "m.html")
    text = path.read_text(encoding="utf-8")
    assert text.index("<h2>A</h2>") < text.index("<h2>B</h2>") and text.count("Plotly.newPlot(") == 1


def test_explorer_snapshot_exports_current_view(tmp_path: Path, store) -> None:
    ex = CompressionExplorer(store)
    ex.slider.value = 8.0
    text = to_html(ex, tmp_path / "explorer.html").read_text(encoding="utf-8")
    assert text.count(PLOTLY_BANNER) == 1 and text.count("Plotly.newPlot(") == 2
    payloads = figure_payloads(text)
    selected = next(t for t in payloads[0] if t.get("name") == "selected")
    assert values(selected["x"]) == pytest.approx([8.0], abs=1e-12)
    assert values(selected["y"]) == pytest.approx([0.82], abs=1e-12)
    assert values(payloads[1][0]["x"]) == ["conv1", "layer1.conv", "fc"]
    assert "<td>gl-8-0</td>" in text and "<title>CompressionExplorer</title>" in text

    fx = FrontierExplorer(store)
    fx.filters["method"].value = "prune"
    text = to_html(fx, tmp_path / "frontier.html").read_text(encoding="utf-8")
    assert text.count("Plotly.newPlot(") == 1 and "<td>prune</td>" not in text and "method" in text

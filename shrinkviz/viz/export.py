"""Static export: standalone HTML files that open offline (plotly.js embedded), written atomically.

A report can instead load plotly.js from its CDN (``plotlyjs="cdn"``): about 4.5 MB smaller, for pages that
are published or committed (the ``docs/`` reports), at the price of needing a network to draw the figures.

Example:
    >>> import pathlib, tempfile
    >>> import pandas as pd
    >>> import plotly.graph_objects as go
    >>> from plotly.offline import get_plotlyjs
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> fig = go.Figure(go.Scatter(x=[1, 2], y=[3, 4]))
    >>> page = to_html(fig, folder / "fig.html").read_text()
    >>> get_plotlyjs() in page  # plotly.js itself is in the file: it opens offline
    True
    >>> report = report_html([("Curves", fig), ("Runs", pd.DataFrame({"top1": [0.9]}))], folder / "r.html",
    ...                      "Sweep", plotlyjs="cdn").read_text()
    >>> [h for h in ("<h1>Sweep</h1>", "<h2>Curves</h2>", "<h2>Runs</h2>", "<td>0.9</td>") if h in report]
    ['<h1>Sweep</h1>', '<h2>Curves</h2>', '<h2>Runs</h2>', '<td>0.9</td>']
    >>> len(report) < len(page) - 4_000_000, get_plotlyjs() in report
    (True, False)
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.basedatatypes import BaseFigure
from plotly.offline import get_plotlyjs

from shrinkviz.core.io import atomic_write_text

__all__ = ["report_html", "to_html"]

PLOTLYJS = ("inline", "cdn")

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; padding: 0 1em; }
h1 { font-weight: 600; } h2 { font-weight: 500; margin-top: 2em; border-bottom: 1px solid #ddd; }
table.dataframe { border-collapse: collapse; font-size: 13px; margin: 1em 0; }
table.dataframe th, table.dataframe td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
table.dataframe th { background: #f5f5f5; }
.section-text { white-space: pre-wrap; }
"""


def _figure_div(fig: BaseFigure) -> str:
    return go.Figure(fig).to_html(include_plotlyjs=False, full_html=False, config={"responsive": True})


def _section_html(obj: Any) -> str:
    if isinstance(obj, BaseFigure):
        return _figure_div(obj)
    if isinstance(obj, pd.DataFrame):
        return obj.to_html(index=False, border=0, na_rep="", float_format=lambda v: f"{v:.6g}")
    if hasattr(obj, "snapshot"):
        return "\n".join(_titled(name, item, level=3) for name, item in obj.snapshot())
    if isinstance(obj, str):
        return f"<p class='section-text'>{html.escape(obj)}</p>"
    raise TypeError(
        f"report_html: cannot render a section of type {type(obj).__name__} "
        "(expected a plotly Figure, a DataFrame, an explorer or a str)"
    )


def _titled(name: str | None, obj: Any, level: int = 2) -> str:
    head = f"<h{level}>{html.escape(str(name))}</h{level}>\n" if name else ""
    return f"<section>{head}{_section_html(obj)}</section>"


def _plotlyjs_tag(plotlyjs: str) -> str:
    if plotlyjs == "inline":
        return f"<script type='text/javascript'>{get_plotlyjs()}</script>"
    if plotlyjs == "cdn":
        from plotly.io._utils import plotly_cdn_url  # the URL of the installed plotly.js version

        return f"<script charset='utf-8' src='{plotly_cdn_url()}'></script>"
    raise ValueError(f"plotlyjs={plotlyjs!r}: valid values are {', '.join(PLOTLYJS)}")


def report_html(
    sections: Iterable[Any] | Mapping[str, Any],
    path: str | os.PathLike[str],
    title: str = "shrinkviz report",
    plotlyjs: str = "inline",
) -> Path:
    """Assemble figures, tables and text into ONE standalone HTML page with plotly.js embedded once.

    Args:
        sections: items, each a ``go.Figure`` (or FigureWidget), a ``DataFrame`` (rendered with
            ``DataFrame.to_html``), an explorer (its ``snapshot()``), or a ``str`` (an escaped paragraph);
            or ``(heading, item)`` pairs; or a mapping heading -> item.
        path: output file; parent directories are created; written atomically.
        title: page title and top heading.
        plotlyjs: ``inline`` (default: embedded once, opens offline) or ``cdn`` (a script tag to plotly's
            CDN for the installed version: a small file that needs a network to draw).

    Returns:
        The path written.

    Raises:
        TypeError: a section of an unsupported type.
        ValueError: an unknown ``plotlyjs``.

    Example:
        >>> import pathlib, tempfile
        >>> import pandas as pd
        >>> runs = pd.DataFrame({"strategy": "random", "compression": [2.0, 4.0],
        ...                      "compression_ratio": [2.0, 4.0], "top1": [0.9, 0.8]})
        >>> from shrinkviz.viz.figures import curves
        >>> path = report_html({"Curves": curves(runs), "Runs": runs, "Note": "a <b> c"},
        ...                    pathlib.Path(tempfile.mkdtemp()) / "out" / "report.html")
        >>> page = path.read_text()
        >>> page.count("<section>"), ">a &lt;b&gt; c</p>" in page, page.count("<table")
        (3, True, 1)
    """
    script = _plotlyjs_tag(plotlyjs)
    items = sections.items() if isinstance(sections, Mapping) else sections
    body = []
    for item in items:
        name, obj = (
            item if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) else (None, item)
        )
        body.append(_titled(name, obj))
    page = (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n"
        f"{script}\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )
    return atomic_write_text(path, page)


def to_html(fig_or_explorer: Any, path: str | os.PathLike[str], title: str | None = None) -> Path:
    """Write one figure, or an explorer's current view, as a standalone offline HTML file.

    Args:
        fig_or_explorer: a ``go.Figure`` / ``FigureWidget``, or an object with ``snapshot()`` (the
            explorers), whose current figures and readouts are exported.
        path: output file (written atomically).
        title: page title (default: the figure's title, or the explorer's class name).

    Returns:
        The path written.

    Example:
        >>> import pathlib, tempfile
        >>> import plotly.graph_objects as go
        >>> path = to_html(go.Figure(go.Bar(y=[1])), pathlib.Path(tempfile.mkdtemp()) / "bar.html", "Bars")
        >>> '"title":{"text":"Bars"}' in path.read_text()  # the title goes into the figure's layout
        True
    """
    if isinstance(fig_or_explorer, BaseFigure):
        fig = go.Figure(fig_or_explorer)
        if title:
            fig.update_layout(title={"text": title})
        return atomic_write_text(path, fig.to_html(include_plotlyjs=True, full_html=True))
    if hasattr(fig_or_explorer, "snapshot"):
        return report_html(fig_or_explorer.snapshot(), path, title or type(fig_or_explorer).__name__)
    raise TypeError(f"to_html: expected a plotly Figure or an explorer, got {type(fig_or_explorer).__name__}")

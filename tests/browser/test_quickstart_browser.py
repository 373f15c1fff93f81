"""End to end, as a person uses it: the quickstart notebook in JupyterLab in a real headless Chromium.

The test opens ``notebooks/01_quickstart.ipynb`` (smoke profile) in a JupyterLab server of its own, runs
every cell from the Run menu, and checks that no cell failed, that the CompressionExplorer's Plotly
figures are drawn with every trace of the figure, that the widget front ends logged no errors, and that
moving the compression-ratio slider with the keyboard (and picking the other strategy from the
dropdown) moves the highlighted point and rewrites the readouts to the values of the selected run as
stored in the results store the notebook wrote. Screenshots go to ``test-artifacts/browser/``.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "browser"
NOTEBOOK = "01_quickstart.ipynb"
EXPLORER_SOURCE = "sv.viz.CompressionExplorer(result)"
PROFILE_SOURCE = "sv.profiles.describe("
RUN_ALL_S = 420.0  # the smoke notebook takes 1-2 min here under load
UPDATE_S = 60.0  # a slider move: kernel round trip + Plotly redraw
STDERR = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
WIDGET_EXTENSIONS = ("@jupyter-widgets/jupyterlab-manager", "anywidget", "jupyterlab-plotly")
# Console noise that is not a failure: (pattern, why). Keep each entry justified; none is needed today.
BENIGN_CONSOLE: list[tuple[str, str]] = []
WIDGET_WORDS = re.compile(r"widget|anywidget|plotly|Failed to load model|comm", re.I)

NOTEBOOK_STATE_JS = """() => {
  const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
    .map(e => e.textContent.trim());
  const stderr = [...document.querySelectorAll('STDERR_SELECTOR')].map(e => e.innerText);
  const dialogs = [...document.querySelectorAll('.jp-Dialog')].map(e => e.innerText.replace(/\\s+/g, ' '));
  const status = [...document.querySelectorAll('.jp-StatusBar-TextItem')]
    .map(e => e.textContent).find(t => t.includes(' | ')) || '';
  return {prompts, stderr, dialogs, status};
}""".replace("STDERR_SELECTOR", STDERR)

# Everything the test reads from the explorer's output, in one round trip. `expected` = [x, y] of the
# selected run (data units) to map to pixels with the drawn axes.
EXPLORER_STATE_JS = """(cell, expected) => {
  const out = {};
  out.vbox = !!cell.querySelector('.jp-OutputArea .widget-vbox');
  out.outputText = cell.querySelector('.jp-OutputArea').innerText.slice(0, 400);
  const html = cell.querySelector('.widget-html-content');
  out.readout = html ? html.innerText : null;
  out.rows = html ? [...html.querySelectorAll('tr')].map(tr => [...tr.querySelectorAll('td')]
    .map(td => td.innerText.trim())) : [];
  const readout = cell.querySelector('.widget-slider .widget-readout');
  out.sliderText = readout ? readout.innerText.trim() : null;
  const select = cell.querySelector('.widget-dropdown select');
  out.strategyText = select ? select.options[select.selectedIndex].text : null;
  const plots = [...cell.querySelectorAll('.js-plotly-plot')];
  out.nPlots = plots.length;
  const curve = plots[0];
  if (curve && curve.data && curve._fullLayout && curve._fullLayout.xaxis) {
    const groups = [...curve.querySelectorAll('.scatterlayer g.trace')];
    const sel = curve.data[curve.data.length - 1];
    const xa = curve._fullLayout.xaxis, ya = curve._fullLayout.yaxis;
    const points = groups.length ? [...groups[groups.length - 1].querySelectorAll('path.point')] : [];
    out.curve = {
      names: curve.data.map(t => t.name),
      svgTraces: groups.length,
      drawnTraces: groups.filter(g => g.querySelector('path')).length,
      selected: sel ? {name: sel.name, x: Array.from(sel.x || []), y: Array.from(sel.y || [])} : null,
      marker: points.map(p => (p.getAttribute('transform') || '').match(/-?[\\d.]+/g).map(Number)),
      expectedPx: expected ? [xa.c2p(expected[0]), ya.c2p(expected[1])] : null,
    };
  }
  const bars = plots[1];
  if (bars && bars.data && bars._fullLayout) {
    out.layers = {
      title: (bars._fullLayout.title && bars._fullLayout.title.text) || '',
      n: bars.data.length ? Array.from(bars.data[0].x || []).length : 0,
      svgBars: bars.querySelectorAll('.barlayer g.point path').length,
    };
  }
  return out;
}"""


def log(msg: str) -> None:
    print(f"[browser {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_widget_labextensions_enabled() -> None:
    """The JupyterLab front ends the widgets need are installed and enabled."""
    proc = subprocess.run(
        [sys.executable, "-m", "jupyter", "labextension", "list"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    listing = strip_ansi(proc.stdout + proc.stderr)
    assert proc.returncode == 0, listing
    for name in WIDGET_EXTENSIONS:
        assert re.search(rf"^\s*{re.escape(name)} v\S+ enabled OK\b", listing, re.M), (
            f"{name} is not listed as 'enabled OK' by `jupyter labextension list`:\n{listing}"
        )


def _expected_views(results: Path) -> dict[tuple[str, float], dict]:
    """Per (strategy, compression): the readout and highlighted point the explorer must show.

    Computed from the results store the notebook wrote, independently of the widget: the representative
    run is the lowest seed (ties by run id); the highlighted point is the mean over seeds.
    """
    from shrinkviz.experiments.store import Store

    runs = Store(results).runs()
    ok = runs[runs["status"] == "ok"]
    if not len(ok):
        stored = sorted(str(p.relative_to(results.parents[1])) for p in results.parents[1].rglob("*.json"))
        pytest.fail(f"the notebook stored no successful run in {results}; results files: {stored}")
    views = {}
    for (strategy, compression), sel in ok.groupby(["strategy", "compression"]):
        rep = sel.sort_values(["seed", "run_id"]).iloc[0]
        views[(str(strategy), float(compression))] = {
            "run_id": str(rep["run_id"]),
            "header": f"at {compression:g}× (run {rep['run_id']}, seed {rep['seed']}",
            "slider": f"{compression:g}×",
            "rows": {
                "top-1": f"{rep['top1']:.2%}",
                "latency p50": f"{rep['latency_ms_p50']:.3g} ms",
                "theoretical speedup": f"{rep['speedup_theoretical']:.3g}×",
                "compression achieved": f"{rep['compression_ratio']:.3g}×",
            },
            "point": (float(sel["compression_ratio"].mean()), float(sel["top1"].mean())),
        }
    return views


def _view_problems(state: dict, want: dict, n_traces: int, trace_names: list[str]) -> list[str]:
    """What differs between the explorer as drawn in the page and the selected run (empty: all good)."""
    problems = []
    if want["slider"] != state.get("sliderText"):
        problems.append(f"slider shows {state.get('sliderText')!r}, expected {want['slider']!r}")
    readout = state.get("readout") or ""
    if want["header"] not in readout:
        problems.append(f"readout {readout[:120]!r} does not name {want['header']!r}")
    rows = {r[0]: r[1] for r in state.get("rows", []) if len(r) == 2}
    for key, value in want["rows"].items():
        if rows.get(key) != value:
            problems.append(f"readout {key!r} = {rows.get(key)!r}, expected {value!r}")
    curve = state.get("curve")
    if not curve:
        return [*problems, "the accuracy figure is not drawn"]
    if curve["names"] != trace_names:
        problems.append(f"figure traces {curve['names']} != {trace_names}")
    if curve["svgTraces"] != n_traces or curve["drawnTraces"] != n_traces:
        problems.append(
            f"{curve['svgTraces']} trace groups ({curve['drawnTraces']} with marks) in the SVG, expected {n_traces}"
        )
    sel, (wx, wy) = curve["selected"], want["point"]
    if not sel or sel["name"] != "selected" or len(sel["x"]) != 1:
        return [*problems, f"no single highlighted point: {sel}"]
    if not (math.isclose(sel["x"][0], wx, rel_tol=1e-9) and math.isclose(sel["y"][0], wy, rel_tol=1e-9)):
        problems.append(f"highlighted point at ({sel['x'][0]}, {sel['y'][0]}), expected ({wx}, {wy})")
    marker, px = curve["marker"], curve["expectedPx"]
    if len(marker) != 1 or not px or abs(marker[0][0] - px[0]) > 1.5 or abs(marker[0][1] - px[1]) > 1.5:
        problems.append(f"highlight marker drawn at {marker}, expected pixel {px}")
    layers = state.get("layers") or {}
    if want["run_id"] not in layers.get("title", ""):
        problems.append(f"layer chart title {layers.get('title')!r} does not name run {want['run_id']}")
    if not layers.get("n") or layers.get("svgBars") != layers.get("n"):
        problems.append(f"layer chart draws {layers.get('svgBars')} bars for {layers.get('n')} layers")
    return problems


@pytest.mark.slow
def test_quickstart_in_jupyterlab(browser_page, lab, watchdog, monkeypatch) -> None:
    page, console = browser_page
    # The notebook's store, as the kernel resolves it (same cache and profile as the server's env).
    from shrinkviz.experiments.profiles import store_path

    monkeypatch.setenv("SHRINKVIZ_CACHE", str(lab.cache))
    monkeypatch.setenv("SHRINKVIZ_PROFILE", "smoke")
    results = store_path(Path(NOTEBOOK).stem)
    t0 = time.monotonic()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "quickstart.png"
    for stale in ARTIFACTS.glob("quickstart*.png"):
        stale.unlink()
    try:
        _drive(page, lab, results, shot, t0)
    except BaseException as e:
        try:
            page.screenshot(path=str(ARTIFACTS / "quickstart-failure.png"), timeout=15_000)
            log(f"failure screenshot: {ARTIFACTS / 'quickstart-failure.png'}")
        except Exception:  # noqa: BLE001 - the browser may be gone
            pass
        log("server log tail:\n" + lab.log_tail(25))
        if watchdog.fired:
            pytest.fail(f"watchdog: the browser test exceeded its {watchdog.budget_s:.0f} s budget ({e!r})")
        raise
    _check_console(console)
    log(f"done in {time.monotonic() - t0:.0f} s; screenshot {shot}")


def _wait_for_kernel(page, lab, deadline: float) -> None:
    """The notebook's kernel session exists, is connected and idle, and the page says so."""
    while True:
        sessions = lab.api("GET", "/api/sessions")
        kernel = next((s["kernel"] for s in sessions if s["path"] == NOTEBOOK), None)
        state = page.evaluate(NOTEBOOK_STATE_JS)
        if state["dialogs"]:
            pytest.fail(f"unexpected dialog while opening the notebook: {state['dialogs']}")
        if (
            kernel
            and kernel["execution_state"] == "idle"
            and kernel["connections"] >= 1
            and state["status"].endswith("| Idle")
        ):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"kernel not ready: session {kernel}, status bar {state['status']!r}")
        time.sleep(0.5)


def _run_all(page) -> None:
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")


def _drive(page, lab, results: Path, shot: Path, t0: float) -> None:
    code_cells = [
        c for c in json.loads((lab.root / NOTEBOOK).read_text())["cells"] if c["cell_type"] == "code"
    ]
    page.goto(f"{lab.url}/lab/tree/{NOTEBOOK}?token={lab.token}&reset", timeout=120_000)
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-CodeCell", timeout=120_000)
    _wait_for_kernel(page, lab, time.monotonic() + 120)
    log(f"notebook open, kernel idle after {time.monotonic() - t0:.0f} s")
    page.keyboard.press("Control+b")  # hide the file browser: more room for the figures

    _run_all(page)
    started = time.monotonic()
    deadline = started + RUN_ALL_S
    retried = False
    while True:
        state = page.evaluate(NOTEBOOK_STATE_JS)
        errors = [s for s in state["stderr"] if re.search(r"Traceback|Error", s)]
        if errors:
            pytest.fail("a cell failed:\n" + strip_ansi(errors[0])[-3000:])
        if state["dialogs"]:
            pytest.fail(f"dialog while running the notebook: {state['dialogs']}")
        prompts = state["prompts"]
        if (
            len(prompts) == len(code_cells)
            and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts)
            and state["status"].endswith("| Idle")
        ):
            break
        if not retried and time.monotonic() - started > 20 and all(p == "[ ]:" for p in prompts):
            log("Run All did not start any cell; using the menu once more")  # click raced the kernel
            _run_all(page)
            retried = True
        if time.monotonic() > deadline:
            pytest.fail(
                f"notebook not finished after {RUN_ALL_S:.0f} s: prompts {prompts}, {state['status']!r}"
            )
        time.sleep(1.0)
    numbers = [int(p[1:-2]) for p in prompts]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers), (
        f"cells ran out of order: {prompts}"
    )
    log(f"all {len(prompts)} code cells ran in {time.monotonic() - started:.0f} s")
    for s in state["stderr"]:
        log(f"stderr output (not an error): {s[:200]!r}")

    profile_cell = page.locator(".jp-CodeCell").filter(has_text=PROFILE_SOURCE)
    profile_out = profile_cell.locator(".jp-OutputArea-output").inner_text().strip()
    assert profile_out.startswith("profile=smoke "), (
        f"the notebook did not run in the smoke profile: {profile_out!r}"
    )

    # What the explorer must show, from the results the notebook stored (in the server's cache).
    from shrinkviz.experiments.store import Store
    from shrinkviz.viz import CompressionExplorer
    from shrinkviz.viz._style import display_label

    views = _expected_views(results)
    reference = CompressionExplorer(Store(results))
    trace_names = [t.name for t in reference.figure.data]
    n_traces = len(trace_names)
    strategies = sorted({s for s, _ in views})
    log(f"expected: {n_traces} traces {trace_names}; runs {sorted(views)}")

    cell = page.locator(".jp-CodeCell").filter(has_text=EXPLORER_SOURCE)
    assert cell.count() == 1, f"expected one cell running {EXPLORER_SOURCE!r}, found {cell.count()}"
    cell.scroll_into_view_if_needed()

    def wait_for(strategy: str, compression: float, what: str) -> dict:
        want = views[(strategy, compression)]
        end = time.monotonic() + UPDATE_S
        while True:
            state = cell.evaluate(EXPLORER_STATE_JS, list(want["point"]))
            if not state["vbox"]:
                pytest.fail(f"the explorer widget did not render (widget manager?): {state['outputText']!r}")
            if state.get("strategyText") == display_label(strategy):
                problems = _view_problems(state, want, n_traces, trace_names)
                if not problems:
                    log(f"{what}: {strategy} at {compression:g}× -> run {want['run_id']} shown")
                    return state
            else:
                problems = [f"strategy dropdown shows {state.get('strategyText')!r}"]
            if time.monotonic() > end:
                pytest.fail(
                    f"{what}: the explorer does not show {strategy} at {compression:g}× "
                    f"(run {want['run_id']}) after {UPDATE_S:.0f} s:\n  " + "\n  ".join(problems)
                )
            time.sleep(0.5)

    first = strategies[0]
    compressions = sorted(c for s, c in views if s == first)
    wait_for(first, compressions[0], "initial view")
    assert len(compressions) >= 2, f"the slider needs two compressions to move; runs: {sorted(views)}"

    handle = cell.locator(".widget-slider .noUi-handle")
    handle.focus()
    for c in compressions[1:]:
        page.keyboard.press("ArrowRight")
        wait_for(first, c, "slider ArrowRight")
    for c in reversed(compressions[:-1]):
        page.keyboard.press("ArrowLeft")
        wait_for(first, c, "slider ArrowLeft")

    if len(strategies) > 1:  # the other strategy, picked from the dropdown: the slider keeps its ratio
        other = strategies[1]
        cell.locator(".widget-dropdown select").select_option(label=display_label(other))
        other_compressions = sorted(c for s, c in views if s == other)
        nearest = min(other_compressions, key=lambda c: (abs(math.log2(c / compressions[0])), c))
        wait_for(other, nearest, "strategy dropdown")
        handle.focus()
        for c in [c for c in other_compressions if c > nearest]:
            page.keyboard.press("ArrowRight")
            wait_for(other, c, "slider ArrowRight")

    cell.scroll_into_view_if_needed()
    page.screenshot(path=str(shot))
    cell.locator(".jp-OutputArea").screenshot(path=str(shot.with_name("quickstart-explorer.png")))


def _check_console(console) -> None:
    def benign(text: str) -> bool:
        return any(re.search(p, text) for p, _why in BENIGN_CONSOLE)

    errors = [
        f"console.error: {t} ({loc})"
        for kind, t, loc in console.messages
        if kind == "error" and not benign(t)
    ]
    errors += [f"page error: {e}" for e in console.page_errors if not benign(e)]
    errors += [
        f"console.warning: {t} ({loc})"
        for kind, t, loc in console.messages
        if kind == "warning" and WIDGET_WORDS.search(t) and not benign(t)
    ]
    for kind, text, _loc in console.messages:
        if kind not in ("debug", "log", "info"):
            log(f"console.{kind}: {text[:300]}")
    assert not errors, "the page logged errors:\n" + "\n".join(errors)

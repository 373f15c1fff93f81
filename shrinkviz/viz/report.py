"""A static HTML report of a results store: frontier, curves, ablation, per-layer sparsity and tables.

One standalone file (plotly.js embedded once, so it opens offline) built from the viz figures and
``shrinkviz.viz.export.report_html``. Runs are reported per (dataset, model) context, because a frontier
or an accuracy curve mixing datasets means nothing; failed runs get their own table with their errors.

Example:
    >>> import re, tempfile
    >>> from shrinkviz.experiments.experiment import Experiment
    >>> from shrinkviz.experiments.sweep import sweep
    >>> base = Experiment(model="tiny_mlp", data={"name": "digits", "train": 256},
    ...                   finetune={"preset": "adam_fast", "epochs": 1},
    ...                   latency={"rounds": 5, "min_time_s": 0})
    >>> store = Store(tempfile.mkdtemp())
    >>> _ = sweep(base, store=store, progress=False, strategy=["random"], compression=[2, 4])
    >>> path = write_report(store, plotlyjs="cdn")
    >>> path == store.path / "report.html"
    True
    >>> re.findall(r"<h2>([^<]*)</h2>", path.read_text())  # doctest: +NORMALIZE_WHITESPACE
    ['Summary', 'Accuracy vs latency vs dense baseline, timed side by side (marker area: gzip size)',
     'Pruning: accuracy vs compression and vs theoretical speedup',
     'Per-layer sparsity of the most compressed pruned run', 'Summary over seeds (mean, std, 95% CI)',
     'All successful runs']
"""

from __future__ import annotations

import datetime as dt
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from shrinkviz.experiments.schema import FACTOR_COLUMNS
from shrinkviz.experiments.store import Store

TABLE_COLUMNS = (
    "technique",
    "strategy",
    "compression",
    "seed",
    "top1",
    "compression_ratio",
    "speedup_theoretical",
    "size_bytes_gzip",
    "latency_vs_baseline",
    "latency_vs_baseline_min",
    "latency_vs_baseline_max",
    "latency_ms_p50",
    "latency_runtime",
    "machine_id",
    "duration_s",
    "run_id",
)
PROTOCOL_COLUMNS = ("baseline_recipe", "baseline_seed", "finetune")
"""What a pruning curve holds fixed: the pretrained baseline and the finetuning recipe."""
SUMMARY_METRICS = (
    "top1",
    "compression_ratio",
    "speedup_theoretical",
    "size_bytes_gzip",
    "latency_vs_baseline",
    "latency_ms_p50",
)


def _tables(source: Any) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(runs, layers) from a Store, a SweepResult, a store folder, or a runs DataFrame."""
    if isinstance(source, pd.DataFrame):
        return source, None
    if isinstance(source, str | os.PathLike):
        source = Store(source)
    runs = source.runs() if callable(source.runs) else source.runs
    layers = getattr(source, "layers", None)
    layers = layers() if callable(layers) else layers
    return runs, layers


def _safe(title: str, draw: Callable[[], Any]) -> tuple[str, Any]:
    """A section, or a note saying why it could not be drawn (the rest of the report still renders)."""
    try:
        return title, draw()
    except (ValueError, KeyError, TypeError) as exc:
        warnings.warn(f"report: section {title!r} skipped: {exc}", RuntimeWarning, stacklevel=2)
        return title, f"Not drawn: {type(exc).__name__}: {exc}"


def _layer_run(ok: pd.DataFrame, layers: pd.DataFrame | None) -> str | None:
    """The run whose per-layer sparsity is shown: the most compressed pruned run that has a layer table."""
    if layers is None or layers.empty:
        return None
    pruned = ok[(ok["strategy"].fillna("") != "") & ok["run_id"].isin(layers["run_id"])]
    if pruned.empty:
        return None
    pruned = pruned.sort_values(["compression", "top1"], ascending=[False, False])
    return str(pruned["run_id"].iloc[0])


def _context_sections(ok: pd.DataFrame, layers: pd.DataFrame | None, prefix: str) -> list[tuple[str, Any]]:
    from shrinkviz import viz

    sections: list[tuple[str, Any]] = []
    from shrinkviz.viz.machines import latency_x, machines

    has_latency = ok["latency_ms_p50"].notna().any()
    x = latency_x(ok) if has_latency else "size_bytes_gzip"
    size = "size_bytes_gzip" if has_latency else None
    what = "size"
    if has_latency:
        what = "latency (marker area: gzip size)"
        if x == "latency_vs_baseline":
            what = "latency vs dense baseline, timed side by side (marker area: gzip size)"
    split = len(machines(ok)) > 1  # one trace group and one front per machine, each named
    sections.append(
        _safe(
            f"{prefix}Accuracy vs {what}",
            lambda: viz.frontier(ok, x=x, y="top1", size=size, color="technique", by_machine=split),
        )
    )
    pruned = ok[ok["method"] == "prune"]
    # one figure per protocol: averaging a strategy's curve over different baselines or finetuning recipes
    # would mix exactly the confounders ShrinkBench warns about
    protocol = [c for c in PROTOCOL_COLUMNS if c in pruned and pruned[c].nunique() > 1]
    groups = pruned.groupby(protocol, dropna=False) if protocol else [((), pruned)]
    for key, group in groups:
        if group.empty:
            continue
        key = key if isinstance(key, tuple) else (key,)
        where = f" ({', '.join(f'{c} {v}' for c, v in zip(protocol, key, strict=True))})" if protocol else ""
        sections.append(
            _safe(
                f"{prefix}Pruning{where}: accuracy vs compression and vs theoretical speedup",
                lambda group=group: viz.shrinkbench_views(group),
            )
        )
    if ok["method"].isin(["quant", "distill", "pipeline"]).any():
        sections.append(_safe(f"{prefix}Techniques and pipeline orders", lambda: viz.ordering_ablation(ok)))
    run_id = _layer_run(ok, layers)
    if run_id is not None:
        sections.append(
            _safe(
                f"{prefix}Per-layer sparsity of the most compressed pruned run",
                lambda: viz.layer_sparsity(layers, run_id),
            )
        )
    return sections


def _summary_table(ok: pd.DataFrame) -> pd.DataFrame:
    from shrinkviz.metrics.stats import aggregate, pareto_mask
    from shrinkviz.viz.machines import latency_ties

    metrics = [m for m in SUMMARY_METRICS if m in ok and ok[m].notna().any()]
    by = [
        "technique",
        *[
            c
            for c in FACTOR_COLUMNS
            if c not in ("seed", "method", "order") and c in ok and ok[c].nunique() > 1
        ],
    ]
    agg = aggregate(ok, by=by, metrics=metrics)
    cost = "latency_vs_baseline" if "latency_vs_baseline" in metrics else "latency_ms_p50"
    objectives = [m for m in ("top1", cost, "size_bytes_gzip") if m in metrics]
    if "top1" in objectives and len(objectives) > 1:
        means = agg.rename(columns={f"{m}_mean": m for m in objectives})
        agg.insert(
            len(by),
            "pareto",
            pareto_mask(
                means,
                maximize=["top1"],
                minimize=objectives[1:],
                tolerance=latency_ties(objectives),
            ).to_numpy(),
        )
    out = agg[[*by, *(["pareto"] if "pareto" in agg else []), "n"]].copy()
    for m in metrics:  # mean, then the 95% interval as text (std is its width at n seeds)
        out[f"{m} mean"] = agg[f"{m}_mean"]
        out[f"{m} 95% CI"] = [
            f"[{lo:.4g}, {hi:.4g}]" if k >= 2 else "n=1"
            for lo, hi, k in zip(agg[f"{m}_ci95_low"], agg[f"{m}_ci95_high"], agg[f"{m}_n"], strict=True)
        ]
    return out


def claim_sections(
    verdicts: list[Any], source_line: str, notes: tuple[str, ...] = ()
) -> list[tuple[str, Any]]:
    """The sections a claims spec adds at the top of a report: the verdict table (what held, with the numbers,
    computed from the runs), where the figures come from, the spec's notes, and each claim's comparisons."""
    from shrinkviz.experiments.claims import verdict_table

    head = "\n".join([source_line, *notes])
    sections: list[tuple[str, Any]] = [("Verdicts, computed from the stored runs", verdict_table(verdicts))]
    sections.append(("Where these figures come from", head))
    for v in verdicts:
        if not v.details.empty:
            sections.append(
                (f"Claim {v.claim.id} · {v.claim.title}: {v.outcome} — the comparisons", v.details)
            )
    return sections


def build_sections(
    runs: pd.DataFrame, layers: pd.DataFrame | None = None, source_line: str | None = None
) -> list[tuple[str, Any]]:
    """The report's sections: ``(heading, figure | DataFrame | text)`` pairs for ``report_html``;
    ``source_line`` (machines, runtime versions, commit: :func:`shrinkviz.experiments.claims.provenance`)
    goes into the summary."""
    if runs.empty:
        return [("No runs", "The store holds no runs yet: run `shrinkviz demo` or a sweep first.")]
    from shrinkviz.viz._style import technique

    runs = runs.assign(technique=technique(runs).astype(str))
    ok = runs[runs["status"] == "ok"]
    failed = runs[runs["status"] != "ok"]
    contexts = sorted({(d, m) for d, m in zip(ok["dataset"], ok["model"], strict=True)})
    lines = [
        f"{len(runs)} runs: {len(ok)} ok, {len(failed)} failed.",
        f"Generated {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} by shrinkviz "
        f"{', '.join(sorted(set(runs['shrinkviz_version'].dropna().astype(str))))} with torch "
        f"{', '.join(sorted(set(runs['torch_version'].dropna().astype(str))))}.",
        "Accuracy is test top-1 of the deployed model; latency is measured: each run's deployed model "
        "timed in interleaved rounds beside its dense FP32 baseline, plotted as the median per-round ratio "
        "(× baseline, whiskers: range over rounds; absolute median ms per batch at the recorded runtime, "
        "threads and batch on hover); size is the deployable artefact, gzip-compressed. "
        "Means and 95% Student-t intervals are over seeds.",
    ]
    from shrinkviz.viz.machines import machine_note

    named = machine_note(ok)
    if source_line:
        lines.append(source_line[0].upper() + source_line[1:] + ".")
    elif named:
        lines.append(named[0].upper() + named[1:] + ".")
    for dataset, model in contexts:
        base = ok[(ok["dataset"] == dataset) & (ok["model"] == model)]["baseline_top1"].dropna()
        if len(base):
            lines.append(f"{model} on {dataset}: baseline test top-1 {base.iloc[0]:.4f}.")
    sections: list[tuple[str, Any]] = [("Summary", "\n".join(lines))]
    for dataset, model in contexts:
        sub = ok[(ok["dataset"] == dataset) & (ok["model"] == model)]
        prefix = f"{model} / {dataset}: " if len(contexts) > 1 else ""
        sections += _context_sections(sub, layers, prefix)
        sections.append(
            _safe(f"{prefix}Summary over seeds (mean, std, 95% CI)", lambda sub=sub: _summary_table(sub))
        )
    varying = [c for c in PROTOCOL_COLUMNS if c in ok and ok[c].nunique() > 1]
    cols = [
        c
        for c in ("dataset", "model", *varying, *TABLE_COLUMNS)
        if c in runs and (c not in ("dataset", "model") or len(contexts) > 1)
    ]
    sections.append(("All successful runs", ok[cols].reset_index(drop=True)))
    if len(failed):
        errors = failed.assign(error=failed["error"].astype(str).str.split("\n").str[0].str.slice(0, 300))
        sections.append(
            (
                "Failed runs (re-run by the next sweep)",
                errors[["technique", "strategy", "compression", "seed", "error", "run_id"]],
            )
        )
    return sections


def write_report(
    source: Any = None,
    path: str | os.PathLike[str] | None = None,
    title: str = "shrinkviz report",
    plotlyjs: str = "inline",
    claims: Any = None,
) -> Path:
    """Write the standalone HTML report of a store (or a sweep result / runs table) and return its path.

    Args:
        source: a Store, a store folder, a SweepResult, or a runs DataFrame (default: ``Store()``).
        path: output file (default ``<store>/report.html``; required for a DataFrame).
        title: page title.
        plotlyjs: ``inline`` (opens offline) or ``cdn`` (~4.5 MB smaller; needs a network to draw).
        claims: a claims spec (:class:`shrinkviz.experiments.claims.ClaimSpec` or its TOML path): the report
            then opens with its verdicts, computed from the same runs (needs a Store or store folder).

    Example:
        >>> import pathlib, tempfile
        >>> import pandas as pd
        >>> write_report(pd.DataFrame())
        Traceback (most recent call last):
        ValueError: write_report: give path= when reporting a DataFrame
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "empty.html"
        >>> path = write_report(pd.DataFrame(), path, "Nothing yet")
        >>> "<h1>Nothing yet</h1>" in path.read_text(), "<h2>No runs</h2>" in path.read_text()
        (True, True)
    """
    from shrinkviz.experiments.claims import ClaimSpec, evaluate_claims, provenance
    from shrinkviz.viz.export import report_html

    source = Store() if source is None else source
    store = Store(source) if isinstance(source, str | os.PathLike) else getattr(source, "store", source)
    store = store if isinstance(store, Store) else None
    if path is None:
        if store is None:
            raise ValueError("write_report: give path= when reporting a DataFrame")
        path = store.path / "report.html"
    spec = None
    if claims is not None:  # validate the spec before anything is drawn
        if store is None:
            raise ValueError(
                "write_report: claims= needs a Store or a store folder (the latency table lives there)"
            )
        spec = claims if isinstance(claims, ClaimSpec) else ClaimSpec.load(claims)
    runs, layers = _tables(source)
    line = provenance(store if store is not None else (runs, pd.DataFrame())) if len(runs) else None
    sections = build_sections(runs, layers, line)
    if spec is not None:
        sections = claim_sections(evaluate_claims(spec, store), line or "", spec.notes) + sections
    return report_html(sections, path, title, plotlyjs=plotlyjs)

"""Claims as data: a notebook's claims declared once in a spec file, decided by code on the stored runs.

A claim spec is a TOML file (committed beside the notebooks, ``notebooks/claims/``). Each ``[[claim]]``
names what it compares and how it is decided; :func:`evaluate_claims` applies it to a store (or to the
committed CSV tables, :func:`export_tables` / :func:`load_tables`) and returns one :class:`Verdict` per
claim: ``held``, ``not held`` or ``inconclusive``, with the numbers and their uncertainty. The notebook's
closing table and the HTML report are both rendered from these verdicts (:func:`verdict_table`), so no
number in a verdict is typed by hand.

Spec format (every key is checked; an unknown one is an error naming the valid ones)::

    title = "ShrinkBench's confounders"
    alpha = 0.05            # family-wise error rate of each claim (Holm's correction inside it)
    draws = 2000            # bootstrap draws
    min_seeds = 2           # fewer replicates per side make a comparison inconclusive
    notes = ["..."]         # lines the report prints under the verdicts (budgets, what was cut)
    where = { method = "prune" }   # filter applied to every claim (a claim's own where is added)

    [[claim]]
    id = "1a"
    title = "Global magnitude is more accurate than layerwise at the same compression"
    test = "difference"     # a test of shrinkviz.experiments.claimtests (available_tests())
    a = { strategy = "global_weight" }
    b = { strategy = "layer_weight" }
    over = { compression = [8, 16, 32] }
    margin = 0.0

Which keys a test takes, and its decision rule, are documented on the test
(:mod:`shrinkviz.experiments.claimtests`).

Example:
    >>> spec = ClaimSpec.from_dict({"title": "t", "claim": [
    ...     {"id": "1", "title": "A beats B", "test": "difference", "a": {"strategy": "a"}, "b": {"strategy": "b"}}]})
    >>> [c.id for c in spec.claims], spec.alpha
    (['1'], 0.05)
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from shrinkviz.core.registry import did_you_mean
from shrinkviz.experiments.claimtests import TESTS, Claim, ClaimSpecError, Context, Verdict
from shrinkviz.experiments.schema import RUN_COLUMNS

__all__ = [
    "Claim",
    "ClaimSpec",
    "Verdict",
    "evaluate_claims",
    "export_tables",
    "load_tables",
    "provenance",
    "verdict_table",
]

SPEC_KEYS = ("title", "alpha", "draws", "min_seeds", "where", "replicate", "notes", "claim")
CLAIM_COMMON_KEYS = ("id", "title", "test", "where", "note")
FILTER_KEYS = ("a", "b", "over", "low", "high")
"""Test parameters that are filters (runs column = value(s)): their columns are checked against the schema."""
CSV_DROPPED = ("config_json", "test_correct")
"""Runs columns the committed runs.csv leaves out: the config (long JSON) and the correctness bits, which
go to their own file, correct.csv."""


def _check_keys(where: str, given: Mapping[str, Any], valid: Sequence[str]) -> None:
    for key in given:
        if key not in valid:
            raise ClaimSpecError(
                f"{where}: unknown key {key!r};{did_you_mean(key, valid)} valid: {', '.join(valid)}"
            )


def _check_filter(where: str, flt: Any) -> dict[str, Any]:
    if not isinstance(flt, Mapping):
        raise ClaimSpecError(f"{where}: must be a table of column = value(s), got {flt!r}")
    for column in flt:
        if column not in RUN_COLUMNS:
            raise ClaimSpecError(
                f"{where}: {column!r} is not a runs column;{did_you_mean(column, RUN_COLUMNS)} "
                "see shrinkviz.experiments.schema.RUN_COLUMNS"
            )
    return dict(flt)


@dataclass(frozen=True)
class ClaimSpec:
    """A claim spec file: shared settings and the claims in order."""

    title: str
    claims: tuple[Claim, ...]
    alpha: float = 0.05
    draws: int = 2000
    min_seeds: int = 2
    where: dict[str, Any] = field(default_factory=dict)
    replicate: tuple[str, ...] = ("seed",)
    notes: tuple[str, ...] = ()
    source: str = ""

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], source: str = "") -> ClaimSpec:
        """Validate a parsed spec (every key, every test's parameters) before anything is computed."""
        name = source or "claim spec"
        _check_keys(name, doc, SPEC_KEYS)
        alpha = float(doc.get("alpha", 0.05))
        if not 0 < alpha < 1:
            raise ClaimSpecError(f"{name}: alpha={alpha} must be in (0, 1)")
        draws = int(doc.get("draws", 2000))
        min_seeds = int(doc.get("min_seeds", 2))
        if draws < 100 or min_seeds < 1:
            raise ClaimSpecError(
                f"{name}: draws must be >= 100 and min_seeds >= 1 (got {draws}, {min_seeds})"
            )
        replicate = tuple(doc.get("replicate", ("seed",)))
        for column in replicate:
            _check_filter(f"{name}: replicate", {column: None})
        claims: list[Claim] = []
        raw = doc.get("claim", [])
        if not isinstance(raw, list) or not raw:
            raise ClaimSpecError(f"{name}: declare at least one [[claim]]")
        for i, entry in enumerate(raw):
            where = f"{name}: claim {entry.get('id', i + 1)!r}"
            for key in ("id", "title", "test"):
                if not entry.get(key):
                    raise ClaimSpecError(f"{where}: needs {key} = ...")
            try:
                test = TESTS.get(str(entry["test"]), field=f"{where}: test")
            except ValueError as exc:
                raise ClaimSpecError(str(exc)) from None
            params = {k: v for k, v in entry.items() if k not in CLAIM_COMMON_KEYS}
            _check_keys(where, params, test.keys)
            for key in FILTER_KEYS:
                if key in params:
                    _check_filter(f"{where}: {key}", params[key])
            test.check(where, params)
            claims.append(
                Claim(
                    id=str(entry["id"]),
                    title=str(entry["title"]),
                    test=str(entry["test"]),
                    where=_check_filter(f"{where}: where", entry.get("where", {})),
                    params=params,
                    note=str(entry.get("note", "")),
                )
            )
        ids = [c.id for c in claims]
        if len(set(ids)) != len(ids):
            raise ClaimSpecError(f"{name}: claim ids repeat: {ids}")
        return cls(
            title=str(doc.get("title", "")),
            claims=tuple(claims),
            alpha=alpha,
            draws=draws,
            min_seeds=min_seeds,
            where=_check_filter(f"{name}: where", doc.get("where", {})),
            replicate=replicate,
            notes=tuple(str(n) for n in doc.get("notes", ())),
            source=source,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ClaimSpec:
        """Read and validate a TOML spec file."""
        path = Path(path)
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ClaimSpecError(f"claim spec {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ClaimSpecError(f"claim spec {path} is not valid TOML: {exc}") from exc
        return cls.from_dict(doc, source=str(path))


def _tables(source: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, latest latency rows) from a Store, a store folder, a folder of exported CSVs or a pair."""
    from shrinkviz.experiments.store import Store

    if isinstance(source, tuple):
        return source
    if isinstance(source, str | os.PathLike):
        if (Path(source) / "runs.csv").is_file():
            return load_tables(source)
        source = Store(source)
    if isinstance(source, Store):
        return source.runs(), source.latest_latency()
    raise TypeError(
        f"evaluate_claims: source must be a Store, a store folder, a folder of exported CSVs or "
        f"(runs, latency) DataFrames, got {type(source).__name__}"
    )


def evaluate_claims(spec: ClaimSpec | str | os.PathLike[str], source: Any) -> list[Verdict]:
    """Decide every claim of ``spec`` on the runs of ``source``.

    Args:
        spec: a :class:`ClaimSpec` or the path of its TOML file.
        source: a Store, a store folder, a folder written by :func:`export_tables`, or ``(runs, latency)``.

    Returns:
        One :class:`Verdict` per claim, in the spec's order. A claim whose runs are missing or too few is
        ``inconclusive`` and says what it lacks; it never raises for lack of data.
    """
    spec = spec if isinstance(spec, ClaimSpec) else ClaimSpec.load(spec)
    runs, latency = _tables(source)
    ok = runs[runs["status"] == "ok"] if "status" in runs else runs
    verdicts = []
    for claim in spec.claims:
        context = Context(spec, claim, ok, latency)
        verdicts.append(TESTS.get(claim.test).run(context))
    return verdicts


def verdict_table(verdicts: Sequence[Verdict]) -> pd.DataFrame:
    """The closing table: claim, outcome and the numbers, one row per claim."""
    return pd.DataFrame(
        {
            "claim": [f"{v.claim.id} · {v.claim.title}" for v in verdicts],
            "outcome": [v.outcome for v in verdicts],
            "the numbers": [v.summary for v in verdicts],
        }
    )


def verdict_markdown(verdicts: Sequence[Verdict]) -> str:
    """:func:`verdict_table` as a Markdown table (for a notebook's closing cell)."""
    lines = ["| claim | outcome | the numbers |", "| --- | --- | --- |"]
    for v in verdicts:
        cells = (f"{v.claim.id} · {v.claim.title}", f"**{v.outcome}**", v.summary)
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines)


def provenance(source: Any) -> str:
    """One line naming where the figures come from: every machine the latency ran on (CPU model, ISA
    features, cores), the runtime and torch versions recorded with the runs, and this shrinkviz (version and
    git commit).

    Example:
        >>> provenance((pd.DataFrame({"torch_version": ["2.13.0"]}), pd.DataFrame())).split(" · ")[:2]
        ['no latency measured', 'torch 2.13.0']
    """
    from shrinkviz.core.machine import describe
    from shrinkviz.core.version import __version__, commit

    runs, latency = _tables(source)
    timed = latency[latency["error"].fillna("") == ""] if "error" in latency else latency
    named = timed[timed["cpu_model"].fillna("") != ""] if "cpu_model" in timed else timed.iloc[0:0]
    machines = sorted({describe(row) for row in named.to_dict("records")})
    parts = ["latency measured on " + "; ".join(machines) if machines else "no latency measured"]
    versions = {
        "torch": runs.get("torch_version"),
        "ONNX Runtime": latency.get("onnxruntime_version"),
        "OpenVINO": latency.get("openvino_version"),
    }
    for name, column in versions.items():
        found = sorted({str(v) for v in column.dropna() if str(v)}) if column is not None else []
        if found:
            parts.append(f"{name} {', '.join(found)}")
    parts.append(f"shrinkviz {__version__}" + (f" (commit {commit()})" if commit() else ""))
    return " · ".join(parts)


def export_tables(source: Any, folder: str | os.PathLike[str]) -> list[Path]:
    """Write the compact run tables a verdict needs, as CSV: ``runs.csv`` (every runs column except the
    config JSON and the correctness bits), ``correct.csv`` (run_id, test_correct) and ``latency.csv`` (the
    newest sitting per run and runtime). Each file is written atomically; returns their paths.
    """
    from shrinkviz.core.io import atomic_write_text

    runs, latency = _tables(source)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    runs = runs.sort_values("run_id").reset_index(drop=True)
    files = {
        "runs.csv": runs.drop(columns=[c for c in CSV_DROPPED if c in runs]),
        "correct.csv": runs[["run_id", "test_correct"]] if "test_correct" in runs else runs[["run_id"]],
        "latency.csv": latency.sort_values(["run_id", "runtime"]).reset_index(drop=True),
    }
    written = []
    for name, table in files.items():
        written.append(atomic_write_text(folder / name, table.to_csv(index=False, float_format="%.6g")))
    return written


def load_tables(folder: str | os.PathLike[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, latency) from the CSVs :func:`export_tables` wrote (the correctness bits merged back)."""
    folder = Path(folder)
    missing = [n for n in ("runs.csv", "latency.csv") if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder}: no {', '.join(missing)}; write them with export_tables(store, folder)"
        )
    text = {c: "str" for c, col in RUN_COLUMNS.items() if col.dtype == "str"}
    runs = pd.read_csv(folder / "runs.csv", dtype=text, keep_default_na=False, na_values=[""])
    for c in text:
        if c in runs:
            runs[c] = runs[c].fillna("")
    if (folder / "correct.csv").is_file():
        correct = pd.read_csv(folder / "correct.csv", dtype=str, keep_default_na=False)
        if "test_correct" in correct:
            runs = runs.merge(correct, on="run_id", how="left")
    latency = pd.read_csv(folder / "latency.csv", keep_default_na=False, na_values=[""])
    for c in ("runtime", "error", "choice", "cpu_model", "machine_id", "dtype"):
        if c in latency:
            latency[c] = latency[c].fillna("").astype(str)
    return runs, latency

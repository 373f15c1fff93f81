"""Row validation shared by the store's tables: every value a plain scalar of its column's declared kind,
and tables read back as DataFrames with the schema's pandas dtypes.

Example:
    >>> validate_row({"run_id": "x"})  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    SchemaError: runs: missing column(s) [...]
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import re
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from shrinkviz.experiments.schema import (
    FACTOR_COLUMNS,
    LATENCY_COLUMNS,
    RUN_COLUMNS,
    Column,
    stage_epochs_text,
)

STATUSES = ("ok", "failed")
OPTIONAL_RUN_COLUMNS = (
    "latency_vs_baseline",
    "latency_vs_baseline_min",
    "latency_vs_baseline_max",
    "machine_id",
    "stage_epochs",
    "test_correct",
    "design",
    "measure_s",
)
"""Runs columns added after the first stores were written (the latency table, then per-example correctness,
stage epochs, the study arm and the measuring time): a row without them (written by older code or by hand)
gets them empty, except ``stage_epochs``, which is read from the row's config."""
REQUIRED_ALWAYS = tuple(
    c for c in ("run_id", "status", "error", "config_json", *FACTOR_COLUMNS) if c not in OPTIONAL_RUN_COLUMNS
)
"""Columns every row needs; an ``ok`` row needs every column of ``RUN_COLUMNS`` (``None`` = not measured)."""
_PANDAS_DTYPES = {"str": "str", "float": "float64", "int": "Int64", "bool": "boolean"}
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class SchemaError(ValueError):
    """A row does not match :mod:`shrinkviz.experiments.schema`."""


def checksum(doc: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a record without its ``checksum`` key.

    Example:
        >>> checksum({"a": 1, "checksum": "x"}) == checksum({"a": 1})
        True
    """
    rest = {k: v for k, v in doc.items() if k != "checksum"}
    text = json.dumps(rest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _scalar(table: str, column: str, value: Any) -> Any:
    """A plain Python scalar, or SchemaError for anything else (arrays, tensors, lists, objects)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0 and type(value).__module__ == "numpy":
        return value.item()
    if value is pd.NA or value is pd.NaT:
        return None
    raise SchemaError(
        f"{table}.{column}: unsupported value type {type(value).__name__} ({value!r:.60}); "
        "values must be str, int, float, bool or None"
    )


def _typed(table: str, column: str, col: Column, value: Any) -> Any:
    """``value`` checked against the declared kind of a schema column (None = missing)."""
    value = _scalar(table, column, value)
    if value is None:
        return "" if col.dtype == "str" else None
    if col.dtype == "str":
        if isinstance(value, str):
            return value
    elif col.dtype == "float":
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return None if math.isnan(value) else float(value)
    elif col.dtype == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float):
            if math.isnan(value):
                return None
            if value.is_integer():
                return int(value)
    elif col.dtype == "bool" and isinstance(value, bool):
        return value
    raise SchemaError(f"{table}.{column}={value!r}: expected {col.dtype} ({col.doc})")


def _clean(table: str, schema: Mapping[str, Column], row: Mapping[str, Any], required: Iterable[str]) -> dict:
    if not isinstance(row, Mapping):
        raise SchemaError(f"{table}: a row must be a mapping of column -> value, got {type(row).__name__}")
    missing = [c for c in required if c not in row]
    if missing:
        raise SchemaError(f"{table}: missing column(s) {missing} (see shrinkviz.experiments.schema)")
    out: dict[str, Any] = {}
    for name, value in row.items():
        if not isinstance(name, str) or not name:
            raise SchemaError(f"{table}: column names must be non-empty strings, got {name!r}")
        out[name] = (
            _typed(table, name, schema[name], value) if name in schema else _scalar(table, name, value)
        )
    return out


def validate_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A runs row checked against ``RUN_COLUMNS`` (returned with plain Python values).

    Raises:
        SchemaError: a missing or mistyped column, a bad status, a failed run without its error.

    Example:
        >>> validate_row({"run_id": "x"})  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        SchemaError: runs: missing column(s) [...]
    """
    status = row.get("status") if isinstance(row, Mapping) else None
    required = (
        [c for c in RUN_COLUMNS if c not in OPTIONAL_RUN_COLUMNS] if status == "ok" else REQUIRED_ALWAYS
    )
    out = _clean("runs", RUN_COLUMNS, row, required)
    if "stage_epochs" not in out:
        out["stage_epochs"] = _stage_epochs(out.get("config_json"))
    for name in OPTIONAL_RUN_COLUMNS:
        out.setdefault(name, "" if RUN_COLUMNS[name].dtype == "str" else None)
    if not _RUN_ID.match(out["run_id"]):
        raise SchemaError(
            f"runs.run_id={out['run_id']!r}: must be 1-128 characters of letters, digits, '_', '.', '-'"
        )
    if out["status"] not in STATUSES:
        raise SchemaError(f"runs.status={out['status']!r}: allowed values: {', '.join(STATUSES)}")
    if (out["status"] == "failed") != bool(out["error"]):
        raise SchemaError(
            "runs.error: a failed run needs its error text and an ok run must have none "
            f"(status={out['status']!r}, error={out['error']!r:.60})"
        )
    return out


def _stage_epochs(config_json: Any) -> str:
    """``stage_epochs`` of a row written before the column existed, from its config ('' if it has none)."""
    try:
        pipeline = json.loads(config_json).get("pipeline") or {}
    except (TypeError, ValueError, AttributeError):
        return ""
    return stage_epochs_text(pipeline.get("order") or "", pipeline.get("epochs"))


def _clean_table(table: str, schema: Mapping[str, Column], rows: Any, run_id: str) -> list[dict[str, Any]]:
    if rows is None:
        return []
    if isinstance(rows, pd.DataFrame):
        rows = rows.astype(object).where(rows.notna(), None).to_dict("records")
    out = []
    for row in rows:
        clean = _clean(table, schema, row, ())
        if clean.setdefault("run_id", run_id) != run_id:
            raise SchemaError(f"{table}.run_id={clean['run_id']!r} does not match the run {run_id!r}")
        out.append(clean)
    return out


def _frame(schema: Mapping[str, Column], rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a DataFrame: schema columns first with their pandas dtypes, extra columns after (sorted)."""
    extras = sorted({k for r in rows for k in r} - set(schema))
    data = {}
    for name, col in schema.items():
        default = "" if col.dtype == "str" else None
        values = [r.get(name, default) for r in rows]
        if col.dtype == "float":
            values = [math.nan if v is None else v for v in values]
        data[name] = pd.Series(values, dtype=_PANDAS_DTYPES[col.dtype])
    for name in extras:
        data[name] = pd.Series([r.get(name) for r in rows])
        if (
            data[name].dtype == object
            and data[name].map(lambda v: v is None or isinstance(v, int | float)).all()
        ):
            data[name] = pd.to_numeric(data[name])
    return pd.DataFrame(data, columns=[*schema, *extras])


def _v1_latency(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The one latency row a version-1 record implies (absolute figures only)."""
    if row.get("status") != "ok" or not row.get("latency_runtime"):
        return []
    out = {name: None for name in LATENCY_COLUMNS}
    out.update(
        run_id=row["run_id"],
        runtime=row["latency_runtime"],
        choice="",
        fastest=False,
        threads=row.get("latency_threads"),
        batch=row.get("latency_batch"),
        latency_ms_p50=row.get("latency_ms_p50"),
        latency_ms_p90=row.get("latency_ms_p90"),
        measured_at=row.get("finished_at", ""),
        sitting="run",
        cpu_model=row.get("cpu_model", ""),
        torch_version=row.get("torch_version", ""),
        error=row.get("latency_error") or "",
    )
    return [out]

"""The results store: one JSON file per run, written atomically, read back as tidy DataFrames.

Layout on disk (``Store().path`` is ``<cache_root>/results`` unless given)::

    results/
      runs/
        <run_id>.json   {"format": "shrinkviz-run", "schema_version": 1,
                         "row": {...RUN_COLUMNS + extra metrics...},
                         "history": [{...HISTORY_COLUMNS...}, ...], "layers": [{...LAYER_COLUMNS...}, ...]}

Each file is written to a temporary name in the same folder and renamed into place, so a crash or
``kill -9`` leaves either the previous file or the new one, never half of one; processes writing at once
never share a file except for the same run id, where the last complete write wins. Rows are validated
against :mod:`shrinkviz.experiments.schema` on write (and again on read): schema columns must have their declared kind,
extra columns must hold plain scalars (str, int, float, bool, None). A file that does not parse or validate
is reported (``warnings.warn`` naming it, and :attr:`Store.problems`) and treated as missing, so a sweep
simply runs it again. Non-finite floats use Python's JSON literals (``NaN``, ``Infinity``).

Each record carries ``checksum``: the sha256 of the canonical JSON (sorted keys, compact) of the rest of
the record, checked on read, so an edit inside a record that is still valid JSON (one digit of ``top1``)
is reported like a corrupt file and re-run; records written before checksums existed still load.
Opening a store removes temporary files of writers that died (``.*.tmp`` older than
:data:`STALE_TMP_S`: a record is written in milliseconds, so a temp file that old has no live writer) and
lease files that are no longer valid (see :mod:`shrinkviz.experiments.leases`). A write that fails for
lack of space (or permission) raises :class:`StoreWriteError` naming the store; nothing is half-written
and nothing already stored is touched.

Example:
    >>> import tempfile
    >>> store = Store(tempfile.mkdtemp())
    >>> len(store.runs()), list(store.runs().columns[:3])
    (0, ['run_id', 'status', 'error'])
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import numbers
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from shrinkviz.core.io import atomic_write_text, cache_root
from shrinkviz.experiments.leases import Leases, clean_folder
from shrinkviz.experiments.schema import FACTOR_COLUMNS, HISTORY_COLUMNS, LAYER_COLUMNS, RUN_COLUMNS, Column

FORMAT = "shrinkviz-run"
SCHEMA_VERSION = 1
STATUSES = ("ok", "failed")
REQUIRED_ALWAYS = ("run_id", "status", "error", "config_json", *FACTOR_COLUMNS)
"""Columns every row needs; an ``ok`` row needs every column of ``RUN_COLUMNS`` (``None`` = not measured)."""
_PANDAS_DTYPES = {"str": "str", "float": "float64", "int": "Int64", "bool": "boolean"}
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
STALE_TMP_S = 3600.0
"""Temporary files older than this (seconds) are left by dead writers and removed when a store opens."""


class SchemaError(ValueError):
    """A row does not match :mod:`shrinkviz.experiments.schema`."""


class StoreWriteError(OSError):
    """A record could not be written (disk full, read-only or no permission); nothing was half-written."""


def checksum(doc: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a record without its ``checksum`` key.

    Example:
        >>> checksum({"a": 1, "checksum": "x"}) == checksum({"a": 1})
        True
    """
    rest = {k: v for k, v in doc.items() if k != "checksum"}
    text = json.dumps(rest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Record:
    """One stored run: its row, its per-epoch history and its per-layer table (lists of dicts)."""

    row: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)


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
    required = list(RUN_COLUMNS) if status == "ok" else list(REQUIRED_ALWAYS)
    out = _clean("runs", RUN_COLUMNS, row, required)
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


class Store:
    """A folder of results, safe to share between processes and machines with a shared filesystem.

    Args:
        path: the store folder (default ``shrinkviz.core.io.cache_root() / "results"``); created on first write.

    Example:
        >>> import tempfile
        >>> store = Store(tempfile.mkdtemp())
        >>> store.has("abc"), store.problems
        (False, [])
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else cache_root() / "results"
        self.runs_dir = self.path / "runs"
        self._cache: dict[str, tuple[tuple[int, int], Record | None]] = {}
        self._problems: dict[str, str] = {}
        self.leases = Leases(self.runs_dir)
        self.cleaned = self.clean()

    def clean(self, max_age_s: float = STALE_TMP_S) -> list[str]:
        """Remove temp files older than ``max_age_s`` and invalid leases; return the names removed.

        A store that cannot be written (read-only) is left as it is.
        """
        return clean_folder(self.runs_dir, self.leases, max_age_s)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def __len__(self) -> int:
        return len(self.run_ids())

    def __contains__(self, run_id: object) -> bool:
        return isinstance(run_id, str) and self.has(run_id)

    @property
    def problems(self) -> list[str]:
        """Files found corrupt by the last reads, as ``'<path>: <reason>'``."""
        return [f"{path}: {reason}" for path, reason in sorted(self._problems.items())]

    def file(self, run_id: str) -> Path:
        """The JSON file of a run id."""
        if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
            raise ValueError(
                f"invalid run id {run_id!r}: must be 1-128 characters of letters, digits, '_', '.', '-' "
                "(as Experiment.run_id gives)"
            )
        return self.runs_dir / f"{run_id}.json"

    # -- writing -------------------------------------------------------------------------------------
    def put(self, row: Mapping[str, Any], history: Any = None, layers: Any = None) -> Path:
        """Validate and store one finished (or failed) run atomically, replacing any earlier file.

        Args:
            row: one runs row (``RUN_COLUMNS`` plus any extra metric columns).
            history: per-epoch rows (list of dicts or DataFrame); ``run_id`` is filled in.
            layers: per-layer rows (list of dicts or DataFrame); ``run_id`` is filled in.

        Returns:
            The file written.

        Raises:
            SchemaError: the row or a table does not match the schema (nothing is written).
        """
        clean = validate_row(row)
        run_id = clean["run_id"]
        doc = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "row": clean,
            "history": _clean_table("history", HISTORY_COLUMNS, history, run_id),
            "layers": _clean_table("layers", LAYER_COLUMNS, layers, run_id),
        }
        doc["checksum"] = checksum(doc)
        path = self.file(run_id)
        try:
            written = atomic_write_text(path, json.dumps(doc, separators=(",", ":")))
            self._problems.pop(str(path), None)
            return written
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                why = "the disk is full"
            elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                why = "it is not writable"
            elif exc.errno == errno.ENOTDIR:
                why = "its path runs through a file"
            else:
                raise
            raise StoreWriteError(
                exc.errno,
                f"cannot store run {run_id} in {self.path}: {why} ({os.strerror(exc.errno)}); nothing was "
                f"half-written and the runs already stored are intact. Fix: free space or permissions "
                f"there, or use another store",
            ) from exc

    def remove(self, run_id: str) -> bool:
        """Delete a run's file; True when there was one."""
        path = self.file(run_id)
        self._cache.pop(path.name, None)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    # -- reading -------------------------------------------------------------------------------------
    def _load(self, path: Path) -> Record | None:
        """The record in ``path`` (cached by mtime and size), None when missing or corrupt."""
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            self._cache.pop(path.name, None)
            self._problems.pop(str(path), None)
            return None
        key = (st.st_mtime_ns, st.st_size)
        cached = self._cache.get(path.name)
        if cached is not None and cached[0] == key:
            return cached[1]
        record: Record | None = None
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise SchemaError(f"not a {FORMAT} file")
            if doc.get("schema_version") != SCHEMA_VERSION:
                raise SchemaError(f"schema_version {doc.get('schema_version')!r} != {SCHEMA_VERSION}")
            if "checksum" in doc and doc["checksum"] != checksum(doc):
                raise SchemaError("checksum mismatch: the record was edited or damaged after it was written")
            row = validate_row(doc["row"])
            if f"{row['run_id']}.json" != path.name:
                raise SchemaError(f"holds run {row['run_id']!r}, not the one its name says")
            record = Record(
                row,
                _clean_table("history", HISTORY_COLUMNS, doc.get("history"), row["run_id"]),
                _clean_table("layers", LAYER_COLUMNS, doc.get("layers"), row["run_id"]),
            )
            self._problems.pop(str(path), None)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if self._problems.get(str(path)) != reason:
                warnings.warn(
                    f"shrinkviz store: ignoring corrupt run file {path} ({reason}); "
                    "it counts as missing and will be re-run",
                    RuntimeWarning,
                    stacklevel=3,
                )
            self._problems[str(path)] = reason
        self._cache[path.name] = (key, record)
        return record

    def _records(self, run_ids: Iterable[str] | None = None) -> list[Record]:
        if run_ids is None:
            names = sorted(self._names())
        else:
            names = [self.file(r).name for r in dict.fromkeys(run_ids)]
        records = [self._load(self.runs_dir / n) for n in names]
        out = [r for r in records if r is not None]
        if run_ids is None:
            out.sort(key=lambda r: (r.row.get("finished_at", ""), r.row["run_id"]))
        return out

    def _names(self) -> list[str]:
        try:
            with os.scandir(self.runs_dir) as it:
                names = [e.name for e in it if e.name.endswith(".json") and not e.name.startswith(".")]
        except (FileNotFoundError, NotADirectoryError):
            return []
        gone = set(self._cache) - set(names)
        for name in gone:
            self._cache.pop(name, None)
            self._problems.pop(str(self.runs_dir / name), None)
        return names

    def run_ids(self) -> list[str]:
        """Ids of every readable stored run (ok or failed)."""
        return [r.row["run_id"] for r in self._records()]

    def status(self, run_id: str) -> str | None:
        """``'ok'``, ``'failed'``, or None when the run is not stored (or its file is corrupt)."""
        record = self._load(self.file(run_id))
        return None if record is None else record.row["status"]

    def has(self, run_id: str) -> bool:
        """True when a finished, successful run is stored (failed and corrupt runs are not done)."""
        return self.status(run_id) == "ok"

    def get(self, run_id: str) -> Record:
        """The stored record of a run.

        Raises:
            KeyError: the run is not stored or its file is corrupt.
        """
        record = self._load(self.file(run_id))
        if record is None:
            raise KeyError(f"run {run_id!r} is not in {self}")
        return record

    def runs(self, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """One row per run: exactly ``RUN_COLUMNS`` (schema dtypes; ints are nullable ``Int64``), then any
        extra metric columns. ``run_ids`` restricts and orders the rows."""
        return _frame(RUN_COLUMNS, [r.row for r in self._records(run_ids)])

    def history(self, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """One row per (run, stage, epoch): ``HISTORY_COLUMNS`` then extra columns."""
        return _frame(HISTORY_COLUMNS, [h for r in self._records(run_ids) for h in r.history])

    def layers(self, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """One row per (run, prunable layer): ``LAYER_COLUMNS`` then extra columns."""
        return _frame(LAYER_COLUMNS, [layer for r in self._records(run_ids) for layer in r.layers])

"""The results store: one JSON file per run, written atomically, read back as tidy DataFrames.

Layout on disk (``Store().path`` is ``<cache_root>/results`` unless given)::

    results/
      runs/
        <run_id>.json   {"format": "shrinkviz-run", "schema_version": 1,
                         "row": {...RUN_COLUMNS + extra metrics...},
                         "history": [{...HISTORY_COLUMNS...}, ...], "layers": [{...LAYER_COLUMNS...}, ...],
                         "latency": [{...LATENCY_COLUMNS...}, ...],
                         "artefact": {"file": "<run_id>.pt", "sha256": ..., "bytes": ...} | null}
      artefacts/
        <run_id>.pt     the deployed model (shrinkviz.experiments.artefacts), written before its record

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
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from shrinkviz.core.io import atomic_write_bytes, atomic_write_text, cache_root
from shrinkviz.experiments.artefacts import ArtefactAccess
from shrinkviz.experiments.leases import Leases, clean_folder
from shrinkviz.experiments.schema import HISTORY_COLUMNS, LATENCY_COLUMNS, LAYER_COLUMNS, RUN_COLUMNS
from shrinkviz.experiments.validate import (
    _RUN_ID,
    SchemaError,
    _clean_table,
    _frame,
    _v1_latency,
    checksum,
    validate_row,
)

FORMAT = "shrinkviz-run"
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Record versions this store reads. Version 1 (before the latency table and artefacts) loads with the
new runs columns empty and one latency row made from its runs row (side-by-side columns empty)."""
STALE_TMP_S = 3600.0
"""Temporary files older than this (seconds) are left by dead writers and removed when a store opens."""


class StoreWriteError(OSError):
    """A record could not be written (disk full, read-only or no permission); nothing was half-written."""


@dataclass
class Record:
    """One stored run: its row, its per-epoch history and its per-layer table (lists of dicts)."""

    row: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)
    latency: list[dict[str, Any]] = field(default_factory=list)
    artefact: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION


class Store(ArtefactAccess):
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
        self.artefacts_dir = self.path / "artefacts"
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
    def put(
        self,
        row: Mapping[str, Any],
        history: Any = None,
        layers: Any = None,
        latency: Any = None,
        artefact: bytes | None = None,
    ) -> Path:
        """Validate and store one finished (or failed) run atomically, replacing any earlier file.

        Args:
            row: one runs row (``RUN_COLUMNS`` plus any extra metric columns).
            history: per-epoch rows (list of dicts or DataFrame); ``run_id`` is filled in.
            layers: per-layer rows (list of dicts or DataFrame); ``run_id`` is filled in.
            latency: latency rows (``LATENCY_COLUMNS``); ``run_id`` is filled in.
            artefact: the deployed model's bytes (:func:`shrinkviz.experiments.artefacts.artefact_bytes`),
                written atomically to ``artefacts/<run_id>.pt`` before the record that names its sha256.

        Returns:
            The file written.

        Raises:
            SchemaError: the row or a table does not match the schema (nothing is written).
            StoreWriteError: the disk is full or not writable (nothing is half-written).
        """
        clean = validate_row(row)
        run_id = clean["run_id"]
        doc = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "row": clean,
            "history": _clean_table("history", HISTORY_COLUMNS, history, run_id),
            "layers": _clean_table("layers", LAYER_COLUMNS, layers, run_id),
            "latency": _clean_table("latency", LATENCY_COLUMNS, latency, run_id),
            "artefact": None,
        }
        if artefact is not None:
            doc["artefact"] = {
                "file": f"{run_id}.pt",
                "sha256": hashlib.sha256(artefact).hexdigest(),
                "bytes": len(artefact),
            }
            self._write(run_id, lambda: atomic_write_bytes(self.artefacts_dir / f"{run_id}.pt", artefact))
        return self._write_doc(run_id, doc)

    def _write_doc(self, run_id: str, doc: dict[str, Any]) -> Path:
        doc["checksum"] = checksum(doc)
        path = self.file(run_id)
        written = self._write(run_id, lambda: atomic_write_text(path, json.dumps(doc, separators=(",", ":"))))
        self._problems.pop(str(path), None)
        return written

    def _write(self, run_id: str, write: Any) -> Any:
        try:
            return write()
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

    def add_latency(self, run_id: str, rows: Iterable[Mapping[str, Any]], columns: Mapping[str, Any]) -> Path:
        """Append latency rows to a stored run (earlier rows kept) and set its runs-table latency columns to
        ``columns`` (the newest figures); the record is rewritten atomically.

        Raises:
            KeyError: the run is not stored.
        """
        record = self.get(run_id)
        row = {**record.row, **columns}
        doc = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "row": validate_row(row),
            "history": record.history,
            "layers": record.layers,
            "latency": record.latency + _clean_table("latency", LATENCY_COLUMNS, list(rows), run_id),
            "artefact": record.artefact,
        }
        return self._write_doc(run_id, doc)

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
            version = doc.get("schema_version")
            if version not in READABLE_VERSIONS:
                raise SchemaError(
                    f"schema_version {version!r}: this shrinkviz reads {READABLE_VERSIONS}; upgrade shrinkviz"
                )
            if "checksum" in doc and doc["checksum"] != checksum(doc):
                raise SchemaError("checksum mismatch: the record was edited or damaged after it was written")
            row = validate_row(doc["row"])
            if f"{row['run_id']}.json" != path.name:
                raise SchemaError(f"holds run {row['run_id']!r}, not the one its name says")
            latency = doc.get("latency") if version >= 2 else _v1_latency(row)
            record = Record(
                row,
                _clean_table("history", HISTORY_COLUMNS, doc.get("history"), row["run_id"]),
                _clean_table("layers", LAYER_COLUMNS, doc.get("layers"), row["run_id"]),
                _clean_table("latency", LATENCY_COLUMNS, latency, row["run_id"]),
                doc.get("artefact") if version >= 2 else None,
                version,
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

    def latency(self, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """One row per (run, runtime, sitting): ``LATENCY_COLUMNS`` then extra columns; every sitting kept
        (the newest per run and runtime: ``latest_latency``)."""
        return _frame(LATENCY_COLUMNS, [row for r in self._records(run_ids) for row in r.latency])

    def latest_latency(self, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """:meth:`latency` keeping, per (run, runtime, choice), only the rows of the newest sitting: the last
        one appended (``measured_at`` has one-second resolution, and a re-timing can follow its run within
        the same second)."""
        table = self.latency(run_ids)
        if table.empty:
            return table
        newest = table.groupby(["run_id", "runtime", "choice"])["sitting"].transform("last")
        return table[table["sitting"] == newest].reset_index(drop=True)

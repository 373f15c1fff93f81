"""Claims on runs being computed, so that sweeps sharing a store split the work instead of repeating it.

A lease is a small JSON file ``runs/<run_id>.lease`` holding its holder (host, pid, a random token) and an
expiry time. A lease is valid until it expires, and, on the holder's own host, only while the holder
process is alive: a lease whose holder died on this host is free at once; one from another host is free
when it expires (holders renew their leases while they compute, see :class:`Renewer`). Claims and breaks
of stale leases happen under an exclusive ``flock`` of ``runs/.leases.lock``, so two processes never both
win the same run.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> mine = Leases(folder)
    >>> mine.claim("run1"), Leases(folder).claim("run1")   # a second holder cannot take it
    (True, False)
    >>> mine.release("run1"); Leases(folder).claim("run1")
    True
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shrinkviz.core.io import atomic_write_text

LEASE_S = 120.0
"""Seconds a lease lasts without renewal; :class:`Renewer` renews every quarter of it."""

SUFFIX = ".lease"


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` exists on this host.

    Example:
        >>> pid_alive(os.getpid())
        True
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Leases:
    """The leases of one folder, held by this process (host, pid and a random token per instance).

    Args:
        folder: where the ``.lease`` files live (a store's ``runs/`` folder).
        ttl: seconds a lease lasts unless renewed.
    """

    def __init__(self, folder: str | os.PathLike[str], ttl: float = LEASE_S) -> None:
        if not ttl > 0:
            raise ValueError(f"lease ttl={ttl!r}: must be > 0 seconds")
        self.folder, self.ttl = Path(folder), float(ttl)
        self.holder = {"host": socket.gethostname(), "pid": os.getpid(), "token": secrets.token_hex(8)}
        self.held: set[str] = set()
        self._mutex = threading.Lock()

    def file(self, run_id: str) -> Path:
        """The lease file of a run."""
        return self.folder / f"{run_id}{SUFFIX}"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._mutex, open(self.folder / ".leases.lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def read(self, run_id: str) -> dict[str, Any] | None:
        """The lease of a run when one is valid (unexpired, holder alive on this host), else None."""
        try:
            lease = json.loads(self.file(run_id).read_text(encoding="utf-8"))
            expires, host, pid = float(lease["expires"]), str(lease["host"]), int(lease["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if expires < time.time():
            return None
        if host == self.holder["host"] and not pid_alive(pid):
            return None
        return lease

    def _mine(self, lease: dict[str, Any] | None) -> bool:
        return lease is not None and lease.get("token") == self.holder["token"]

    def _write(self, run_id: str) -> None:
        lease = {**self.holder, "run_id": run_id, "expires": time.time() + self.ttl}
        atomic_write_text(self.file(run_id), json.dumps(lease))

    def claim(self, run_id: str) -> bool:
        """Take the run's lease unless another live holder has it; True when this holder now holds it."""
        with self._locked():
            lease = self.read(run_id)
            if lease is not None and not self._mine(lease):
                return False
            self._write(run_id)
            self.held.add(run_id)
            return True

    def renew(self) -> None:
        """Extend every lease this holder holds (a lease lost to another holder is dropped)."""
        with self._locked():
            for run_id in list(self.held):
                lease = self.read(run_id)
                if lease is not None and not self._mine(lease):
                    self.held.discard(run_id)
                else:
                    self._write(run_id)

    def release(self, run_id: str) -> None:
        """Give a lease back (nothing happens when this holder does not hold it)."""
        with self._locked():
            if self._mine(self.read(run_id)):
                self.file(run_id).unlink(missing_ok=True)
            self.held.discard(run_id)

    def release_all(self) -> None:
        """Give back every lease this holder holds."""
        for run_id in list(self.held):
            self.release(run_id)

    def clean_stale(self) -> int:
        """Remove lease files that are no longer valid; return how many."""
        removed = 0
        if not any(self.folder.glob(f"*{SUFFIX}")):
            return 0
        with contextlib.suppress(OSError), self._locked():
            for path in self.folder.glob(f"*{SUFFIX}"):
                if self.read(path.name[: -len(SUFFIX)]) is None:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed


class Renewer:
    """A daemon thread renewing a :class:`Leases` holder's leases every ``ttl / 4`` seconds until stopped.

    Example:
        >>> import tempfile
        >>> with Renewer(Leases(tempfile.mkdtemp())) as r:
        ...     r.leases.claim("x")
        True
    """

    def __init__(self, leases: Leases) -> None:
        self.leases = leases
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="shrinkviz-lease-renewer", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.leases.ttl / 4):
            with contextlib.suppress(OSError):
                self.leases.renew()

    def __enter__(self) -> Renewer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(OSError):
            self.leases.release_all()


def clean_folder(folder: str | os.PathLike[str], leases: Leases, max_age_s: float) -> list[str]:
    """Remove ``*.tmp`` files older than ``max_age_s`` and invalid leases from ``folder``; return what
    was removed (a folder that cannot be written is left as it is)."""
    folder = Path(folder)
    removed: list[str] = []
    if not folder.is_dir():
        return removed
    cutoff = time.time() - max_age_s
    try:
        with os.scandir(folder) as it:
            stale = [e for e in it if e.name.endswith(".tmp") and e.stat().st_mtime < cutoff]
        for entry in stale:
            os.unlink(entry.path)
            removed.append(entry.name)
        if leases.clean_stale():
            removed.append("(stale leases)")
    except OSError:
        pass
    return removed

"""Progress bars that suit where the output goes.

:func:`progress_bar` is the one way shrinkviz shows progress (training epochs, sweeps):

* on a terminal and in Jupyter it is a normal ``tqdm.auto`` bar (a text bar redrawn in place, or a widget);
* anywhere else (a log file, a pipe, CI) redrawing in place would write one carriage-return update per
  step into the log, so it writes plain lines instead: one each time another tenth of ``total`` is done,
  at most ``lines`` (10) lines whatever the number of steps, never a ``\\r``. Without a ``total`` it writes
  one line when it closes.

Example:
    >>> import io
    >>> log = io.StringIO()
    >>> with progress_bar(200, "fit", file=log) as bar:
    ...     for _ in range(200):
    ...         bar.update(1)
    >>> lines = log.getvalue().splitlines()
    >>> len(lines), "\\r" in log.getvalue(), lines[0].startswith("fit:  10% 20/200")
    (10, False, True)
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm import tqdm as _plain_tqdm
from tqdm.auto import tqdm as _auto_tqdm

__all__ = ["LineProgress", "progress_bar"]


def _in_jupyter() -> bool:
    """True inside a Jupyter kernel (where ``tqdm.auto`` draws a widget)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class LineProgress:
    """The non-terminal form of :func:`progress_bar`: a plain line per tenth of ``total`` (``lines``
    lines in all), formatted like tqdm's text (``desc: pct% n/total [elapsed<remaining, rate, postfix]``).
    It has the part of tqdm's interface shrinkviz uses: ``update``, ``set_postfix``, ``close``, ``with``."""

    def __init__(
        self, total: int | None, desc: str | None, *, unit: str = "it", file: TextIO, lines: int = 10
    ) -> None:
        self.total, self.desc, self.unit, self.file = total, desc or "", unit, file
        self.lines = max(1, int(lines))
        self.n = 0
        self.postfix = ""
        self._started = time.perf_counter()
        self._written_at: int | None = None  # the count of the last line written
        self._closed = False

    def _milestone(self, n: int) -> int:
        """How many of the ``lines`` milestones ``n`` steps have passed."""
        return min(self.lines, n * self.lines // self.total) if self.total else 0

    def _write(self) -> None:
        known = bool(self.total)
        fmt = (
            "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
            if known
            else "{desc}: {n_fmt}{unit} [{elapsed}, {rate_fmt}{postfix}]"
        )
        line = _plain_tqdm.format_meter(
            self.n,
            self.total if known else None,
            time.perf_counter() - self._started,
            prefix=self.desc,
            unit=self.unit,
            postfix=self.postfix or None,
            bar_format=fmt,
        )
        self.file.write(line + "\n")
        self.file.flush()
        self._written_at = self.n

    def update(self, n: int = 1) -> None:
        before = self.n
        self.n += n
        if self.total and self._milestone(self.n) > self._milestone(before):
            self._write()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self._closed and self._written_at != self.n:
            self._write()  # where it stopped: no total, or stopped between milestones
        self._closed = True

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(
    total: int | None = None,
    desc: str | None = None,
    *,
    enabled: bool = True,
    unit: str = "it",
    leave: bool = False,
    file: TextIO | None = None,
    lines: int = 10,
) -> Any:
    """A progress bar for ``total`` steps: ``tqdm.auto`` on a terminal or in Jupyter, else plain lines.

    Args:
        total: number of steps (None when unknown).
        desc: label in front of the bar.
        enabled: False returns a disabled bar (every call is a no-op) so callers need no branches.
        unit: name of one step ("it", "run").
        leave: keep the terminal bar once closed (lines written to a log always stay).
        file: where to write (default ``sys.stderr``); its ``isatty()`` chooses the form.
        lines: outside a terminal, the number of lines over ``total`` steps.

    Returns:
        An object with ``update(n)``, ``set_postfix(**kw)`` and ``close()``, usable as a context manager.

    Example:
        >>> import io
        >>> log = io.StringIO()
        >>> bar = progress_bar(8, "sweep", unit="run", file=log, lines=2)
        >>> for _ in range(8):
        ...     bar.update(1)
        ...     bar.set_postfix(failed=0)
        >>> bar.close()
        >>> [line.split(" [")[0] for line in log.getvalue().splitlines()]
        ['sweep:  50% 4/8', 'sweep: 100% 8/8']
        >>> quiet = progress_bar(8, enabled=False, file=log)
        >>> quiet.update(8); quiet.close(); len(log.getvalue().splitlines())
        2
    """
    stream = sys.stderr if file is None else file
    if not enabled or _in_jupyter() or _is_terminal(stream):
        return _auto_tqdm(total=total, desc=desc, unit=unit, leave=leave, file=file, disable=not enabled)
    return LineProgress(total, desc, unit=unit, file=stream, lines=lines)

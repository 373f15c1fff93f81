"""The machine a figure was measured on.

Example:
    >>> isinstance(cpu_model(), str) and len(cpu_model()) > 0
    True
"""

from __future__ import annotations

import platform
from functools import cache


@cache
def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"

"""The machine a figure was measured on: CPU model, the ISA features that decide INT8 speed, cores and the
versions of the inference libraries.

A latency is a property of a model *and* a machine: INT8 kernels run several times faster on CPUs with
AVX512-VNNI / AVX-VNNI or AMX than on AVX2-only ones, so every stored latency carries :func:`machine` and
figures refuse to mix machines. :func:`machine_id` is a short stable hash of the hardware part (CPU model,
ISA features, cores), the same on every run on one machine.

Example:
    >>> isinstance(cpu_model(), str) and len(cpu_model()) > 0
    True
    >>> m = machine()
    >>> len(m["machine_id"]), m["machine_id"] == machine_id()
    (8, True)
    >>> describe({"cpu_model": "Example CPU", "cpu_isa": "avx2", "cpu_cores": 2, "machine_id": "ab12cd34"})
    'Example CPU (avx2, 2 cores) [ab12cd34]'
"""

from __future__ import annotations

import hashlib
import os
import platform
from collections.abc import Mapping
from functools import cache
from importlib import metadata
from typing import Any

ISA_FLAGS: tuple[str, ...] = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)
"""The ``/proc/cpuinfo`` flags recorded with a latency (the ones INT8 and FP32 kernel choice depends on)."""

MACHINE_FIELDS: tuple[str, ...] = (
    "machine_id",
    "cpu_model",
    "cpu_isa",
    "cpu_cores",
    "torch_version",
    "onnxruntime_version",
    "openvino_version",
)
"""The keys of :func:`machine`, in order."""


def _cpuinfo() -> dict[str, str]:
    """The first processor's ``key: value`` lines of ``/proc/cpuinfo`` (empty where there is none)."""
    out: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if not line.strip():
                    if out:
                        break
                    continue
                key, _, value = line.partition(":")
                out.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return out


@cache
def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    name = _cpuinfo().get("model name", "")
    return name or platform.processor() or platform.machine() or "unknown"


@cache
def cpu_isa() -> tuple[str, ...]:
    """The :data:`ISA_FLAGS` this CPU has, in that order (empty where ``/proc/cpuinfo`` has no flags)."""
    flags = set(_cpuinfo().get("flags", "").split())
    return tuple(f for f in ISA_FLAGS if f in flags)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


@cache
def machine_id() -> str:
    """8 hex digits naming the hardware: a hash of the CPU model, its ISA features and its core count."""
    text = f"{cpu_model()}|{','.join(cpu_isa())}|{os.cpu_count() or 0}"
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def machine() -> dict[str, Any]:
    """The descriptor stored with every latency: :data:`MACHINE_FIELDS` (versions ``''`` when not installed).

    ``cpu_isa`` is a comma-separated list of :data:`ISA_FLAGS`; ``cpu_cores`` the logical CPUs the
    operating system reports.
    """
    return {
        "machine_id": machine_id(),
        "cpu_model": cpu_model(),
        "cpu_isa": ",".join(cpu_isa()),
        "cpu_cores": os.cpu_count() or 0,
        "torch_version": _version("torch"),
        "onnxruntime_version": _version("onnxruntime"),
        "openvino_version": _version("openvino"),
    }


def int8_class(isa: str) -> str:
    """What decides INT8 speed on a CPU with these ISA flags: ``amx``, ``vnni``, ``avx2`` or ``basic``.

    Example:
        >>> int8_class("avx2,avx512f,avx512_vnni"), int8_class("avx2"), int8_class("")
        ('vnni', 'avx2', 'basic')
    """
    flags = set(isa.split(","))
    if "amx_int8" in flags:
        return "amx"
    if flags & {"avx512_vnni", "avx_vnni"}:
        return "vnni"
    return "avx2" if "avx2" in flags else "basic"


def describe(row: Mapping[str, Any]) -> str:
    """A one-line name of the machine of a latency row (what figures and the report print)."""
    isa = str(row.get("cpu_isa") or "")
    features = [f for f in isa.split(",") if f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")]
    cores = row.get("cpu_cores")
    parts = [", ".join(features) or "no AVX2"]
    if cores:
        parts.append(f"{int(cores)} cores")
    return f"{row.get('cpu_model') or 'unknown CPU'} ({', '.join(parts)}) [{row.get('machine_id') or '?'}]"

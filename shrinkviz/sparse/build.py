"""Building and loading the C kernels: compiled at first use with the system C compiler, cached.

The shared library is built from ``kernels/sparse.c``, ``kernels/block_int8.c`` and ``kernels/qadd.c`` with ``cc -O3 -march=native -fPIC -shared`` (no
OpenMP: one thread per call) and loaded with :mod:`ctypes`, so no PyTorch headers or build isolation are
involved and a build takes about a second. The file is cached under :func:`cache_dir` with a name keyed by
the hash of the source, the compiler's version, the flags and the CPU's model and ISA flags, and is written
atomically (temporary file, then rename), so concurrent processes never load a half-written library.

The compiler is ``$SHRINKVIZ_SPARSE_CC``, else ``$CC``, else ``cc`` / ``gcc``. Where no compiler is found
or the build fails, :func:`availability` reports ``(False, reason)`` with a one-line reason and
:func:`load` raises :class:`SparseUnavailableError`; importing :mod:`shrinkviz.sparse` never builds.

Example:
    >>> ok, reason = availability()  # doctest: +SKIP
    >>> ok, reason  # doctest: +SKIP
    (True, 'built with gcc (Debian 12.2.0-14+deb12u1) 12.2.0 -O3 -march=native')
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from functools import cache
from pathlib import Path

from shrinkviz.core.machine import cpu_model
from shrinkviz.deploy.errors import LatencyError

SOURCES = tuple(Path(__file__).with_name("kernels") / f for f in ("sparse.c", "block_int8.c", "qadd.c"))
HEADERS = (Path(__file__).with_name("kernels") / "qadd.h",)
FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-fno-math-errno")
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8")
ABI_VERSION = 6
_LOCK = threading.Lock()
_STATE: dict[str, object] = {}


class SparseUnavailableError(LatencyError):
    """The sparse kernels cannot be built or loaded on this machine (the message says why)."""


def cache_dir() -> Path:
    """``$SHRINKVIZ_CACHE/sparse`` if set, else ``~/.cache/shrinkviz/sparse`` (created on demand)."""
    root = os.environ.get("SHRINKVIZ_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "shrinkviz"
    return base / "sparse"


@cache
def isa_flags() -> tuple[str, ...]:
    """The ISA flags of :data:`ISA_FLAGS` that ``/proc/cpuinfo`` lists for this CPU."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return tuple(f for f in ISA_FLAGS if f in have)
    except OSError:
        pass
    return ()


def compiler() -> str | None:
    """Path of the C compiler to use, or None when there is none."""
    for name in (os.environ.get("SHRINKVIZ_SPARSE_CC"), os.environ.get("CC"), "cc", "gcc"):
        if name:
            found = shutil.which(name)
            if found:
                return found
            if name == os.environ.get("SHRINKVIZ_SPARSE_CC"):
                return None  # an explicit choice that does not exist: do not silently use another
    return None


def _compiler_version(cc: str) -> str:
    out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30, check=False)
    return (out.stdout or out.stderr).splitlines()[0].strip() if (out.stdout or out.stderr) else cc


def build_key(cc: str) -> str:
    """Hash of source, compiler version, flags and CPU: the cached library's file name stem."""
    text = "\n".join(
        [
            *(s.read_text() for s in SOURCES + HEADERS),
            _compiler_version(cc),
            " ".join(FLAGS),
            cpu_model(),
            *isa_flags(),
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build(cc: str | None = None, out_dir: Path | None = None) -> Path:
    """Compile the kernels (or reuse the cached build) and return the library's path.

    Raises:
        SparseUnavailableError: no compiler, or the compiler failed (its first error line is quoted).
    """
    cc = cc or compiler()
    if cc is None:
        raise SparseUnavailableError(
            "sparse runtime unavailable: no C compiler found (install gcc, or set SHRINKVIZ_SPARSE_CC to one)"
        )
    missing = [str(s) for s in SOURCES + HEADERS if not s.is_file()]
    if missing:
        raise SparseUnavailableError(
            f"sparse runtime unavailable: kernel source {missing[0]} is missing (reinstall shrinkviz)"
        )
    out_dir = out_dir or cache_dir()
    target = out_dir / f"sparse-{build_key(cc)}.so"
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".build-", suffix=".so")
    os.close(fd)
    try:
        proc = subprocess.run(
            [cc, *FLAGS, "-o", tmp, *map(str, SOURCES), "-lm"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[:200])
            raise SparseUnavailableError(
                f"sparse runtime unavailable: building the kernels with {cc} failed: {first}"
            )
        os.replace(tmp, target)
    except OSError as exc:
        raise SparseUnavailableError(f"sparse runtime unavailable: cannot build in {out_dir}: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i = ctypes.c_void_p, ctypes.c_int
    lib.sv_abi_version.restype = i
    lib.sv_tile_floats.restype = i
    lib.sv_phase_f32.argtypes = [p, i, i, i, i, i, i, i, i, i, p]
    lib.sv_phase_u8.argtypes = [p, i, i, i, i, i, i, i, i, i, i, p]
    lib.sv_shift_f32.argtypes = [p, *(i,) * 11, p]
    lib.sv_shift_u8.argtypes = [p, *(i,) * 12, p]
    lib.sv_spconv.argtypes = [p, i, i, p, p, p, i, p, i]
    lib.sv_spmv.argtypes = [p, i, p, p, p, p]
    lib.sv_spconv4.argtypes = [p, i, i, p, p, p, i, p, i]
    lib.sv_finish_f32.argtypes = [p, i, i, i, i, i, p, p, p, i, p]
    lib.sv_finish_u8.argtypes = [p, i, i, i, i, i, p, p, i, i, p]
    lib.sv_vnni_available.restype = i
    lib.sv_phase_u8x4.argtypes = [p, i, i, i, i, i, i, i, i, i, i, ctypes.c_long, i, i, p]
    lib.sv_spconv_b4i8.argtypes = [p, i, i, p, p, p, i, p, i]
    lib.sv_finish_i32.argtypes = [p, i, i, i, i, i, p, i, p, p, i, i, p]
    lib.sv_conv_b4i8.argtypes = [p, p, i, p, i, p, ctypes.c_float, i, i]
    lib.sv_qadd_u8.argtypes = [p, p, p, ctypes.c_float, i, p, *(ctypes.c_long,) * 3, i]
    for fn in (
        "sv_phase_f32",
        "sv_phase_u8",
        "sv_shift_f32",
        "sv_shift_u8",
        "sv_spconv",
        "sv_spconv4",
        "sv_spmv",
        "sv_finish_f32",
        "sv_finish_u8",
        "sv_phase_u8x4",
        "sv_spconv_b4i8",
        "sv_finish_i32",
        "sv_conv_b4i8",
        "sv_qadd_u8",
    ):
        getattr(lib, fn).restype = None
    if lib.sv_abi_version() != ABI_VERSION:
        raise SparseUnavailableError(
            "sparse runtime unavailable: the cached kernel library has a different ABI"
        )
    return lib


def load() -> ctypes.CDLL:
    """The loaded kernel library (built on first use, then cached in this process).

    Raises:
        SparseUnavailableError: the kernels cannot be built or loaded; the reason is the message.
    """
    with _LOCK:
        if "lib" in _STATE:
            return _STATE["lib"]  # type: ignore[return-value]
        if "error" in _STATE:
            raise SparseUnavailableError(str(_STATE["error"]))
        try:
            path = build()
            lib = _declare(ctypes.CDLL(str(path)))
        except SparseUnavailableError as exc:
            _STATE["error"] = str(exc)
            raise
        except OSError as exc:
            _STATE["error"] = f"sparse runtime unavailable: cannot load the kernel library: {exc}"
            raise SparseUnavailableError(str(_STATE["error"])) from exc
        _STATE["lib"] = lib
        _STATE["id"] = path.stem
        _STATE["info"] = f"C kernels built with {_compiler_version(compiler() or 'cc')} {' '.join(FLAGS[:2])}"
        return lib


def lib() -> ctypes.CDLL:
    """:func:`load` without the lock once the library is loaded (the per-call path of the modules)."""
    loaded = _STATE.get("lib")
    return loaded if loaded is not None else load()  # type: ignore[return-value]


def kernel_id() -> str:
    """The loaded library's build key (``sparse-<hash>``); part of every autotune cache key."""
    load()
    return str(_STATE["id"])


def availability() -> tuple[bool, str]:
    """``(True, how the kernels were built)`` or ``(False, one-line reason)``; builds on first call."""
    try:
        load()
    except SparseUnavailableError as exc:
        return False, str(exc)
    return True, str(_STATE["info"])


def reset() -> None:
    """Forget the loaded library and any recorded failure (the next :func:`load` retries)."""
    with _LOCK:
        _STATE.clear()

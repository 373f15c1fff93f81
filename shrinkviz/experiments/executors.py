"""Where sweep runs execute: in this process (default) or on a Dask distributed cluster.

An executor maps a function over items and yields ``(item, result, error)`` as each finishes, in any order;
exactly one of ``result`` / ``error`` is None. The sweep writes results to the store as they arrive, in
the driver process, so workers need no access to the store and an interrupted sweep keeps what finished.

Example:
    >>> with InProcessExecutor() as ex:
    ...     sorted(r for _, r, _ in ex.map_unordered(abs, [-2, 1]))
    [1, 2]
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

WORKER_ENVIRON_UNSET = ("MALLOC_TRIM_THRESHOLD_",)
"""Variables of Dask's ``distributed.nanny.pre-spawn-environ`` a local cluster's workers start without.
Dask sets ``MALLOC_TRIM_THRESHOLD_=65536`` so glibc hands freed memory back at once; setting it also fixes
glibc's mmap threshold at 128 KiB, so every activation buffer of a training step is a fresh ``mmap`` whose
pages fault in again. Measured on a 2-core AMD EPYC, one thread, MnistNet, a 12,800-image Fashion-MNIST
epoch: 8.8 s with it, 4.6-5.9 s without (a sweep's epoch 29-30 s against 15 s in-process), for a peak RSS
of 458 against 480 MiB. Without it the workers' training steps hold the heap as the sweep's own process
does (:func:`shrinkviz.core.heap.steady_heap`, which takes such a variable for the user's choice and keeps
it); a variable set in the user's environment still reaches them."""


QUIET_WORKER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.worker.memory.monitor-interval": "1s",
}
"""Dask settings of a local cluster when its dashboard is off: no statistical profiler, calmer event loops.

By default each worker samples the stack of its task thread every 10 ms for the dashboard's profile page
(``distributed.worker.profile``), checks its event loop's health every 20 ms (``admin.tick``), reads its
CPU, memory, disk and network counters every 500 ms for the dashboard's system plots
(``admin.system-monitor``) and its memory against the spill / pause / terminate limits every 100 ms
(``worker.memory.monitor-interval``). On a 2-core AMD EPYC (Zen 3) with two workers finetuning MnistNet,
a worker process spent 0.29-0.58 s of CPU beyond its training thread per 5.7-8.2 s epoch with Dask's
defaults, 0.18-0.24 s with the profiler off and 0.023-0.032 s with all four settings
(``time.process_time`` less ``time.thread_time``, three sittings each, alternated): CPU the training threads
compete for on a machine whose every core trains. Nobody sees the profile or the system plots without the
dashboard; the memory limits are still enforced, within a second instead of a tenth of one."""


@contextlib.contextmanager
def _worker_environ(quiet: bool = False) -> Iterator[None]:
    """Start local workers without :data:`WORKER_ENVIRON_UNSET` (and, ``quiet``, with
    :data:`QUIET_WORKER_CONFIG`), and leave this process's environment as it was (Dask's nanny writes its
    pre-spawn variables into ``os.environ``, which later subprocesses of a notebook kernel would inherit:
    ``OMP_NUM_THREADS=1`` among them)."""
    import dask

    saved = dict(os.environ)
    settings = {
        f"distributed.nanny.pre-spawn-environ.{k}": None for k in WORKER_ENVIRON_UNSET if k not in saved
    }
    if quiet:
        settings.update(QUIET_WORKER_CONFIG)
    try:
        with dask.config.set(settings):
            yield
    finally:
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        os.environ.update(saved)


class Executor(Protocol):
    """What ``shrinkviz.experiments.sweep`` needs from an executor."""

    def start(self) -> None:
        """Acquire resources (connect, start workers); called once, only when there is work."""

    def map_unordered(
        self, fn: Callable[..., Any], items: Iterable[Any], *args: Any
    ) -> Iterator[tuple[Any, Any, BaseException | None]]:
        """Yield ``(item, fn(item, *args), None)`` or ``(item, None, error)`` as runs finish."""

    def close(self) -> None:
        """Release resources."""


class InProcessExecutor:
    """Run one item after the other in this process (exceptions are yielded, not raised)."""

    name = "in-process"
    torch_threads: int | None = None  # leave this process's torch threads alone

    def start(self) -> None:
        """Nothing to start."""

    def map_unordered(
        self, fn: Callable[..., Any], items: Iterable[Any], *args: Any
    ) -> Iterator[tuple[Any, Any, BaseException | None]]:
        for item in items:
            try:
                yield item, fn(item, *args), None
            except Exception as exc:  # noqa: BLE001 - reported to the caller with its item
                yield item, None, exc

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> InProcessExecutor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DaskExecutor:
    """Run items as tasks on Dask distributed: a ``LocalCluster`` of worker processes, or an existing one.

    Args:
        n_workers: worker processes of the local cluster (ignored with ``address``).
        address: scheduler of an existing cluster, e.g. ``"tcp://host:8786"``.
        threads_per_worker: task slots per worker; torch in each task uses this many threads too.
        processes: local workers as processes (True) or threads.
        connect_timeout: seconds to wait for the scheduler before giving up with a ConnectionError.
        dashboard: serve the local cluster's Dask dashboard, bound to 127.0.0.1 only (off by default;
            its address is then :attr:`dashboard_link`).
        security: a ``distributed.security.Security`` (TLS certificates) for the connection to the
            scheduler, or for the local cluster (which then listens on ``tls://``); see
            :func:`tls_security`.
        window: runs in flight at once (default: the cluster's task slots, the sum of its workers'
            threads). Items are taken from the iterator only as slots free up, so a sweep claims a run's
            lease when the run starts, and a second sweep over the same grid shares the rest.
        **cluster_kwargs: passed to ``distributed.LocalCluster``.

    The local cluster listens on 127.0.0.1 only, unless ``host=`` is passed in ``cluster_kwargs``.

    The cluster starts on :meth:`start` (the sweep calls it only when something needs running) and stops
    on :meth:`close` or at the end of a ``with`` block; a client to an external cluster is closed, the
    cluster itself is left running.

    Example:
        >>> with DaskExecutor(n_workers=2, processes=False) as ex:  # thread workers: starts in a second
        ...     done = sorted(r for _, r, _ in ex.map_unordered(abs, [-2, 1, -3]))
        ...     workers = len(ex.client.scheduler_info()["workers"])
        >>> done, workers, ex.client
        ([1, 2, 3], 2, None)

        ``shrinkviz.experiments.sweep(base, executor=DaskExecutor(n_workers=4), seed=[0, 1, 2])`` runs a
        sweep's experiments on such a cluster.
    """

    name = "dask"

    def __init__(
        self,
        n_workers: int = 2,
        *,
        address: str | None = None,
        threads_per_worker: int = 1,
        processes: bool = True,
        connect_timeout: float = 5.0,
        dashboard: bool = False,
        security: Any = None,
        window: int | None = None,
        **cluster_kwargs: Any,
    ) -> None:
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ValueError(
                f"DaskExecutor.address={address!r}: expected a scheduler address like 'tcp://host:8786'"
            )
        if not isinstance(n_workers, int) or n_workers < 1:
            raise ValueError(f"DaskExecutor.n_workers={n_workers!r}: must be a whole number >= 1")
        if not isinstance(threads_per_worker, int) or threads_per_worker < 1:
            raise ValueError(
                f"DaskExecutor.threads_per_worker={threads_per_worker!r}: must be a whole number >= 1"
            )
        if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
            raise ValueError(
                f"DaskExecutor.window={window!r}: must be a whole number >= 1 or None (task slots)"
            )
        self.window = window
        if not connect_timeout > 0:
            raise ValueError(f"DaskExecutor.connect_timeout={connect_timeout!r}: must be > 0 seconds")
        self.n_workers, self.address, self.threads_per_worker = n_workers, address, threads_per_worker
        if not isinstance(dashboard, bool):
            raise ValueError(f"DaskExecutor.dashboard={dashboard!r}: must be True or False")
        self.processes, self.connect_timeout, self.cluster_kwargs = processes, connect_timeout, cluster_kwargs
        self.dashboard, self.security = dashboard, security
        self.torch_threads: int | None = threads_per_worker
        self.cluster: Any = None
        self.client: Any = None

    def __repr__(self) -> str:
        where = self.address or f"LocalCluster(n_workers={self.n_workers}, processes={self.processes})"
        return f"DaskExecutor({where})"

    def start(self) -> None:
        """Connect to the scheduler (starting a local cluster first when no address was given).

        Raises:
            ConnectionError: the scheduler cannot be reached within ``connect_timeout`` seconds.
        """
        if self.client is not None:
            return
        from distributed import Client, LocalCluster

        if self.address is None:
            kwargs: dict[str, Any] = {
                "dashboard_address": "127.0.0.1:8787" if self.dashboard else None,
                "silence_logs": 40,
            }
            if self.processes:  # worker threads talk in-process; worker processes over loopback only
                kwargs["host"] = "127.0.0.1"
            if not self.dashboard:  # the scheduler's HTTP server (health, metrics) stays, on loopback only
                kwargs["scheduler_kwargs"] = {"dashboard_address": "127.0.0.1:0"}
            if self.security is not None:
                kwargs.update(security=self.security, protocol="tls://")
            kwargs.update(self.cluster_kwargs)
            with _worker_environ(quiet=not self.dashboard):
                self.cluster = LocalCluster(
                    n_workers=self.n_workers,
                    threads_per_worker=self.threads_per_worker,
                    processes=self.processes,
                    **kwargs,
                )
            self.client = Client(self.cluster, security=self.security)
            return
        try:
            self.client = Client(self.address, timeout=self.connect_timeout, security=self.security)
        except TypeError as exc:  # a tls:// address without certificates
            raise ConnectionError(
                f"cannot reach the Dask scheduler at {self.address!r}: it needs TLS certificates ({exc}). "
                "Pass security=tls_security(ca, cert, key) (CLI: --tls-ca-file, --tls-cert, --tls-key). "
                "Nothing was run."
            ) from exc
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConnectionError(
                f"cannot reach the Dask scheduler at {self.address!r} within {self.connect_timeout:g} s ({exc}). "
                "Start one with `dask scheduler` plus `dask worker <address>`, check the address, or use "
                "DaskExecutor(n_workers=2) for a local cluster. Nothing was run."
            ) from exc

    @property
    def dashboard_link(self) -> str | None:
        """The dashboard's URL while a client is connected (None when off or not started)."""
        if self.client is None or (self.address is None and not self.dashboard):
            return None
        if self.address is None:  # the local cluster's dashboard listens on loopback only
            port = self.client.scheduler_info()["services"]["dashboard"]
            return f"http://127.0.0.1:{port}/status"
        return self.client.dashboard_link

    def map_unordered(
        self, fn: Callable[..., Any], items: Iterable[Any], *args: Any
    ) -> Iterator[tuple[Any, Any, BaseException | None]]:
        from distributed import as_completed

        self.start()
        source = iter(items)
        futures: dict[Any, Any] = {}

        def submit_next() -> Any:
            for item in source:  # one item at most: taken (and so claimed) only when it can start
                future = self.client.submit(fn, item, *args, pure=False)
                futures[future] = item
                return future
            return None

        window = self.window or self.slots()
        while len(futures) < window and submit_next() is not None:
            pass
        finished = as_completed(list(futures))
        try:
            for future in finished:
                item = futures.pop(future)
                following = submit_next()  # the freed slot takes the next item before this one is stored
                if following is not None:
                    finished.add(following)
                try:
                    yield item, future.result(), None
                except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: reported with its item
                    yield item, None, exc
        finally:
            pending = [f for f in futures if not f.done()]
            if pending:
                self.client.cancel(pending)

    def slots(self) -> int:
        """Tasks the cluster runs at once: the sum of its workers' threads (at least 1)."""
        workers = self.client.scheduler_info().get("workers", {})
        return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))

    def close(self) -> None:
        """Close the client and stop a cluster this executor started."""
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tls_security(ca_file: str, cert: str, key: str | None = None) -> Any:
    """A Dask ``Security`` for a TLS connection: the CA that signed the scheduler's certificate, and this
    client's certificate and key (``key`` None: the key is inside ``cert``). Encryption is required.

    Raises:
        ValueError: a file is missing (naming it).

    Example:
        >>> tls_security("/no/ca.pem", "/no/cert.pem")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ValueError: TLS CA file /no/ca.pem not found; ...
    """
    import os

    from distributed.security import Security

    for what, path in (("CA file", ca_file), ("certificate", cert), ("key", key)):
        if path is not None and not os.path.isfile(path):
            raise ValueError(
                f"TLS {what} {path} not found; pass existing PEM files (--tls-ca-file, --tls-cert, --tls-key)"
            )
    return Security(
        tls_ca_file=ca_file,
        tls_client_cert=cert,
        tls_client_key=key,
        tls_scheduler_cert=cert,
        tls_scheduler_key=key,
        tls_worker_cert=cert,
        tls_worker_key=key,
        require_encryption=True,
    )


def make_executor(spec: Executor | str | None, **kwargs: Any) -> tuple[Executor, bool]:
    """An executor from a spec: None / ``"local"`` (in-process), ``"dask"`` (LocalCluster), a
    ``tcp://`` address, or an executor object. Returns ``(executor, owned)``; owned ones are closed by
    the caller that made them."""
    if spec is None or spec in ("local", "in-process", "inprocess"):
        return InProcessExecutor(), True
    if spec == "dask":
        return DaskExecutor(**kwargs), True
    if isinstance(spec, str) and "://" in spec:
        return DaskExecutor(address=spec, **kwargs), True
    if isinstance(spec, str):
        raise ValueError(
            f"unknown executor {spec!r}; use None/'local', 'dask', a 'tcp://host:port' scheduler "
            "address, or an executor object"
        )
    if not all(hasattr(spec, m) for m in ("start", "map_unordered", "close")):
        raise TypeError(f"executor {spec!r} lacks start/map_unordered/close")
    return spec, False

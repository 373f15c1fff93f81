"""User registrations that reach every executor: shipped with the runs, or imported as plugins.

A strategy, model, dataset, runtime or technique registered in a notebook or script lives in that process
only; a Dask worker (a LocalCluster process, or a ``dask worker`` started elsewhere) has only the built-in
ones. Two ways across, both applied on the worker before each run:

* **Shipped by value**: every user registration (an entry whose code is not shrinkviz's) is pickled with
  cloudpickle and travels with each run. Code defined in ``__main__`` (a notebook cell, a script) is
  pickled by value, so the worker needs nothing installed.
* **Plugins**: module names imported on the worker first (``sweep(..., plugins=["my_methods"])``,
  ``plugins: [my_methods]`` in a sweep config, ``shrinkviz sweep --plugin my_methods``). Registrations
  made by importing an importable module are pickled by reference, so the worker must import it.

A run whose worker still lacks a name fails with a message saying which name, which registry and how to
ship it.

Example:
    >>> ship = Shipment.capture(plugins=["json"])
    >>> ship.plugins, [kind for kind, _, _, _ in ship.entries if kind == "model"] == []
    (('json',), True)
    >>> ship.install()   # what a worker does before a run (idempotent)
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shrinkviz.core.registry import Registry

_INSTALLED: set[str] = set()


def registries() -> dict[str, Registry[Any]]:
    """The five plug-in registries by kind."""
    from shrinkviz.data.datasets import DATASETS
    from shrinkviz.deploy.runtimes import RUNTIMES
    from shrinkviz.experiments.techniques import TECHNIQUES
    from shrinkviz.models import MODELS
    from shrinkviz.techniques.prune.strategies import STRATEGIES

    return {r.kind: r for r in (STRATEGIES, MODELS, DATASETS, RUNTIMES, TECHNIQUES)}


def origin(entry: Any) -> str:
    """The module an entry's code comes from (a function's, or the first callable field of a record).

    Example:
        >>> from shrinkviz.techniques.prune.strategies import STRATEGIES
        >>> origin(STRATEGIES.get("global_weight"))
        'shrinkviz.techniques.prune.strategies'
    """
    if isinstance(entry, functools.partial):
        return origin(entry.func)
    if isinstance(entry, type) or (callable(entry) and hasattr(entry, "__code__")):
        return entry.__module__
    for value in getattr(entry, "__dict__", {}).values():
        if callable(value):
            return origin(value)
    return getattr(entry, "__module__", None) or type(entry).__module__


def _is_user(entry: Any) -> bool:
    module = origin(entry)
    return not (module == "shrinkviz" or module.startswith("shrinkviz."))


def load_plugins(names: Iterable[str]) -> tuple[str, ...]:
    """Import each plugin module (which registers its entries); returns the names.

    Raises:
        ValueError: a name that is not a string, or a module that cannot be imported (one line, naming it).
    """
    loaded = []
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"plugin {name!r}: must be an importable module name such as 'my_methods'")
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any import failure of user code becomes one message
            raise ValueError(
                f"plugin {name!r} cannot be imported on {socket.gethostname()} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); put its folder on PYTHONPATH (of every "
                "Dask worker too) or pip-install it"
            ) from exc
        loaded.append(name)
    return tuple(loaded)


@dataclass(frozen=True)
class Shipment:
    """What a run needs besides its config: plugin modules and pickled user registrations.

    Attributes:
        plugins: module names imported before the run.
        entries: ``(kind, name, origin module, cloudpickle bytes)`` of each user registration.
    """

    plugins: tuple[str, ...] = ()
    entries: tuple[tuple[str, str, str, bytes], ...] = ()

    @classmethod
    def capture(cls, plugins: Iterable[str] = ()) -> Shipment:
        """Import ``plugins`` here and capture every user registration of this process."""
        import cloudpickle

        plugins = load_plugins(plugins)
        entries = []
        for kind, registry in registries().items():
            for name, entry in registry.items():
                if _is_user(entry):
                    try:
                        blob = cloudpickle.dumps(entry)
                    except Exception:  # noqa: BLE001, S112 - an unpicklable entry stays local (runs may not need it)
                        continue
                    entries.append((kind, name, origin(entry), blob))
        return cls(plugins, tuple(entries))

    @property
    def digest(self) -> str:
        """A hash of the shipment (a worker installs each distinct shipment once)."""
        h = hashlib.sha256(repr(self.plugins).encode())
        for kind, name, module, blob in self.entries:
            h.update(f"{kind}\0{name}\0{module}\0".encode())
            h.update(blob)
        return h.hexdigest()

    def install(self) -> None:
        """Import the plugins and register the shipped entries in this process (once per shipment).

        Raises:
            ValueError: a plugin or a shipped entry's module cannot be imported here (naming both fixes).
        """
        digest = self.digest
        if digest in _INSTALLED:
            return
        import pickle

        load_plugins(self.plugins)
        regs = registries()
        for kind, name, module, blob in self.entries:
            if name in regs[kind] and origin(regs[kind].get(name)) == module and module != "__main__":
                continue  # already registered here, e.g. by a plugin
            try:
                entry = pickle.loads(blob)
            except Exception as exc:  # noqa: BLE001 - e.g. ModuleNotFoundError of the entry's module
                raise ValueError(
                    f"{kind} {name!r} (defined in module {module!r}) cannot be loaded on worker "
                    f"{socket.gethostname()} pid {os.getpid()} ({type(exc).__name__}: {exc}); ship the module "
                    f"as a plugin (sweep(..., plugins=[{module!r}]), `plugins: [{module}]` in the config, or "
                    f"`shrinkviz sweep --plugin {module}`) and put it on the workers' PYTHONPATH"
                ) from exc
            regs[kind].register(name, entry, overwrite=True)
        _INSTALLED.add(digest)


def missing_registration(exc: Exception) -> ValueError:
    """The worker-side error of a config that was valid where it was made but not in this process: it
    names something (strategy, model, dataset, runtime, technique) this worker has no registration for."""
    return ValueError(
        f"{exc} -- on worker {socket.gethostname()} pid {os.getpid()}, which lacks this registration: "
        "register it in __main__ (a notebook cell or the script that runs the sweep: it is shipped with each "
        "run), or put it in a module and pass plugins=['module'] to sweep (`plugins:` in the config, "
        "`--plugin module` on the CLI)"
    )

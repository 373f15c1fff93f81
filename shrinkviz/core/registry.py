"""The one shape of every plug-in registry (strategies, models, datasets, runtimes, techniques).

A :class:`Registry` maps names to entries. Each registry offers a decorator form and a function form of
``register``, ``names()`` behind the module's ``available_*()``, and lookups validated against the live
registry with the same did-you-mean error (:class:`UnknownNameError`, a ``ValueError``).

Example:
    >>> colors = Registry("color")
    >>> @colors.register("red")
    ... def red():
    ...     return "#f00"
    >>> _ = colors.register("green", lambda: "#0f0")
    >>> colors.names(), colors.get("red")()
    (['green', 'red'], '#f00')
    >>> try:
    ...     colors.get("rde")
    ... except UnknownNameError as exc:
    ...     print(exc)
    unknown color 'rde'; did you mean 'red'? valid: green, red
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")


class UnknownNameError(ValueError):
    """A name that no registry entry (or no valid key) carries; the message suggests the closest ones."""


def did_you_mean(name: object, valid: Iterable[str], n: int = 3) -> str:
    """``" did you mean 'x'?"`` (or ``'x' or 'y'``) for the closest valid names, ``""`` when none is close.

    Example:
        >>> did_you_mean("mnistnte", ["resnet20", "mnistnet"])
        " did you mean 'mnistnet'?"
    """
    close = difflib.get_close_matches(str(name), list(valid), n=n, cutoff=0.6)
    if not close:
        return ""
    return " did you mean " + " or ".join(repr(c) for c in close) + "?"


def unknown_name(kind: str, name: object, valid: Iterable[str], field: str | None = None) -> UnknownNameError:
    """The one error for an unknown name: ``unknown <kind> 'x'; did you mean 'y'? valid: a, b, c`` (valid
    names sorted); with ``field``, ``<field>='x': unknown <kind>; ...`` names the argument.

    Example:
        >>> print(unknown_name("runtime", "onnxruntme", ["eager", "onnxruntime"], field="runtime"))
        runtime='onnxruntme': unknown runtime; did you mean 'onnxruntime'? valid: eager, onnxruntime
    """
    valid = sorted(valid)
    hint = did_you_mean(name, valid)
    head = f"{field}={name!r}: unknown {kind}" if field else f"unknown {kind} {name!r}"
    return UnknownNameError(f"{head};{hint} valid: {', '.join(valid)}")


class Registry(Generic[T]):
    """Named entries of one kind.

    Args:
        kind: what an entry is, as error messages say it (``"pruning strategy"``, ``"model"``).
        validate: called as ``validate(name, entry)`` before an entry is stored; raises to refuse it.
    """

    def __init__(self, kind: str, validate: Callable[[str, T], None] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._validate = validate

    @overload
    def register(self, name: str, entry: None = None, *, overwrite: bool = False) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, entry: T, *, overwrite: bool = False) -> T: ...

    def register(self, name: str, entry: T | None = None, *, overwrite: bool = False) -> Any:
        """Add ``entry`` under ``name`` and return it; without ``entry``, a decorator that does so.

        Raises:
            ValueError: an empty name, or a name already taken without ``overwrite=True``.
        """
        if entry is None:
            return lambda obj: self.register(name, obj, overwrite=overwrite)
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{self.kind} name {name!r}: must be a non-empty string")
        if name in self._entries and not overwrite:
            raise ValueError(f"{self.kind} {name!r} is already registered; pass overwrite=True to replace it")
        if self._validate is not None:
            self._validate(name, entry)
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (an unknown name raises :class:`UnknownNameError`)."""
        self.get(name)
        del self._entries[name]

    def get(self, name: str, field: str | None = None) -> T:
        """The entry of ``name``; :class:`UnknownNameError` with a did-you-mean otherwise (naming the
        argument ``field`` when given)."""
        if not isinstance(name, str) or name not in self._entries:
            raise unknown_name(self.kind, name, self.names(), field)
        return self._entries[name]

    def check(self, name: str, field: str | None = None) -> str:
        """``name`` itself when registered; :class:`UnknownNameError` otherwise."""
        self.get(name, field)
        return name

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def ordered(self) -> list[str]:
        """Registered names in registration order."""
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """``(name, entry)`` pairs, sorted by name."""
        return sorted(self._entries.items())

    @contextlib.contextmanager
    def scoped(self) -> Iterator[Registry[T]]:
        """Within the ``with`` block, registrations may change; at its end the registry is as before.

        Example:
            >>> shapes = Registry("shape")
            >>> with shapes.scoped():
            ...     _ = shapes.register("circle", 1)
            >>> shapes.names()
            []
        """
        saved = dict(self._entries)
        try:
            yield self
        finally:
            self._entries.clear()
            self._entries.update(saved)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"

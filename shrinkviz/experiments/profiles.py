"""Smoke vs full: the same code path with smaller numbers.

A notebook reads its profile from ``SHRINKVIZ_PROFILE`` (``smoke`` | ``full``, default ``full``) and
picks its sizes with :meth:`Profile.pick`, so both sets of numbers stand side by side in its
parameters cell.

Example:
    >>> p = Profile("smoke")
    >>> p.pick(smoke=[0], full=[0, 1, 2])
    [0]
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from shrinkviz.core.registry import did_you_mean

PROFILE_ENV = "SHRINKVIZ_PROFILE"
PROFILES = ("smoke", "full")
DEFAULT_PROFILE = "full"

T = TypeVar("T")


@dataclass(frozen=True)
class Profile:
    """A named profile; ``smoke`` runs tiny sizes (CI), ``full`` the real experiment."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in PROFILES:
            raise ValueError(
                f"profile {self.name!r} is unknown;{did_you_mean(self.name, PROFILES)} {PROFILE_ENV} must be "
                f"one of: {', '.join(PROFILES)}"
            )

    @property
    def smoke(self) -> bool:
        """True in the smoke profile."""
        return self.name == "smoke"

    def pick(self, *, smoke: T, full: T) -> T:
        """The value for this profile."""
        return smoke if self.smoke else full

    def __str__(self) -> str:
        return self.name


def profile(name: str | None = None) -> Profile:
    """The profile named, else ``$SHRINKVIZ_PROFILE``, else ``full``."""
    return Profile(name or os.environ.get(PROFILE_ENV, "").strip() or DEFAULT_PROFILE)


def describe(**sizes: Any) -> str:
    """One deterministic line naming the profile and the sizes a notebook uses (for checked cells)."""
    return f"profile={profile()} " + " ".join(f"{k}={v}" for k, v in sizes.items())


def store_path(notebook: str) -> Path:
    """The results folder of a notebook in the current profile: ``<cache>/results/<notebook>/<profile>``.

    Each notebook keeps its own store per profile, so smoke runs never mix with full ones and
    ``shrinkviz report --store <folder>`` reports exactly one notebook's experiment.
    """
    from shrinkviz.core.io import cache_root

    return cache_root() / "results" / notebook / profile().name

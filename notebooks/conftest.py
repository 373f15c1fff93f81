"""nbval switches for the curated notebooks (``pytest --nbval-lax notebooks/``).

1. Checked cells. Notebooks are committed without outputs, and nbval never compares a cell whose
   stored copy was not run, so a bare ``# NBVAL_CHECK_OUTPUT`` would check nothing. Each marked cell
   therefore carries its expected output in its metadata (``shrinkviz.expected_output``), and this
   conftest installs it as the reference nbval compares the kernel's output with.
2. The profile. Under CI the notebooks must run in the smoke profile; a run with another profile
   stops at once instead of spending an hour on the full one. The checked profile cell of every
   notebook prints the profile in use, so the switch is also proven cell by cell.
"""

from __future__ import annotations

import os

import nbformat
import pytest

CHECK_MARK = "NBVAL_CHECK_OUTPUT"


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("CI") and os.environ.get("SHRINKVIZ_PROFILE") != "smoke":
        raise pytest.UsageError(
            "under CI the notebooks run with SHRINKVIZ_PROFILE=smoke "
            f"(got {os.environ.get('SHRINKVIZ_PROFILE')!r})"
        )


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    for item in items:
        cell = getattr(item, "cell", None)
        if cell is None or CHECK_MARK not in cell.get("source", ""):
            continue
        expected = cell.get("metadata", {}).get("shrinkviz", {}).get("expected_output")
        if expected is None:
            raise pytest.UsageError(
                f"{item.nodeid}: a {CHECK_MARK} cell needs its expected output in the "
                "cell metadata as shrinkviz.expected_output"
            )
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=expected)]
        cell.execution_count = 1

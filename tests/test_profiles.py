"""The smoke/full switch of the notebooks: full when unset, smoke when asked, nothing else accepted."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shrinkviz.experiments.profiles import Profile, describe, profile


def test_full_is_the_default(monkeypatch):
    monkeypatch.delenv("SHRINKVIZ_PROFILE", raising=False)
    assert profile().name == "full" and profile().pick(smoke=1, full=3) == 3


def test_smoke_when_asked(monkeypatch):
    monkeypatch.setenv("SHRINKVIZ_PROFILE", "smoke")
    assert profile().smoke and profile().pick(smoke=[0], full=[0, 1, 2]) == [0]
    assert describe(seeds=[0], epochs=1) == "profile=smoke seeds=[0] epochs=1"


def test_unknown_profile_is_rejected(monkeypatch):
    monkeypatch.setenv("SHRINKVIZ_PROFILE", "quick")
    with pytest.raises(ValueError, match="SHRINKVIZ_PROFILE must be one of: smoke, full"):
        profile()
    with pytest.raises(ValueError):
        Profile("medium")


def test_a_kernel_inherits_the_switch():
    """Notebook kernels are child processes: they see the variable the test command sets."""
    code = "import shrinkviz as sv; print(sv.profile())"
    env = {"SHRINKVIZ_PROFILE": "smoke", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "smoke"


def test_each_notebook_has_its_own_store_per_profile(monkeypatch, tmp_path):
    from shrinkviz.experiments.profiles import store_path

    monkeypatch.setenv("SHRINKVIZ_CACHE", str(tmp_path))
    monkeypatch.setenv("SHRINKVIZ_PROFILE", "smoke")
    assert store_path("02_x") == tmp_path / "results" / "02_x" / "smoke"
    monkeypatch.delenv("SHRINKVIZ_PROFILE")
    assert store_path("02_x") == tmp_path / "results" / "02_x" / "full"

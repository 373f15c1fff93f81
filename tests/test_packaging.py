"""environment.yml and pyproject.toml must list the same requirements; torch is pinned everywhere."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _pyproject_deps() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def _environment_pip() -> list[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1
    return [line for line in pip_sections[0] if not line.startswith(("-c ", "-e "))]


def test_environment_yml_lists_exactly_the_pyproject_requirements():
    assert sorted(_environment_pip()) == sorted(_pyproject_deps())


def test_environment_yml_installs_the_package_with_the_constraints():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-c constraints.txt" in pip and "-e ." in pip
    assert "python=3.11" in env["dependencies"]


def test_torch_is_pinned_to_2_13_in_every_install_path():
    assert "torch==2.13.*" in _pyproject_deps()
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text().split()
    assert "-c constraints.txt" in (ROOT / "scripts" / "setup.sh").read_text()


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "bash scripts/setup.sh && bash scripts/test.sh"
    assert command in readme and command in ci


def test_core_import_does_not_import_torchvision():
    import subprocess
    import sys

    code = "import sys, shrinkviz, shrinkviz.data, shrinkviz.models, shrinkviz.loop.train; print('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

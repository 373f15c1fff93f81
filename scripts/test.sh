#!/usr/bin/env bash
# The test command of the README: lint and format check, unit and integration tests, every docstring
# example of the package (doctests; a run of their own, since collecting tests/ as modules would clash the
# conftest files), then every notebook top to bottom in the smoke profile under nbval.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LINTED=(shrinkviz tests benchmarks notebooks/conftest.py)
$PY -m ruff check "${LINTED[@]}"
$PY -m ruff format --check "${LINTED[@]}"
$PY -m pytest -q -p no:cacheprovider tests
$PY -m pytest -q -p no:cacheprovider --doctest-modules shrinkviz
if compgen -G "notebooks/*.ipynb" >/dev/null; then
  SHRINKVIZ_PROFILE=smoke $PY -m pytest -q -p no:cacheprovider --nbval-lax notebooks/
fi

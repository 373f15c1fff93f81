#!/usr/bin/env bash
# The test command of the README: unit and integration tests, then every notebook top to bottom
# in the smoke profile under nbval.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -m pytest -q -p no:cacheprovider tests
if compgen -G "notebooks/*.ipynb" >/dev/null; then
  SHRINKVIZ_PROFILE=smoke $PY -m pytest -q -p no:cacheprovider --nbval-lax notebooks/
fi

#!/usr/bin/env bash
# Sets up everything shrinkviz needs on a fresh Debian-like machine with Python 3.11 (idempotent):
# the Fashion-MNIST system package and Chromium via apt when apt exists, then the project and its
# pinned requirements via pip. torch is pinned to the 2.13 CPU build through constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1; then
  need=()
  [ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
  [ -x /usr/bin/chromium ] || need+=(chromium)
  command -v gcc >/dev/null 2>&1 || need+=(gcc)   # builds the sparse runtime's C kernels
  if [ ${#need[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

PY=${PYTHON:-python3}
# torch first, alone and pinned: it resolves to the local CPU wheel where one is provided.
$PY -m pip install -q --disable-pip-version-check -c constraints.txt "torch==2.13.*"
$PY -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[torchvision,timm,browser,dev]"
# Build (or reuse) the sparse runtime's kernels now rather than at first use; never fatal: without a
# compiler the runtime reports itself unavailable and everything else works.
$PY -c "import shrinkviz.sparse as s; print('shrinkviz.sparse:', s.availability()[1])" || true

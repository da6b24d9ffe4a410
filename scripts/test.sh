#!/usr/bin/env bash
# The test command: the library's tests and every claim on Fashion-MNIST at the smoke budget.
# A claim passes when its verdict is the one expected/ records. Extra arguments go to pytest.
# --maxschedchunk 1: each worker takes the next item when it is free, so the claims (collected longest first,
# claims/durations.json) start first on both workers; by default xdist hands each worker a block of consecutive items.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${ADVCLAIMS_VENV:-.venv}"
exec "$VENV/bin/python" -m pytest tests claims -m "unit or fashion_mnist" --repro-budget smoke -n 2 --maxschedchunk 1 --repro-quiet "$@"

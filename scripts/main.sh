#!/usr/bin/env bash
# The main job: every claim on Fashion-MNIST at the smoke budget, with a report.
# Usage: scripts/main.sh [REPORT_DIR] [pytest args...]   (default REPORT_DIR: reports/latest)
# --maxschedchunk 1: each worker takes the next instance when it is free (instances are collected longest first).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${ADVCLAIMS_VENV:-.venv}"
REPORT="${1:-reports/latest}"; shift || true
"$VENV/bin/python" -m pytest claims -m fashion_mnist --repro-budget smoke -n 2 --maxschedchunk 1 --repro-report "$REPORT" "$@" \
  && status=0 || status=$?
echo "report: $REPORT/report.md (figures in $REPORT/figures)"
exit $status

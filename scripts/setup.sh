#!/usr/bin/env bash
# Everything a fresh machine needs: the Fashion-MNIST package, a virtual environment, the package.
# Idempotent and quick when nothing changed (a stamp records what was installed).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${ADVCLAIMS_VENV:-.venv}"

if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "setup: installing Debian's dataset-fashion-mnist" >&2
    $SUDO apt-get install -y dataset-fashion-mnist >/dev/null 2>&1 \
      || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y dataset-fashion-mnist >/dev/null; } \
      || echo "setup: could not install dataset-fashion-mnist; Fashion-MNIST claims will skip with instructions" >&2
  else
    echo "setup: no apt-get; put Fashion-MNIST under \$ADVCLAIMS_DATA/FashionMNIST/raw" >&2
  fi
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
stamp="$VENV/.advclaims-installed"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing advclaims and its dependencies into $VENV (torch from the registry: a few minutes)" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]"
  echo "$want" > "$stamp"
fi

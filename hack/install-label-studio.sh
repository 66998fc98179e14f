#!/usr/bin/env bash
# Label Studio for the review tests: a real server (`label-studio start` on
# loopback with SQLite) in a virtualenv of its own under .cache/, because its
# pinned dependencies clash with the project's. The SDK lives there too; the
# operator itself talks plain HTTP. A stamp file makes a second run do nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
LS_VERSION=1.23.2
VENV=.cache/label-studio-venv
STAMP="$VENV/.installed-$LS_VERSION"
PYTHON=${PYTHON:-python3}
if [[ -f "$STAMP" ]]; then
  exit 0
fi
echo "Installing label-studio $LS_VERSION into $VENV"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "label-studio==$LS_VERSION"
touch "$STAMP"

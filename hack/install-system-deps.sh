#!/usr/bin/env bash
# Debian packages the test suite uses as real peers: etcd for the control
# plane and openssl for its keys. Installs only what is missing, so a second
# run does nothing.
set -euo pipefail
declare -A wanted=(
  [etcd]=etcd-server
  [openssl]=openssl
)
missing=()
for cmd in "${!wanted[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${wanted[$cmd]}")
done
if ((${#missing[@]})); then
  echo "Installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

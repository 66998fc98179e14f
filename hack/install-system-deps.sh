#!/usr/bin/env bash
# Debian packages the test suite uses as real peers: etcd for the control
# plane, openssl for its keys, lua5.4 to run the Argo CD health check,
# prometheus to scrape the operator's and a trainer's /metrics, chromium to
# open the HTML reports, strace to prove the bad-data runs write nothing
# outside their output folders, tmux to drive `sftctl review` as a person
# does. Installs only what is missing, so a second run does nothing.
set -euo pipefail
declare -A wanted=(
  [etcd]=etcd-server
  [openssl]=openssl
  [lua5.4]=lua5.4
  [prometheus]=prometheus
  [chromium]=chromium
  [strace]=strace
  [tmux]=tmux
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

#!/usr/bin/env bash
# Everything issue #14 wants from a GPU, in one command that fits a short lease (docs/gpu.md):
# gpu tests, then 1B LoRA/full vs TRL, then 8B LoRA, each under its own time cap.
#
#   bash benchmarks/gpu_check.sh              # on the GPU machine (figures into $OUT, else benchmarks/results/gpu)
#   bash benchmarks/gpu_check.sh --dry-run    # here, on the CPU, tiny sizes: every stage end to end
#   options: --out DIR  --budget SECONDS
#
# The only install is the carried wheels (`make gpu-wheels` puts them in .cache/wheels), and only
# those the machine lacks or has older, into a temporary folder in front of PYTHONPATH: the
# machine's torch and CUDA stack are never touched. The sources run from the checkout as it is.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
site=$(mktemp -d /tmp/gpu-check-site.XXXXXX)
trap 'rm -rf "$site"' EXIT

mapfile -t wheels < <("$PYTHON" benchmarks/gpu_check.py wheels-to-install)
if ((${#wheels[@]})); then
  echo "[gpu_check] installing ${#wheels[@]} carried wheel(s) into $site: ${wheels[*]##*/}"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "${wheels[@]}"
fi
export PYTHONPATH="$site:$PWD/trainer_image:$PWD/operator${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

"$PYTHON" benchmarks/gpu_check.py run "$@"

#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the CPU demo: SFT of a tiny Qwen3 tool caller on Megatron at TP=2.
# Extra arguments go to the demo (see `python -m rest_megatron.demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::UserWarning}
NPROC=${NPROC:-2}
exec .venv/bin/torchrun --standalone --nproc-per-node "$NPROC" -m rest_megatron.demo "$@"

#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the CPU demo: the tiny ResT recipe end to end — SFT warm start,
# ResT RL with rollouts from the embedded engine and real tool calls in the sandbox, checkpoints and a
# Hugging Face export, all under runs/. Extra arguments are recipe overrides (key=value).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::UserWarning}
RECIPE=${RECIPE:-recipes/tiny-cpu.yaml}
exec .venv/bin/rest-megatron train "$RECIPE" "$@"

#!/usr/bin/env bash
# Prove the GPU path on one GPU in a few minutes: bf16 on Transformer Engine, NCCL, an SGLang server
# started by the trainer, SFT, two packed RL steps, weight sync, checkpoint, resume, HF export (see
# rest_megatron/testing/gpu_smoke.py). Prints PASS/FAIL per stage; exits 1 at the first failed stage,
# 2 at once without a GPU. Needs the gpu extra: EXTRAS=dev,gpu bash scripts/setup.sh (once).
# PYTHON picks the interpreter (default .venv/bin/python); arguments go to the check (--help).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::UserWarning}
exec "${PYTHON:-.venv/bin/python}" -m rest_megatron.testing.gpu_smoke "$@"

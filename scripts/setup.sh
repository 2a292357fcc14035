#!/usr/bin/env bash
# Idempotent setup: a venv at .venv with rest-megatron installed in editable mode, plus the Debian
# packages the sandbox and the local Slurm tests use. Safe to run repeatedly; a stamp file skips the
# pip step when pyproject.toml has not changed.
#
# Knobs:
#   PYTHON       interpreter for the venv            (default: python3.11, else python3)
#   TORCH_SPEC   torch requirement installed first   (default: torch==2.13.0, the CPU build on this
#                disk; on a GPU cluster set it to the CUDA build you want, or "" to keep the venv's)
#   EXTRAS       pip extras                          (default: dev)
#   BFCL_SPEC    bfcl-eval, installed WITHOUT its dependency tree: the sandbox only runs the BFCL
#                multi-turn environments' pure-Python sources (default: bfcl-eval==2026.3.23; "" skips)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
TORCH_SPEC=${TORCH_SPEC-torch==2.13.0}
EXTRAS=${EXTRAS:-dev}
BFCL_SPEC=${BFCL_SPEC-bfcl-eval==2026.3.23}
DEBIAN_PACKAGES=${DEBIAN_PACKAGES:-bubblewrap}

log() { echo "[setup $(date +%H:%M:%S)] $*" >&2; }
# pip -q still warns about every index location in the machine's pip config that does not exist;
# drop those lines and keep everything else (errors included).
pip_install() {
  .venv/bin/pip install -q "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for pkg in $DEBIAN_PACKAGES; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi

stamp=.venv/.rest-megatron-stamp
want="$(sha256sum pyproject.toml | cut -c1-16) $TORCH_SPEC $EXTRAS $BFCL_SPEC"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # torch first and alone: installing the project with no torch present would let pip resolve
  # `torch>=2.6` to a multi-GB CUDA build.
  if [ -n "$TORCH_SPEC" ]; then
    log "pip install $TORCH_SPEC"
    pip_install "$TORCH_SPEC"
  fi
  log "pip install -e .[$EXTRAS]"
  pip_install -e ".[$EXTRAS]"
  if [ -n "$BFCL_SPEC" ]; then
    log "pip install --no-deps $BFCL_SPEC"
    pip_install --no-deps "$BFCL_SPEC"
  fi
  echo "$want" > "$stamp"
fi
log "ready: $(.venv/bin/python -c 'import torch, megatron.core as m; print(f"torch {torch.__version__}, megatron-core {m.__version__}")' 2>/dev/null)"

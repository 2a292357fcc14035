#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole suite: ruff (format and lint), then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
echo "[test $(date +%H:%M:%S)] ruff format --check, ruff check"
.venv/bin/ruff format --check .
.venv/bin/ruff check .
echo "[test $(date +%H:%M:%S)] pytest"
status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" = 5 ]; then
  echo "pytest collected no tests: that is a failure here, not a pass." >&2
fi
exit "$status"

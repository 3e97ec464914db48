#!/usr/bin/env bash
# Sets everything up, then runs the demo on generated data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# rayon and torch alternate (never run at once), so each may use both cores.
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-2}
.venv/bin/jtm-rs demo "$@"

#!/usr/bin/env bash
# Sets everything up, then runs the demo on generated data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-2} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
.venv/bin/python -m jtm_rs.demo "$@"

#!/usr/bin/env bash
# Creates .venv, installs the Python dependencies and builds the extension into it.
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "setup: cargo not found; install the Rust toolchain (rustup)" >&2; exit 1; }
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate

# torch: a local CPU build is taken where pip's find-links offer one; otherwise PyPI's build
# (large, runs on CPU). TORCH_SPEC overrides the pin.
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
python -m pip install -q "maturin>=1.9,<2" "numpy>=1.24" "tqdm>=4.60" "pytest>=8" "hypothesis>=6" "scipy>=1.10" "pyarrow>=14" "matplotlib>=3.7"
python -c "import torch" 2>/dev/null || python -m pip install -q "$TORCH_SPEC" || python -m pip install -q torch

maturin develop --release -q
python -c "import jtm_rs, torch; print(f'jtm_rs {jtm_rs.__version__} built; torch {torch.__version__}')"

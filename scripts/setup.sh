#!/usr/bin/env bash
# Creates .venv, installs the Python dependencies and builds the extension into it.
# Idempotent: a second run only rebuilds what changed. Quiet: pip's and maturin's output goes
# to .venv/setup.log, shown only when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "setup: cargo not found; install the Rust toolchain (rustup)" >&2; exit 1; }
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
LOG=.venv/setup.log
: > "$LOG"
step() {  # step "what" command...: runs quietly, shows the log if it fails
    local what=$1; shift
    if ! "$@" >>"$LOG" 2>&1; then
        echo "setup: $what failed; its output:" >&2
        tail -n 60 "$LOG" >&2
        exit 1
    fi
}

# One torch requirement, pyproject.toml's; a local CPU build is taken where pip's find-links
# offer one, otherwise PyPI's build (large, runs on CPU). TORCH_SPEC overrides it.
TORCH_SPEC=${TORCH_SPEC:-$(grep -o '"torch[^"]*"' pyproject.toml | tr -d '"')}
# The optional extras too: faiss-cpu is [faiss] (HNSW search for the two-tower rows); starlette,
# uvicorn (with uvloop and httptools), orjson and prometheus_client are [serve] (jtm-rs serve).
step "installing the Python dependencies" python -m pip install "maturin>=1.9,<2" "numpy>=1.24" "tqdm>=4.60" \
    "pytest>=8" "hypothesis>=6" "scipy>=1.10" "pyarrow>=14" "matplotlib>=3.7" "packaging>=23" \
    "faiss-cpu>=1.8" "starlette>=0.40" "uvicorn[standard]>=0.30" "orjson>=3.9" "prometheus_client>=0.20"
if ! python -c "import torch" 2>/dev/null; then
    # PyPI's build needs about 5 GB; one wheel at a time, temporary files beside .venv (see the script).
    free_gb=$(df -Pk .venv | awk 'NR==2 {print int($4 / 1048576)}')
    [ "$free_gb" -ge 6 ] || echo "setup: only ${free_gb} GB free beside .venv; PyPI's torch needs about 5 GB" >&2
    mkdir -p .venv/tmp
    TMPDIR=$PWD/.venv/tmp step "installing $TORCH_SPEC" python scripts/install_torch.py "$TORCH_SPEC"
    rm -rf .venv/tmp
fi

step "building the Rust extension (maturin develop --release)" maturin develop --release
python -c "import jtm_rs, torch; print(f'setup: jtm_rs {jtm_rs.__version__} built; torch {torch.__version__} (log: .venv/setup.log)')"

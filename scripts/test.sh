#!/usr/bin/env bash
# Sets everything up, then runs every test: cargo test (the Rust core) and pytest (the package).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Two cores: keep rayon and torch from oversubscribing them.
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-2} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# Formatting, where the toolchain has rustfmt (a rustup component some machines lack).
if cargo fmt --version >/dev/null 2>&1; then cargo fmt --check; fi
cargo test --release
.venv/bin/python -m pytest tests

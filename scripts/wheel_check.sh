#!/usr/bin/env bash
# The path a user installs: builds the abi3 wheel (maturin build --release), installs it with
# the [serve] extra into a new virtual environment, and, from a directory outside the source
# tree, trains a small model with the installed `jtm-rs` and serves it: /ready and one
# /recommend must answer. Run by .ci/run after the tests (scripts/setup.sh first).
#
# torch alone is not installed afresh: PyPI's build is ~5 GB with its CUDA libraries, so the
# new environment sees .venv's torch (and only what torch itself requires) through a .pth
# file. Everything else -- the wheel, its dependencies, the extra -- pip resolves from the
# wheel's own metadata into the new environment.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/.venv-wheel
rm -rf "$WORK"
mkdir -p "$WORK/dist"
LOG=$WORK/log.txt
step() {  # step "what" command...: quiet unless it fails
    local what=$1; shift
    if ! "$@" >>"$LOG" 2>&1; then
        echo "wheel check: $what failed; its output:" >&2
        tail -n 60 "$LOG" >&2
        exit 1
    fi
}

step "maturin build --release" .venv/bin/maturin build --release --out "$WORK/dist"
WHEEL=$(ls "$WORK"/dist/jtm_rs-*.whl)
case "$WHEEL" in *abi3*) ;; *) echo "wheel check: $WHEEL is not an abi3 wheel" >&2; exit 1 ;; esac

PY=${PYTHON:-python3}
step "creating the environment" "$PY" -m venv "$WORK/env"
step "making .venv's torch visible" .venv/bin/python scripts/share_package.py torch "$WORK/torch-only" \
    "$("$WORK/env/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
step "pip install the wheel with [serve]" "$WORK/env/bin/python" -m pip install "$WHEEL[serve]"

# Outside the source tree, so only the installed package can be imported.
RUN=$(mktemp -d)
trap 'kill "${SERVER:-}" 2>/dev/null || true; rm -rf "$RUN"' EXIT
cd "$RUN"
BIN=$WORK/env/bin
"$BIN/python" -c "import jtm_rs, os; assert 'site-packages' in jtm_rs.__file__, jtm_rs.__file__"
step "jtm-rs generate" "$BIN/jtm-rs" generate data.csv --items 512 --users 600
step "jtm-rs train" "$BIN/jtm-rs" train data.csv --out run --iterations 0 --examples-per-epoch 2000 --quiet
PORT=$("$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN/jtm-rs" serve run --port "$PORT" >>"$LOG" 2>&1 &
SERVER=$!
"$BIN/python" - "$PORT" <<'EOF'
import json, sys, time, urllib.request

base = f"http://127.0.0.1:{sys.argv[1]}"
for _ in range(300):
    try:
        ready = json.load(urllib.request.urlopen(base + "/ready", timeout=5))
        break
    except OSError:
        time.sleep(0.2)
else:
    sys.exit("wheel check: the installed server did not come up")
req = urllib.request.Request(base + "/recommend", data=json.dumps({"history": [1, 2, 3], "m": 5}).encode(),
                             headers={"Content-Type": "application/json"})
answer = json.load(urllib.request.urlopen(req, timeout=30))
assert len(answer["items"]) == 5 and answer["model"] == ready["model"], answer
print(f"wheel check: the installed wheel served model {ready['model']} ({ready['items']} items): {answer['items']}")
EOF

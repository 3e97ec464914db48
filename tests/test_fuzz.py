"""The hypothesis fuzz suite of the native entry points (``tests/fuzz_native.py``), run in a child
process so that an abort or a hang is seen as a failure with its case, not as a dead test session.

``JTM_FUZZ_EXAMPLES`` sets the cases per entry point (default 100, about a minute on 2
cores); ``JTM_FUZZ_SEED`` the hypothesis seed (default 0, or ``random``).
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.skipif(sys.platform == "win32", reason="uses RLIMIT_AS and signals")
def test_native_entry_points_survive_fuzzing(tmp_path):
    log = tmp_path / "cases.log"
    cmd = [
        sys.executable, str(HERE / "fuzz_native.py"),
        "--examples", os.environ.get("JTM_FUZZ_EXAMPLES", "100"),
        "--seed", os.environ.get("JTM_FUZZ_SEED", "0"),
        "--log", str(log),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                              env={**os.environ, "RUST_BACKTRACE": "0"})
    except subprocess.TimeoutExpired:
        last = log.read_text().splitlines()[-1:] if log.exists() else []
        pytest.fail(f"the fuzz suite hung; last case: {last}")
    last = log.read_text().splitlines()[-3:] if log.exists() else []
    how = f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0 else f"exit {proc.returncode}"
    assert proc.returncode == 0, (
        f"fuzz_native {how}\nlast cases:\n" + "\n".join(last) + f"\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    )
    assert "known cases: passed" in proc.stdout and proc.stdout.count("cases passed") == 6, proc.stdout

"""Every code block of the README runs: the Python blocks in order in one namespace, the
command-line blocks line by line through ``jtm_rs.cli.main``, and the set-up blocks are the
scripts CI runs (checked to say what the README says they do)."""

import re
import shlex
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.M | re.S)


def _lines(code: str):
    for line in code.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            yield words


def test_the_readme_has_the_blocks_it_should():
    kinds = [k for k, _ in BLOCKS]
    assert kinds.count("python") >= 2 and kinds.count("bash") >= 3
    first = BLOCKS[0][1]
    assert "bash scripts/demo.sh" in first and "bash scripts/test.sh" in first  # the two commands open it


def test_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for kind, code in BLOCKS:
        if kind == "python":
            exec(compile(code, "README.md", "exec"), namespace)


def test_command_line_blocks_run(tmp_path, monkeypatch):
    from jtm_rs import cli

    monkeypatch.chdir(tmp_path)
    ran = 0
    for kind, code in BLOCKS:
        for words in _lines(code) if kind == "bash" else []:
            if words[0] == "jtm-rs":
                assert cli.main(words[1:] + ["--device", "cpu"] * (words[1] in ("train", "evaluate", "recommend"))) == 0, words
                ran += 1
    assert ran >= 4


def test_set_up_blocks_are_the_scripts_ci_runs():
    """``bash scripts/*.sh`` lines name scripts that exist (CI runs test.sh and demo.sh
    itself); the install line is what setup.sh does."""
    ci = (ROOT / ".ci" / "run").read_text()
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    for kind, code in BLOCKS:
        for words in _lines(code) if kind == "bash" else []:
            if words[0] == "bash":
                assert (ROOT / words[1]).exists() and f"bash {words[1]}" in ci, words
            elif words[0] == "pip":
                assert "maturin develop --release" in " ".join(words) and "maturin develop --release" in setup
            else:
                assert words[0] == "jtm-rs", f"a README command no test runs: {words}"

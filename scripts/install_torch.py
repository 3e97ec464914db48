"""Installs torch and what it requires one distribution at a time, without pip's cache.

PyPI's Linux build of torch brings about 4 GB of CUDA wheels. One `pip install torch` holds
every downloaded wheel in its temporary folder, and a second copy in pip's cache, until the
last one is installed: at its peak about twice the installed size, which has filled a CI
machine's disk. Installing each distribution alone (`--no-deps`), depth first, keeps the peak
at the installed size plus one wheel.

A local CPU build of torch (from pip's find-links) requires no CUDA wheels, so this works the
same either way. Nothing is left out: `maturin develop` then finds torch's requirements met.

Usage: python scripts/install_torch.py "torch>=2.1,<=2.13.0"
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def _installed_version(name: str) -> str | None:
    try:
        return distribution(name).version
    except PackageNotFoundError:
        return None


def _pip_install(requirement: Requirement) -> None:
    extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
    spec = f"{requirement.name}{extras}{requirement.specifier}"
    print(f"install_torch: {spec}", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--no-deps", spec],
        check=True,
    )


def _applies(requirement: Requirement, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    environments = [{"extra": extra} for extra in sorted(extras)] or [{"extra": ""}]
    return any(requirement.marker.evaluate(environment) for environment in environments)


def install(requirement: Requirement, seen: set[tuple[str, frozenset[str]]]) -> None:
    """Installs `requirement` unless a satisfying version is present, then what it requires."""
    version = _installed_version(requirement.name)
    if version is None or not requirement.specifier.contains(version, prereleases=True):
        _pip_install(requirement)
    for line in distribution(requirement.name).requires or []:
        child = Requirement(line)
        key = (canonicalize_name(child.name), frozenset(child.extras))
        if key in seen or not _applies(child, requirement.extras):
            continue
        seen.add(key)
        child.marker = None
        install(child, seen)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    install(Requirement(argv[0]), set())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

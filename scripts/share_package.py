"""Makes one installed distribution of this environment, and what it requires, importable from
another environment without installing it again: ``python share_package.py NAME DIR SITE``
links the top-level files of NAME and of its requirements (recursively, markers evaluated,
extras left out) into DIR and writes ``SITE/shared-NAME.pth`` naming DIR. pip in the other
environment then sees those distributions as installed (their ``.dist-info`` are linked too).

Used by scripts/wheel_check.sh to give a new environment .venv's torch (~5 GB from PyPI).
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def closure(name: str) -> list:
    """The distribution ``name`` and every one it requires here, each once."""
    seen, todo, out = set(), [name], []
    while todo:
        key = canonicalize_name(todo.pop())
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(key)
        except metadata.PackageNotFoundError:
            continue  # an optional requirement this environment does not have
        out.append(dist)
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return out


def top_level(dist) -> set:
    """The entries of site-packages that ``dist`` installed (packages, modules, its
    ``.dist-info``); files outside site-packages (scripts in ``bin/``) are left out."""
    names = set()
    for f in dist.files or []:
        parts = Path(f).parts
        if parts and parts[0] != "..":
            names.add(parts[0])
    return names


def main() -> None:
    name, target, site = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    target.mkdir(parents=True, exist_ok=True)
    linked = 0
    for dist in closure(name):
        base = Path(dist.locate_file(""))
        for entry in sorted(top_level(dist)):
            src, dst = base / entry, target / entry
            if src.exists() and not dst.exists():
                dst.symlink_to(src)
                linked += 1
    (site / f"shared-{name}.pth").write_text(f"{target}\n")
    print(f"{name}: {linked} entries of {len(closure(name))} distributions linked into {target}")


if __name__ == "__main__":
    main()

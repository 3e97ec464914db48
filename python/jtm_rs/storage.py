"""Saving a set of files into a directory atomically, as a whole (every saved method uses it).

Every part is written under a token new to this save (``<kind>-<token><suffix>``), then
``manifest.json`` (the token, each part's size and SHA-256) replaces the old manifest in one
rename, and only then are the previous save's parts removed. A save killed at any moment leaves
the previous save loadable; two saves to one path never collide (the last manifest wins).
Other files in the directory (e.g. ``split.json``) stay. Reading checks every part against the
manifest and names the one that is missing, changed or damaged.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, Sequence, Tuple

from .exceptions import CorruptModelError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1

#: ``{kind: (suffix, write(path))}``: the parts of one save.
Parts = Dict[str, Tuple[str, Callable[[Path], None]]]


def write_parts(d: Path, parts: Parts) -> None:
    """Writes ``parts`` into the directory ``d`` (created if needed), then the manifest."""
    d.mkdir(parents=True, exist_ok=True)
    token = f"{time.time_ns():x}-{os.getpid():x}-{uuid.uuid4().hex[:8]}"
    names: Dict[str, str] = {}
    for kind, (suffix, write) in parts.items():
        names[kind] = f"{kind}-{token}{suffix}"
        write(d / names[kind])
        _fsync_file(d / names[kind])  # on disk before the manifest names it
    manifest = {
        "format_version": FORMAT_VERSION,
        "token": token,
        "parts": {k: {"file": v, "bytes": (d / v).stat().st_size, "sha256": sha256(d / v)} for k, v in names.items()},
    }
    previous = _read_manifest(d) if (d / MANIFEST).exists() else None
    tmp = d / f".{MANIFEST}.{token}.tmp"
    _write_synced(tmp, json.dumps(manifest, indent=1).encode())
    os.replace(tmp, d / MANIFEST)
    _fsync_dir(d)
    # The previous save's parts go last; so do leftovers of saves killed over an hour ago (a
    # live save is never that old).
    for name in [p["file"] for p in previous["parts"].values()] if previous else []:
        if name not in names.values():
            (d / name).unlink(missing_ok=True)
    cutoff = time.time() - 3600
    leftovers = list(d.glob(f".{MANIFEST}.*.tmp"))
    for kind in parts:
        leftovers += d.glob(f"{kind}-*")
    for p in leftovers:
        try:
            if p.name not in names.values() and p.stat().st_mtime < cutoff:
                p.unlink()
        except FileNotFoundError:  # another save cleaned it first
            pass


def has_save(d: Path) -> bool:
    return (d / MANIFEST).exists()


def read_parts(d: Path, required: Sequence[str]) -> Dict[str, Path]:
    """The files of the save in ``d``, each checked against the manifest (size, then
    SHA-256): a part that is missing or does not belong to the manifest's save is named."""
    if not has_save(d):
        raise FileNotFoundError(f"{d} holds no saved model (no {MANIFEST})")
    files: Dict[str, Path] = {}
    for kind, entry in _read_manifest(d)["parts"].items():
        p = d / entry["file"]
        if not p.exists():
            raise CorruptModelError(f"{d}: the {kind} part {entry['file']} named by {MANIFEST} is missing")
        if p.stat().st_size != entry["bytes"] or sha256(p) != entry["sha256"]:
            raise CorruptModelError(f"{d}: the {kind} part {entry['file']} does not match {MANIFEST} (changed or damaged)")
        files[kind] = p
    for kind in required:
        if kind not in files:
            raise CorruptModelError(f"{d}: {MANIFEST} names no {kind} part")
    return files


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptModelError(f"{path}: unreadable JSON ({e}); the save was interrupted or the file damaged") from None


def fingerprint(d: Path) -> str:
    """The first 16 hex digits of the SHA-256 of the save's manifest: each save its own."""
    return hashlib.sha256((Path(d) / MANIFEST).read_bytes()).hexdigest()[:16]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # not every platform opens directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_manifest(d: Path) -> dict:
    manifest = read_json(d / MANIFEST)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("parts"), dict):
        raise CorruptModelError(f"{d / MANIFEST}: not a jtm_rs manifest")
    return manifest

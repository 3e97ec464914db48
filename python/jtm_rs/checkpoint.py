"""A fitted JTM on disk, and the checkpoints a resumable :meth:`JTM.fit` writes.

A save is a directory of parts under one manifest (:mod:`jtm_rs.storage`): ``config``
(:class:`JTMConfig` as JSON), ``tree`` (the Rust core's tree format), ``model`` (a torch
state dict), ``history`` (the rounds' records), ``item_ids`` (the map back to the data's item
ids, when there is one), ``retired`` (items an update retired, when any) and, in a checkpoint of ``fit``, ``training``: what a resumed run needs
beyond the model (optimiser moments, random state, the round reached and a fingerprint of the
data). Nothing is unpickled: the state dicts are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from ._core import Tree
from .config import IterationRecord, JTMConfig
from .exceptions import CorruptModelError, InvalidInputError
from .ids import IdMap
from .lifecycle.retired import RetiredItems
from .storage import FORMAT_VERSION, Parts, has_save, read_json, read_parts, write_parts


@dataclass
class SavedJTM:
    """What a save holds, read back and checked (the model as a state dict)."""

    config: JTMConfig
    model_class: str
    tree: Tree
    model_state: Dict[str, torch.Tensor]
    history: List[IterationRecord]
    item_ids: Optional[IdMap]
    #: A checkpoint's training state (None in a plain save).
    training: Optional[dict]
    #: Items an update retired from the tree, still features (none in a save without).
    retired: RetiredItems = dataclasses.field(default_factory=RetiredItems)


def save_jtm(path: Path, config: JTMConfig, tree: Tree, model: torch.nn.Module, history: List[IterationRecord],
             item_ids: Optional[IdMap], training: Optional[dict] = None,
             retired: Optional[RetiredItems] = None) -> None:
    meta = {
        "format_version": FORMAT_VERSION,
        "config": dataclasses.asdict(config),
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
    }
    records = json.dumps([dataclasses.asdict(r) for r in history], indent=1).encode()
    parts: Parts = {
        "config": (".json", lambda p: p.write_bytes(json.dumps(meta, indent=1).encode())),
        "tree": (".jtm", tree.save),
        "model": (".pt", lambda p: torch.save(model.state_dict(), p)),
        "history": (".json", lambda p: p.write_bytes(records)),
    }
    if item_ids is not None:
        parts["item_ids"] = (".npz", item_ids.save)
    if training is not None:
        parts["training"] = (".pt", lambda p: torch.save(training, p))
    if retired is not None and len(retired):
        parts["retired"] = (".npz", retired.save)
    write_parts(path, parts)


def has_checkpoint(path: Path) -> bool:
    return has_save(path)


def read_jtm(path: Path, device: torch.device) -> SavedJTM:
    files = read_parts(path, required=("config", "tree", "model"))
    meta = read_json(files["config"])
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise InvalidInputError(f"{path}: unknown format version {version}")
    fields = {f.name for f in dataclasses.fields(JTMConfig)}
    try:
        config = JTMConfig(**{k: v for k, v in meta["config"].items() if k in fields})
    except (KeyError, AttributeError, TypeError, InvalidInputError) as e:
        raise CorruptModelError(f"{files['config']}: not a JTM configuration ({e})") from None
    tree = Tree.load(files["tree"])
    state = torch.load(files["model"], map_location=device, weights_only=True)
    history: List[IterationRecord] = []
    if "history" in files:
        try:
            history = [IterationRecord(**r) for r in read_json(files["history"])]
        except TypeError as e:
            raise CorruptModelError(f"{files['history']}: not a training history ({e})") from None
    item_ids = IdMap.load(files["item_ids"]) if "item_ids" in files else None
    training = None
    if "training" in files:
        try:
            training = torch.load(files["training"], map_location="cpu", weights_only=True)
            int(training["round"]), training["fingerprint"]
        except Exception as e:
            raise CorruptModelError(f"{files['training']}: not a training state ({e})") from None
    try:
        retired = RetiredItems.load(files["retired"]) if "retired" in files else RetiredItems()
    except (ValueError, KeyError, OSError, InvalidInputError) as e:
        raise CorruptModelError(f"{files['retired']}: not a list of retired items ({e})") from None
    return SavedJTM(config, meta.get("model_class", ""), tree, state, history, item_ids, training, retired)


def data_fingerprint(windows, tree: Tree) -> str:
    """SHA-256 of the training examples and the initial tree: a resumed run must see both again."""
    h = hashlib.sha256()
    for a in (windows.items, windows.pos, windows.row_start, tree.items, tree.leaves(tree.items)):
        # As int64 whatever the column's width (int32 item ids hash as before), a chunk at a time.
        for lo in range(0, len(a), FINGERPRINT_CHUNK):
            h.update(np.ascontiguousarray(a[lo : lo + FINGERPRINT_CHUNK], dtype=np.int64).tobytes())
    return h.hexdigest()


#: Ids converted at once by :func:`data_fingerprint` (32 MB as int64).
FINGERPRINT_CHUNK = 1 << 22


def check_resumable(path: Path, saved: SavedJTM, config: JTMConfig, fingerprint: str) -> int:
    """The round whose training the checkpoint in ``path`` holds, after checking that it is a
    checkpoint of a run with ``config`` on the same data."""
    if saved.training is None:
        raise InvalidInputError(f"{path}: a saved model, not a checkpoint of fit(): nothing to resume from")
    ours, theirs = dataclasses.asdict(config), dataclasses.asdict(saved.config)
    differ = sorted(k for k in ours if ours[k] != theirs.get(k))
    if differ:
        raise InvalidInputError(
            f"{path}: the checkpoint was made with another configuration ({', '.join(f'{k}={theirs.get(k)!r}' for k in differ)}; "
            f"this run has {', '.join(f'{k}={ours[k]!r}' for k in differ)})"
        )
    round_ = int(saved.training["round"])
    if saved.training["fingerprint"] != fingerprint:
        raise InvalidInputError(f"{path}: the checkpoint was trained on other data (or another initial tree) than this run's")
    if len(saved.history) != round_ + 1:
        raise CorruptModelError(f"{path}: the history has {len(saved.history)} rounds, the training state says {round_ + 1}")
    return round_


def training_state(round_: int, rng: np.random.Generator, fingerprint: str, optimizer) -> dict:
    """What a resumed ``fit`` needs beyond model, tree and history."""
    return {
        "round": round_,
        "fingerprint": fingerprint,
        "rng": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
        "optimizer": optimizer.state_dict(),
    }


def restore_training_state(path: Path, state: dict, rng: np.random.Generator, optimizer) -> None:
    try:
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        raise CorruptModelError(f"{path}: the training state does not fit this model ({e})") from None

"""A fitted JTM goes on with new behaviours and new items, without a fit from scratch.

One update, in order:

1. **Ids.** The new data's items are mapped onto the model's ids; items it has not seen get
   ids appended to its :class:`~jtm_rs.ids.IdMap` (:meth:`~jtm_rs.ids.IdMap.extend`), so the
   ids of known items never change. Data whose ids are of another kind, or which has no id map
   where the model has one (or the other way round), is refused before any work.
2. **Retired items** leave the tree (their leaves become free): they are never retrieved
   again, but stay features of users' histories through the leaf they last held
   (:class:`~.retired.RetiredItems`, saved with the model). Their rows are dropped from the
   data the update trains on.
3. **New items** go to free leaves near the known item they co-occur with most in users'
   sequences (:func:`~.placement.place_near`); the tree grows a level when it has too few free
   leaves. An item with no known neighbour yet (cold) goes next to the known item of its
   category with the most behaviours in the new data, where it has categories, else to a free
   leaf spread over the tree.
   A new leaf's node embedding starts as the row of the known item it co-occurs with most (else the
   mean of its siblings': :func:`~.placement.grow_node_table`).
4. **Tree learning** (``update_tree_learning_first``, the default: before training) places the
   new items by the eq. 2 weights of their own behaviours under the model:
   ``update_tree_learning="new"`` runs Algorithm 2 with every known item held in its subtree
   at the top of the last segment (a stay bonus far above any weight) and re-sorted within it
   beside the new items; ``"new-only"`` holds every known item at its leaf (a weight far above
   any other on its own place, in every segment) and scores only the new items, so its cost
   grows with them, not with the catalogue; ``"whole"`` lets every item move (known items
   without behaviours in the data stay); ``"none"`` skips it; ``"auto"`` (the default):
   ``"new"`` where the new paths train, ``"new-only"`` where the whole model does. An item
   that moved takes its leaf row along (:func:`~.node_table.follow_items`).
5. **Training** goes on from the current weights, for the places just learned, over every
   example of the new behaviours plus ``update_replay`` old examples per new one, drawn from
   ``replay`` (the old behaviours, when given), for ``update_epochs`` passes, with a fresh Adam
   at ``update_learning_rate``; a pass takes at most the fit's ``max_examples_per_epoch`` (the
   new examples first). What learns is ``update_training``: ``"new-paths"`` the node rows on
   the paths from the root to the leaves of the new behaviours' items (and the rows of levels
   the tree grew), the MLP and every other row held (:func:`~.node_table.only_rows`), so the
   new items are led to and scored while what the old items' scores rest on stays;
   ``"model"`` everything; ``"new-leaves"`` only the new items' leaf rows, at the leaf level;
   ``"auto"`` (the default) new-paths where at least half the new behaviours are on new items,
   else model. Epochs, step and replay left ``None`` take the mode's (:data:`AUTO_SETTINGS`).
   ``update_leaf_passes`` more passes then train the new leaf rows alone. With
   ``update_tree_learning_first=False``, tree learning comes after training instead.

The update works in memory on the :class:`~jtm_rs.jtm.JTM` given: a save written before is
untouched until the caller saves again.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np

from .._core import Tree
from ..data import Interactions
from ..exceptions import InvalidInputError
from ..features import BehaviourLeaves
from ..ids import IdMap
from ..progress import ensure_handler, say
from ..threads import training_tuner
from ..training import make_optimizer, negatives_per_level, train_epoch
from ..tree_policy import learn_tree_from_model, on_tree_change
from .node_table import follow_items, only_rows
from .placement import category_leaves, cooccurring_leaves, deepen, free_leaves, grow_node_table, place_near


#: The settings ``update_training="auto"`` and the ``None`` fields of the configuration take,
#: by what trains (docs/lifecycle.md): the node rows on the new paths where the update mostly
#: brings new items, the whole model where it mostly brings behaviours on known ones.
AUTO_SETTINGS = {"new-paths": (2, 8e-3, 10.0), "model": (1, 4e-3, 1.0)}


def update_settings(cfg, on_new_items: float) -> Tuple[str, int, float, float, str]:
    """``(training, epochs, learning_rate, replay, tree learning)`` of an update whose new
    behaviours are ``on_new_items`` (a share) on items new to the model: the configuration's
    where it sets them, else the chosen mode's (:data:`AUTO_SETTINGS`; tree learning ``"new"``
    with the new paths, as chosen on the development sets, ``"new-only"`` with the whole model,
    as measured at 10^6 items)."""
    training = cfg.update_training
    if training == "auto":
        training = "new-paths" if on_new_items >= 0.5 else "model"
    epochs, rate, replay = AUTO_SETTINGS["model" if training == "model" else "new-paths"]
    scope = cfg.update_tree_learning
    if scope == "auto":
        scope = "new-only" if training == "model" else "new"
    pick = lambda value, default: default if value is None else value  # noqa: E731
    return (training, pick(cfg.update_epochs, epochs), pick(cfg.update_learning_rate, rate),
            pick(cfg.update_replay, replay), scope)


@dataclass
class UpdateRecord:
    """What one update did: counts, and seconds per phase."""

    new_items: int = 0
    retired_items: int = 0
    new_behaviours: int = 0
    replayed_examples: int = 0
    levels_added: int = 0
    #: New items with no known item next to them in users' sequences (placed by category, or spread).
    cold_items: int = 0
    #: Items tree learning moved to another leaf (their leaf rows went with them).
    items_moved: int = 0
    loss: float = float("nan")
    #: What trained and how, and the tree learning's scope (``update_training`` and the fields it
    #: resolved; ``""`` where nothing ran).
    training: str = ""
    epochs: int = 0
    learning_rate: float = float("nan")
    replay: float = float("nan")
    tree_learning: str = ""
    seconds: Dict[str, float] = field(default_factory=dict)


def original_items(jtm, data: Interactions, what: str) -> np.ndarray:
    """``data``'s item column in the ids the model speaks (the data's own ids where the model
    maps ids, else internal ids), refused where the two do not match in kind."""
    if jtm.item_ids is None:
        if data.item_ids is not None:
            raise InvalidInputError(f"the model was fitted on internal item ids, but {what} maps its own ids: "
                                    "give it as plain Interactions of internal ids")
        return data.item.astype(np.int64)
    if data.item_ids is None:
        raise InvalidInputError(f"the model maps the data's own item ids, but {what} has no id map: load it "
                                "with Interactions.from_ids or a jtm_rs.datasets loader")
    if len(data) and data.item_ids.is_int != jtm.item_ids.is_int:
        kind = lambda m: "integers" if m.is_int else "strings"  # noqa: E731
        raise InvalidInputError(f"{what}'s item ids are {kind(data.item_ids)} but the model's are {kind(jtm.item_ids)}")
    return data.item_ids.decode(data.item)


def original_users(data: Interactions) -> np.ndarray:
    return data.user.astype(np.int64) if data.user_ids is None else data.user_ids.decode(data.user)


def combined(new: Interactions, new_items: np.ndarray, replay: Optional[Interactions],
             replay_items: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The replay and new behaviours as one time-ordered table of internal ids: ``(user, item,
    is_new)``. A user in both (by the data's own user ids) is one user, the replayed behaviours
    before the new ones where times tie."""
    parts = [(new, new_items, True)] + ([(replay, replay_items, False)] if replay is not None else [])
    keys = [original_users(d) for d, _, _ in parts]
    if any(k.dtype.kind == "U" for k in keys):
        keys = [k.astype(str) for k in keys]
    users = np.concatenate(keys)
    _, user = np.unique(users, return_inverse=True)
    item = np.concatenate([i for _, i, _ in parts])
    ts = np.concatenate([d.timestamp.astype(np.float64) for d, _, _ in parts])
    is_new = np.concatenate([np.full(len(d), flag) for d, _, flag in parts])
    order = np.lexsort((is_new, ts, user))
    return user[order].astype(np.int64), item[order], is_new[order]


def update(jtm, new: Interactions, *, replay: Optional[Interactions] = None, retire=None,
           epochs: Optional[int] = None, show_progress: bool = True) -> UpdateRecord:
    """Runs one update of ``jtm`` (fitted) in place (the module docstring says what happens);
    returns its :class:`UpdateRecord`. With nothing new, the model is unchanged."""
    tree, model = jtm.check_fitted()
    if show_progress:
        ensure_handler()
    cfg = jtm.config
    if epochs is not None and epochs < 1:
        raise InvalidInputError(f"epochs must be at least 1, got {epochs}")
    t0 = time.perf_counter()
    record = UpdateRecord()
    # 1. Ids: everything checked and mapped before anything changes.
    new_original = original_items(jtm, new, "the new data")
    replay_original = original_items(jtm, replay, "the replay data") if replay is not None else np.zeros(0, np.int64)
    ids: Optional[IdMap] = jtm.item_ids
    if ids is None:
        new_items, replay_items = new_original, replay_original
    else:
        ids, new_items = ids.extend(new_original)
        replay_items = ids.encode(replay_original, unknown="ignore")
        if (replay_items < 0).any():
            raise InvalidInputError("the replay data holds items the model does not know and the new data does "
                                    "not bring; replay is for old behaviours")
    retired = np.zeros(0, np.int64)
    if retire is not None and len(np.asarray(retire)):
        retired = np.unique(ids.encode(retire, what="retired item") if ids is not None else np.asarray(retire, np.int64))
        unknown = retired[~tree.contains(retired)]
        if len(unknown):
            raise InvalidInputError(f"{len(unknown)} item(s) to retire are not in the tree, e.g. {unknown[:3].tolist()}")
    user, item, is_new = combined(new, new_items, replay, replay_items)
    keep = ~np.isin(item, retired) & ~jtm.retired.contains(item)  # retired items do not come back
    user, item, is_new = user[keep], item[keep], is_new[keep]
    fresh = np.setdiff1d(np.unique(item), tree.items)
    if not len(fresh) and not len(retired) and not is_new.any():
        return record  # nothing new: the same model
    # 2. Retire, 3. place.
    kept = np.setdiff1d(tree.items, retired)
    if not len(kept) and not len(fresh):
        raise InvalidInputError("the update would leave the tree without items")
    old_tree, old_nodes = tree, tree.n_nodes
    tree = Tree.from_leaves(kept, tree.leaves(kept), arity=tree.arity, leaf_level=tree.leaf_level)
    free = free_leaves(tree)
    while len(free) < len(fresh):
        tree = deepen(tree)
        free = free_leaves(tree)
        record.levels_added += 1
    near = cooccurring_leaves(tree, user, item, fresh)
    record.cold_items = int((near < 0).sum())
    if new.category is not None and record.cold_items:  # cold items: next to their category's items
        cold = near < 0
        near[cold] = category_leaves(tree, new_items, new.category, fresh[cold])
    chosen = place_near(tree, fresh, near, free, seed=cfg.seed)
    tree = Tree.from_leaves(np.concatenate([tree.items, fresh]), np.concatenate([tree.leaves(tree.items), chosen]),
                            arity=tree.arity, leaf_level=tree.leaf_level)
    model = grow_node_table(model, jtm.model_factory, tree, cfg, jtm.device, chosen, like=near)
    record.new_items, record.retired_items = len(fresh), len(retired)
    record.new_behaviours = int(is_new.sum())
    on_new_items = float(np.isin(item[is_new], fresh).mean()) if is_new.any() else 0.0
    training, passes, rate, replay_per_new, tree_scope = update_settings(cfg, on_new_items)
    epochs = passes if epochs is None else epochs
    record.training, record.epochs, record.learning_rate, record.replay = training, epochs, rate, replay_per_new
    record.tree_learning = tree_scope
    record.seconds["place"] = time.perf_counter() - t0
    # 4. Train on the new behaviours and a replay of old ones.
    t1 = time.perf_counter()
    data = Interactions(user, item, np.arange(len(user)))  # already time-ordered: positions as times
    windows = data.training_windows(cfg.max_behaviours)
    from_new = is_new[windows.pos]
    rng = np.random.default_rng(cfg.seed + len(jtm.history))
    old = np.flatnonzero(~from_new)
    n_replay = min(len(old), int(round(replay_per_new * from_new.sum())))
    fresh_examples = np.flatnonzero(from_new)
    cap = cfg.max_examples_per_epoch
    if cap is not None and len(fresh_examples) + n_replay > cap:  # the fit's budget per pass, new ones first
        fresh_examples = rng.permutation(fresh_examples)[: min(len(fresh_examples), cap)]
        n_replay = min(n_replay, cap - len(fresh_examples))
    examples = np.concatenate([fresh_examples, rng.choice(old, n_replay, replace=False)])
    record.replayed_examples = n_replay
    leaves = BehaviourLeaves(windows, tree, jtm.device)
    optimizer = make_optimizer(model, rate)
    negatives = negatives_per_level(cfg.negatives, tree)
    if len(negatives) != tree.leaf_level + 1:
        raise InvalidInputError("negatives given per level do not fit the tree after the update; give a total")
    learn = tree_scope != "none" and cfg.tree_learning == "jtm" and len(examples) > 0
    if learn and cfg.update_tree_learning_first:  # training then adapts the model to the places learned
        tree, model, optimizer = _learn_tree(jtm, model, optimizer, tree, leaves, fresh, tree_scope, record,
                                               show_progress)
        leaves = BehaviourLeaves(windows, tree, jtm.device)
    tuner = training_tuner(jtm.n_threads, jtm.device.type)
    # "new-paths": the rows leading to the new behaviours' items learn at every level, the MLP
    # held; "new-leaves": only the new items' leaf rows, at the leaf level; "model": everything.
    # Rows of levels the tree grew learn in both held modes.
    only_new = training == "new-leaves"
    grown = np.arange(old_nodes, tree.n_nodes)
    if only_new:
        scope = only_rows(model, tree.n_nodes, np.union1d(tree.leaves(fresh), grown))
    elif training == "new-paths":  # the items of the new behaviours (new items among them)
        targets = tree.leaves(np.union1d(item[is_new], fresh))
        paths = [tree.ancestors(targets, level) for level in range(1, tree.leaf_level + 1)]
        scope = only_rows(model, tree.n_nodes, np.union1d(np.concatenate(paths), grown))
    else:
        scope = contextlib.nullcontext()
    def one_pass(start_level: int) -> float:
        return train_epoch(model, optimizer, tree, leaves, rng.permutation(examples), negatives,
                           hierarchical=cfg.hierarchical, batch_size=cfg.batch_size, seed=int(rng.integers(2**62)),
                           threads=tuner, loss=cfg.loss, start_level=start_level)

    model.train()
    with scope:
        for _ in range(epochs if len(examples) else 0):
            record.loss = one_pass(tree.leaf_level if only_new else 1)
    if cfg.update_leaf_passes and len(examples) and len(fresh):
        with only_rows(model, tree.n_nodes, tree.leaves(fresh)):
            for _ in range(cfg.update_leaf_passes):
                one_pass(tree.leaf_level)
    record.seconds["train"] = time.perf_counter() - t1 - record.seconds.get("learn_tree", 0.0)
    # 5. Tree learning with the trained model.
    if learn and not cfg.update_tree_learning_first:
        tree, model, optimizer = _learn_tree(jtm, model, optimizer, tree, leaves, fresh, tree_scope, record,
                                               show_progress)
    model.eval()
    jtm.tree, jtm.model, jtm.optimizer, jtm.item_ids = tree, model, optimizer, ids
    jtm.retired = jtm.retired.add(retired, old_tree.leaves(retired))
    record.seconds["update"] = time.perf_counter() - t0
    if show_progress:
        say(f"update: {record.new_items} new item(s) ({record.cold_items} cold), {record.retired_items} retired, "
            f"{record.new_behaviours} new behaviour(s), {record.replayed_examples} replayed example(s), "
            f"{record.training} trained ({record.epochs} pass(es) at {record.learning_rate:g}), "
            f"{record.levels_added} level(s) added; {record.seconds['update']:.1f} s (tree {old_tree.n_items} -> "
            f"{tree.n_items} items)")
    return record


def _learn_tree(jtm, model, optimizer, tree: Tree, leaves: BehaviourLeaves, fresh: np.ndarray, scope: str,
                record: UpdateRecord, show_progress: bool):
    """Algorithm 2 over the new items (``update_tree_learning="new"``) or the whole tree:
    ``(tree, model, optimizer)`` to go on with. Moved items take their leaf rows along."""
    cfg, t = jtm.config, time.perf_counter()
    pinned = None if scope == "whole" else ~np.isin(tree.items, fresh)
    learned = learn_tree_from_model(model, tree, leaves, cfg, d=cfg.d, seed=cfg.seed + len(jtm.history),
                                    n_threads=jtm.n_threads, show_progress=show_progress, pinned=pinned,
                                    hold="leaf" if scope == "new-only" else "subtree")
    if cfg.on_tree_change in ("auto", "keep"):  # the rows stay, so the moved items' leaf rows go with them
        record.items_moved = follow_items(model, tree, learned)
    else:
        model, optimizer = on_tree_change(model, optimizer, tree, learned, cfg, jtm.model_factory, jtm.device,
                                          len(jtm.history))
    record.seconds["learn_tree"] = time.perf_counter() - t
    return learned, model, optimizer


__all__ = ["AUTO_SETTINGS", "UpdateRecord", "update", "update_settings", "original_items"]

"""The joint loop, paper Algorithm 1: train the model with the tree fixed, then learn the tree
with the model fixed, ``iterations`` times; a last training fits the model to the final tree.

After every training it records the objective (paper eq. 2 on a fixed sample of training
examples), the validation Precision/Recall/F@M and the time of each phase, calls the callback
and writes a checkpoint; after every tree learning, the objective under the new tree with the
model unchanged (tree learning maximises exactly that, so it drops). A run killed at any point
goes on from its last checkpoint (``resume``) and reaches the same tree, model and history as
one that was never interrupted.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Protocol, Sequence

import numpy as np
import torch

from ._core import Tree
from .beam_training import BeamSampler
from .checkpoint import (
    SavedJTM,
    check_resumable,
    data_fingerprint,
    has_checkpoint,
    read_jtm,
    restore_training_state,
    save_jtm,
    training_state,
)
from .config import IterationRecord, JTMConfig
from .data import EvaluationUsers, Interactions
from .distributed import Ranks, SparseGradientSync, data_parallel, evaluate
from .exceptions import InvalidInputError, UnknownItemError
from .features import BehaviourLeaves
from .geometry import TreeGeometry
from .progress import bar as progress_bar, say
from .threads import training_tuner
from .training import make_optimizer, negatives_per_level, objective_by_level, train_epoch
from .ids import IdMap
from .lifecycle.retired import RetiredItems
from .tree_policy import ModelFactory, cluster_tree, initial_tree, learn_tree_from_model, new_model, on_tree_change


class Learner(Protocol):
    """What the loop reads and updates: :class:`jtm_rs.JTM`'s state."""

    config: JTMConfig
    model_factory: ModelFactory
    device: torch.device
    n_threads: Optional[int]
    tree: Optional[Tree]
    model: Optional[torch.nn.Module]
    optimizer: object
    history: List[IterationRecord]
    item_ids: Optional[IdMap]

    def evaluate(self, users, M: int = 200, **kwargs) -> Dict[str, float]: ...

    def restore(self, saved: SavedJTM) -> None: ...


class JointLoop:
    """One run of :meth:`JTM.fit` over a learner's state (tree, model, optimiser, history)."""

    def __init__(self, jtm: Learner, train: Interactions, corpus: Sequence[Interactions], *, show_progress: bool,
                 callback: Optional[Callable[[IterationRecord], object]], checkpoint_dir: Optional[Path],
                 ranks: Optional[Ranks] = None):
        cfg = jtm.config
        self.jtm, self.cfg, self.ranks = jtm, cfg, ranks
        # Over ranks, rank 0 alone prints and writes checkpoints; every rank runs the loop.
        leader = ranks is None or ranks.is_leader
        self.show_progress, self.callback = show_progress and leader, callback
        self.checkpoint_dir, self.writes_checkpoints = checkpoint_dir, leader
        self.windows = train.training_windows(cfg.max_behaviours)
        if len(self.windows) == 0:
            raise InvalidInputError(
                "no training examples: the training users have no behaviour with one before it "
                f"({len(train)} rows, {train.n_users} users)"
            )
        self.corpus = corpus
        self.validation: Optional[EvaluationUsers] = None
        self.rng = np.random.default_rng(cfg.seed)
        n = len(self.windows)
        self.fixed = np.sort(self.rng.choice(n, size=min(cfg.objective_examples, n), replace=False))

    def start(self, tree: Optional[Tree], validation: Optional[EvaluationUsers]) -> None:
        """The initial tree (built unless given), the validation users and a new model."""
        jtm, cfg = self.jtm, self.cfg
        if self.ranks is not None:
            # Before any collective that would hang or mix unlike things: refused by name.
            self.ranks.check_same("configuration", repr(dataclasses.asdict(cfg)))
        if tree is None:
            tree = initial_tree(self.corpus, cfg, jtm.n_threads, self.show_progress, ranks=self.ranks)
        jtm.tree = tree
        missing = np.setdiff1d(np.concatenate([p.items for p in self.corpus]), jtm.tree.items)
        if len(missing):
            raise UnknownItemError(f"the initial tree lacks {len(missing)} item(s) of the data, e.g. {missing[:5].tolist()}")
        self.validation = validation
        jtm.model = new_model(jtm.model_factory, jtm.tree, cfg, jtm.device, seed=cfg.seed)
        jtm.optimizer = make_optimizer(jtm.model, cfg.learning_rate)
        jtm.history = []
        jtm.retired = RetiredItems()  # a fit starts over: nothing retired
        needs_fingerprint = self.checkpoint_dir is not None or self.ranks is not None
        self.fingerprint = data_fingerprint(self.windows, jtm.tree) if needs_fingerprint else ""
        if self.ranks is not None:
            self.ranks.check_same("training data or initial tree", self.fingerprint)

    def resume(self, path: Path) -> Optional[int]:
        """Restores model, tree, history, optimiser and random state from the checkpoint in
        ``path``; returns the round whose training it holds (None: no checkpoint there yet)."""
        if not has_checkpoint(path):
            return None
        jtm = self.jtm
        saved = read_jtm(path, jtm.device)
        round_ = check_resumable(path, saved, self.cfg, self.fingerprint)
        jtm.restore(saved)  # its config equals ours: check_resumable said so
        jtm.model.train()
        jtm.optimizer = make_optimizer(jtm.model, self.cfg.learning_rate)
        restore_training_state(path, saved.training, self.rng, jtm.optimizer)
        return round_

    def run(self, start: Optional[int]) -> None:
        """Rounds from ``start`` (the resumed round, whose training is in the checkpoint) or 0."""
        jtm, cfg = self.jtm, self.cfg
        for it in range(start if start is not None else 0, cfg.iterations + 1):
            t0 = time.perf_counter()
            leaves = None  # the last round's leaves go first: at 10^8 behaviours each is ~0.6 GB
            leaves = BehaviourLeaves(self.windows, jtm.tree, jtm.device)
            leaves_s = time.perf_counter() - t0
            if it == start:
                record = jtm.history[it]
                if self.show_progress:
                    say(f"resumed after round {it}'s training")
            else:
                record = self._train_round(it, leaves, t0, leaves_s)
                if self.callback is not None and self.callback(record) is False:
                    break
            if it == cfg.iterations:
                break
            if cfg.tree_learning == "none":
                continue  # JTM-H: the model keeps training on the initial tree
            self._learn_tree_round(it, leaves, record)

    def _train_round(self, it: int, leaves: BehaviourLeaves, t0: float, leaves_s: float) -> IterationRecord:
        jtm, cfg = self.jtm, self.cfg
        # "train" counts the round's behaviour leaves too (a fixed cost: 4 s at 78 M examples).
        seconds: Dict[str, float] = {"behaviour_leaves": leaves_s}
        loss = self._train(leaves, it)
        seconds["train"] = time.perf_counter() - t0
        by_level = objective_by_level(jtm.model, jtm.tree, leaves, self.fixed, hierarchical=cfg.hierarchical)
        record = IterationRecord(it, loss, float(by_level.sum()), seconds=seconds, objective_by_level=by_level.tolist(),
                                 world_size=1 if self.ranks is None else self.ranks.world)
        if self.validation is not None:
            t0 = time.perf_counter()
            if self.ranks is None:
                record.validation = jtm.evaluate(self.validation, cfg.validation_m, on_unknown="ignore")
            else:
                record.validation = evaluate(jtm, self.validation, cfg.validation_m, self.ranks, on_unknown="ignore")
            seconds["validate"] = time.perf_counter() - t0
        jtm.history.append(record)
        if self.show_progress:
            say(record.describe())
        if self.checkpoint_dir is not None and self.writes_checkpoints:
            save_jtm(self.checkpoint_dir, cfg, jtm.tree, jtm.model, jtm.history, jtm.item_ids,
                     training_state(it, self.rng, self.fingerprint, jtm.optimizer))
        return record

    def _learn_tree_round(self, it: int, leaves: BehaviourLeaves, record: IterationRecord) -> None:
        jtm, cfg = self.jtm, self.cfg
        t0 = time.perf_counter()
        if cfg.tree_learning == "clustering":
            new_tree = cluster_tree(jtm.model, jtm.tree, cfg.seed + it, jtm.n_threads, ranks=self.ranks)
        else:
            new_tree = learn_tree_from_model(jtm.model, jtm.tree, leaves, cfg, d=cfg.d, seed=cfg.seed + it,
                                             n_threads=jtm.n_threads, show_progress=self.show_progress,
                                             ranks=self.ranks)
        record.seconds["learn_tree"] = time.perf_counter() - t0
        after = objective_by_level(jtm.model, new_tree, leaves, self.fixed, hierarchical=cfg.hierarchical)
        record.objective_after_tree_learning = float(after.sum())
        record.objective_by_level_after_tree_learning = after.tolist()
        if self.show_progress:
            say(f"round {it}: tree learned in {record.seconds['learn_tree']:.1f} s, objective "
                f"{record.objective:.3f} -> {record.objective_after_tree_learning:.3f}")
        old_tree, jtm.tree = jtm.tree, new_tree
        jtm.model, jtm.optimizer = on_tree_change(jtm.model, jtm.optimizer, old_tree, new_tree, cfg,
                                                  jtm.model_factory, jtm.device, it + 1)

    def _train(self, leaves: BehaviourLeaves, iteration: int) -> float:
        jtm, cfg = self.jtm, self.cfg
        leaf_level = jtm.tree.leaf_level
        negatives = negatives_per_level(cfg.negatives, jtm.tree)
        start_level = 1
        if cfg.levels_trained == "leaves":  # every negative an item, the target the one positive
            negatives, start_level = [0] * leaf_level + [sum(negatives)], leaf_level
        n = len(leaves.windows)
        loss = float("nan")
        tuner = training_tuner(jtm.n_threads, jtm.device.type)
        ranks = self.ranks
        # Over ranks: DDP around this round's model (tree learning may replace the model).
        scorer = data_parallel(jtm.model, ranks) if ranks is not None else None
        optimizer = SparseGradientSync(jtm.optimizer, jtm.model, ranks) if ranks is not None else jtm.optimizer
        beam = (BeamSampler(jtm.tree, TreeGeometry.of(jtm.tree, jtm.device), cfg.beam_samples,
                            hierarchical=cfg.hierarchical, optimal_targets=cfg.pseudo_targets == "optimal",
                            weight=cfg.beam_weight, targets=cfg.beam_targets)
                if cfg.beam_aware else None)
        for epoch in range(cfg.epochs):
            k = n if cfg.max_examples_per_epoch is None else min(n, cfg.max_examples_per_epoch)
            examples = self.rng.permutation(n)[:k]  # shuffled: batches are runs of whole examples
            bar = progress_bar(None, f"round {iteration} epoch {epoch + 1}/{cfg.epochs}", "pair",
                               show=self.show_progress, unit_scale=True, leave=False)
            with bar:
                loss = train_epoch(
                    jtm.model,
                    optimizer,
                    jtm.tree,
                    leaves,
                    examples,
                    negatives,
                    hierarchical=cfg.hierarchical,
                    batch_size=cfg.batch_size,
                    seed=int(self.rng.integers(2**62)),
                    progress=bar,
                    threads=tuner,
                    shard=None if ranks is None else (ranks.rank, ranks.world),
                    scorer=scorer,
                    beam=beam,
                    loss=cfg.loss,
                    start_level=start_level,
                )
        # Each rank's mean over as many samples as the others': their mean is the epoch's.
        return loss if ranks is None else ranks.mean(loss)


def validation_users(validation, max_behaviours: int, n: Optional[int], seed: int) -> Optional[EvaluationUsers]:
    """The validation users measured each round: at most ``n``, drawn with ``seed``."""
    if validation is None:
        return None
    ev = validation if isinstance(validation, EvaluationUsers) else validation.evaluation_users(max_behaviours)
    ev = ev.sample(n, seed)
    return ev if len(ev) else None


__all__ = ["JointLoop", "validation_users"]

"""The JTM learner: paper Algorithm 1 end to end, in the style of ``implicit``.

::

    model = JTM(iterations=3).fit(split, show_progress=True)   # split = data.split(...)
    ids, scores = model.recommend(features, M=200)              # beam search in Rust
    model.evaluate(split.test, M=200)                           # {"precision", "recall", ...}
    model.save("run/"); same = JTM.load("run/")

**The joint loop.** Starting from the initial tree (by category by default), it alternates
``iterations`` times: train the model with the tree fixed, then learn the tree with the model
fixed (:func:`jtm_rs.learn_tree`, weights from :func:`jtm_rs.tree_weights.model_weights_fn`);
a last training fits the model to the final tree. After every training it records the
objective (paper eq. 2 on a fixed sample of training examples), the validation
Precision/Recall/F@M and the time of each phase; after every tree learning, the objective under
the new tree with the model unchanged (tree learning maximises exactly that, so it drops).

**When the tree changes** the node ids keep their positions but not their items, so what the
node embeddings learned no longer applies where it is. ``on_tree_change="keep"`` (the
default after Algorithm 2; after TDM's clustering it is ``"carry"``) is the paper's alternation: the model goes on unchanged, as tree learning assumed when it
placed items under the nodes whose (old) embeddings suit their users. ``"carry"`` keeps the MLP
(and attention) weights and carries the node embeddings over to the new tree
(:func:`jtm_rs.model.carry_node_embeddings`: leaves follow their items, internal nodes take
the mean of their items' old rows at their level); ``"warm"`` keeps the MLP and re-initialises
the node embeddings; ``"fresh"`` starts a new model. The README reports them, measured.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import uuid
import warnings
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ._core import Tree
from .cooccurrence import cooccurrence_embeddings
from .data import MAX_BEHAVIOURS, PAD, EvaluationUsers, Interactions, Split
from .exceptions import CorruptModelError, InvalidInputError, UnknownItemError
from .model import JTMModel, carry_node_embeddings, default_device
from .retrieval import beam_search, brute_force, model_score_fn
from .training import BehaviourLeaves, default_negatives, make_optimizer, objective_by_level, train_epoch
from .tree_learning import learn_tree
from .tree_weights import model_weights_fn
from .baselines.base import Recommender
from .ids import IdMap
from .threads import training_tuner, uses_torch_threads
from .progress import bar as progress_bar, ensure_handler, say

FORMAT_VERSION = 1
INITIAL_TREES = ("auto", "category", "kmeans", "random")
TREE_LEARNINGS = ("jtm", "clustering", "none")
TREE_CHANGES = ("auto", "keep", "carry", "warm", "fresh")


@dataclass
class JTMConfig:
    """Everything that defines a JTM run (saved as ``config.json``)."""

    arity: int = 2
    embedding_dim: int = 24
    hidden: Tuple[int, ...] = (128, 64, 24)
    #: JTM-H (True): behaviours at level l are their ancestors at l. JTM-J (False): leaves.
    hierarchical: bool = True
    #: DIN activation unit over the behaviours (the TDM model).
    attention: bool = False
    #: Tree learnings (Algorithm 1 rounds); the model is trained ``iterations + 1`` times.
    iterations: int = 3
    epochs: int = 1
    #: Training examples drawn (without replacement) per epoch; None: all of them.
    max_examples_per_epoch: Optional[int] = None
    #: Negatives per example in total (spread over levels, more near the leaves), or one count per level.
    negatives: Union[int, List[int]] = 60
    #: Samples per optimiser step (whole examples, ~79 samples each on a 15-level tree) and
    #: Adam's step size. 8192 at 8e-3 (the learning rate scaled with the batch) trains ~1.5x
    #: faster than 2048 at 2e-3, same validation recall within noise on Beauty and Toys (README).
    batch_size: int = 8192
    learning_rate: float = 8e-3
    #: Levels per tree-learning segment (the paper's d). 4, chosen on Beauty and Toys validation
    #: users over 2..7: level with 7 in recall, tree learning 3-5x cheaper, and the eq. 2
    #: objective falls at every tree learning (with 7 it rose in 8 of 12; README).
    d: int = 4
    max_samples_per_item: Optional[int] = 8
    #: Tree learning: nats per training example added to an item's old place in every segment
    #: but the last (0: the paper; 1.0 chosen on Beauty and Toys validation users).
    stay_bonus: float = 1.0
    #: Arithmetic of the model scoring inside tree learning's ``weights_fn``: "float32",
    #: "bfloat16" (autocast: 2.2x faster scoring on CPUs with AVX512-BF16, tree learning 40-50 %
    #: faster, same recall within noise; README) or "auto" (bfloat16 where the device has
    #: native bfloat16 arithmetic, else float32).
    weights_precision: str = "auto"
    #: "auto" (category when the data has a category column, else kmeans), "category" (paper),
    #: "kmeans" (balanced k-means over item co-occurrence embeddings, TDM's tree) or "random".
    initial_tree: str = "auto"
    #: Between trainings: "jtm" (paper Algorithm 2), "clustering" (TDM: k-means over the
    #: learned leaf embeddings) or "none" (the tree stays the initial one, as JTM-H).
    tree_learning: str = "jtm"
    #: "keep": the model goes on unchanged, node embeddings stay with their node ids (what
    #: tree learning assumed); "carry": keep the MLP, move node embeddings with their items;
    #: "warm": keep the MLP, re-initialise node embeddings; "fresh": new model; "auto": keep
    #: after Algorithm 2, carry after TDM's clustering (which placed items by their leaf rows).
    on_tree_change: str = "auto"
    max_behaviours: int = MAX_BEHAVIOURS
    #: Examples in the fixed sample on which the objective is tracked.
    objective_examples: int = 4000
    #: M and users of the validation metrics recorded each iteration (None: all users).
    validation_m: int = 200
    validation_users: Optional[int] = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.arity < 2:
            raise InvalidInputError(f"arity must be at least 2, got {self.arity}")
        if self.iterations < 0 or self.epochs < 1 or self.batch_size < 1 or self.d < 1:
            raise InvalidInputError("iterations must be >= 0; epochs, batch_size and d >= 1")
        if self.initial_tree not in INITIAL_TREES:
            raise InvalidInputError(f"initial_tree must be one of {INITIAL_TREES}, got {self.initial_tree!r}")
        if self.tree_learning not in TREE_LEARNINGS:
            raise InvalidInputError(f"tree_learning must be one of {TREE_LEARNINGS}, got {self.tree_learning!r}")
        if self.weights_precision not in ("auto", "float32", "bfloat16"):
            raise InvalidInputError(f"weights_precision must be 'auto', 'float32' or 'bfloat16', got {self.weights_precision!r}")
        if self.on_tree_change not in TREE_CHANGES:
            raise InvalidInputError(f"on_tree_change must be one of {TREE_CHANGES}, got {self.on_tree_change!r}")
        self.hidden = tuple(self.hidden)


@dataclass
class IterationRecord:
    """What one round of the joint loop measured (``JTM.history``)."""

    iteration: int
    train_loss: float
    #: Eq. 2 per example on the fixed sample, model and tree as trained together.
    objective: float
    #: Same, after the tree was re-learned with the model fixed (None after the last training).
    objective_after_tree_learning: Optional[float] = None
    #: The two objectives level by level (entry j-1: level j), to see which segment moved.
    objective_by_level: List[float] = field(default_factory=list)
    objective_by_level_after_tree_learning: List[float] = field(default_factory=list)
    validation: Dict[str, float] = field(default_factory=dict)
    seconds: Dict[str, float] = field(default_factory=dict)


ModelFactory = Callable[[Tree, JTMConfig], nn.Module]


def default_model_factory(tree: Tree, config: JTMConfig) -> nn.Module:
    return JTMModel(tree.n_nodes, config.embedding_dim, config.hidden, attention=config.attention)


class JTM(Recommender):
    """Joint learning of a tree index and a deep model (Zhu et al., NeurIPS 2019).

    Parameters
    ----------
    config
        A :class:`JTMConfig`; keyword arguments override its fields.
    model_factory
        ``model_factory(tree, config) -> nn.Module`` following the :mod:`jtm_rs.model` call
        convention; default: :class:`JTMModel`.
    device
        torch device; default CUDA when available, else CPU.
    n_threads
        Threads for the Rust core (rayon) and torch's intra-op pool; default: every core for
        rayon, one torch thread (:mod:`jtm_rs.threads` says why).
    """

    def __init__(
        self,
        config: Optional[JTMConfig] = None,
        *,
        model_factory: Optional[ModelFactory] = None,
        device: Union[str, torch.device, None] = None,
        n_threads: Optional[int] = None,
        **overrides,
    ):
        base = config or JTMConfig()
        self.config = dataclasses.replace(base, **overrides) if overrides else base
        self.model_factory = model_factory or default_model_factory
        self.device = torch.device(device) if device is not None else default_device()
        self.n_threads = n_threads
        self.tree: Optional[Tree] = None
        self.model: Optional[nn.Module] = None
        self.history: List[IterationRecord] = []
        #: The map from internal item ids back to the data's ids (None: the ids are their own).
        self.item_ids: Optional[IdMap] = None

    @property
    def name(self) -> str:
        return "jtm"

    def __repr__(self) -> str:
        default = dataclasses.asdict(JTMConfig())
        changed = ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(self.config).items() if default.get(k) != v)
        state = (f"{self.tree.n_items} items, {self.tree.n_levels} levels, {len(self.history)} rounds trained"
                 if self.tree is not None and self.model is not None else "not fitted")
        return f"JTM({state}" + (f"; {changed}" if changed else "") + ")"

    # --- fitting ------------------------------------------------------------------------------

    @uses_torch_threads
    def fit(
        self,
        data: Union[Split, Interactions],
        validation: Union[Interactions, EvaluationUsers, None] = None,
        *,
        tree: Optional[Tree] = None,
        show_progress: bool = True,
        callback: Optional[Callable[[IterationRecord], object]] = None,
        checkpoint_dir: Union[str, PathLike, None] = None,
        resume: Union[str, PathLike, None] = None,
    ) -> "JTM":
        """Runs Algorithm 1.

        Parameters
        ----------
        data
            A :class:`Split` (train on ``train``, validate on ``validation``; the corpus is every
            item of all three parts) or training :class:`Interactions` (corpus: their items).
        validation
            Overrides the split's validation users.
        tree
            Initial tree (default: built per ``config.initial_tree``); must hold every item.
        callback
            Called with each round's :class:`IterationRecord` after the model is trained and
            validated, while model and tree still match (before the round's tree learning, which
            then fills in ``objective_after_tree_learning``); returning ``False`` stops the loop
            there, leaving a matching model and tree.
        checkpoint_dir
            When given, the model is saved there (:meth:`save`) after every training, with
            what a resumed run needs (optimiser moments, random state, the round reached).
        resume
            A ``checkpoint_dir`` of an earlier, interrupted ``fit`` with the same data and
            configuration: the run goes on from its last checkpoint and reaches the same tree,
            model and history as one that was never interrupted (checkpoints keep going to
            ``resume`` unless ``checkpoint_dir`` says otherwise). A directory without a
            checkpoint yet starts from the beginning; a finished run returns at once.
        """
        cfg = self.config
        if show_progress:
            ensure_handler()
        train, corpus_parts = (data.train, [data.train, data.validation, data.test]) if isinstance(data, Split) else (data, [data])
        if validation is None and isinstance(data, Split) and len(data.validation):
            validation = data.validation
        windows = train.training_windows(cfg.max_behaviours)
        if len(windows) == 0:
            raise InvalidInputError(
                "no training examples: the training users have no behaviour with one before it "
                f"({len(train)} rows, {train.n_users} users)"
            )
        self.item_ids = train.item_ids
        self.tree = tree if tree is not None else self._initial_tree(corpus_parts, show_progress)
        missing = np.setdiff1d(np.concatenate([p.items for p in corpus_parts]), self.tree.items)
        if len(missing):
            raise UnknownItemError(f"the initial tree lacks {len(missing)} item(s) of the data, e.g. {missing[:5].tolist()}")
        eval_users = self._evaluation_users(validation)
        rng = np.random.default_rng(cfg.seed)
        fixed = np.sort(rng.choice(len(windows), size=min(cfg.objective_examples, len(windows)), replace=False))
        self.model = self._new_model(self.tree, seed=cfg.seed)
        self.history = []
        if checkpoint_dir is None and resume is not None:
            checkpoint_dir = resume
        fingerprint = _data_fingerprint(windows, self.tree) if checkpoint_dir is not None else ""
        start = self._resume(resume, rng, fingerprint) if resume is not None else None
        if start is not None and start >= cfg.iterations:
            if show_progress:
                say(f"{resume}: the run had finished; nothing to resume")
            return self
        for it in range(start if start is not None else 0, cfg.iterations + 1):
            t0 = time.perf_counter()
            leaves = BehaviourLeaves(windows, self.tree, self.device)
            if it == start:  # resumed: this round's training is in the checkpoint
                record = self.history[it]
                seconds = record.seconds
                if show_progress:
                    say(f"resumed from {resume} after round {it}'s training")
            else:
                seconds: Dict[str, float] = {}
                loss = self._train(leaves, rng, it, show_progress)
                seconds["train"] = time.perf_counter() - t0
                by_level = objective_by_level(self.model, self.tree, leaves, fixed, hierarchical=cfg.hierarchical)
                record = IterationRecord(it, loss, float(by_level.sum()), seconds=seconds, objective_by_level=by_level.tolist())
                if eval_users is not None:
                    t0 = time.perf_counter()
                    record.validation = self.evaluate(eval_users, cfg.validation_m, on_unknown="ignore")
                    seconds["validate"] = time.perf_counter() - t0
                self.history.append(record)
                if show_progress:
                    say(_describe(record))
                if checkpoint_dir is not None:
                    self.save(checkpoint_dir, _training_state=self._training_state(it, rng, fingerprint))
                if callback is not None and callback(record) is False:
                    break
            if it == cfg.iterations:
                break
            if cfg.tree_learning == "none":
                continue  # JTM-H: the model keeps training on the initial tree
            t0 = time.perf_counter()
            if cfg.tree_learning == "clustering":
                new_tree = self._cluster_tree(cfg.seed + it)
            else:
                new_tree = self._learn_tree(leaves, cfg.d, cfg.seed + it, show_progress)
            seconds["learn_tree"] = time.perf_counter() - t0
            after = objective_by_level(self.model, new_tree, leaves, fixed, hierarchical=cfg.hierarchical)
            record.objective_after_tree_learning = float(after.sum())
            record.objective_by_level_after_tree_learning = after.tolist()
            if show_progress:
                say(f"round {it}: tree learned in {seconds['learn_tree']:.1f} s, objective "
                           f"{record.objective:.3f} -> {record.objective_after_tree_learning:.3f}")
            old_tree, self.tree = self.tree, new_tree
            self._on_tree_change(old_tree, it + 1)
        return self

    @uses_torch_threads
    def learn_tree(self, train: Interactions, *, d: Optional[int] = None, show_progress: bool = True) -> Tree:
        """Paper Algorithm 2 with the current model fixed: a new tree learned from the training
        examples of ``train`` (``self.tree`` is left unchanged)."""
        self._check_fitted()
        leaves = BehaviourLeaves(train.training_windows(self.config.max_behaviours), self.tree, self.device)
        return self._learn_tree(leaves, d or self.config.d, self.config.seed, show_progress)

    def _learn_tree(self, leaves: BehaviourLeaves, d: int, seed: int, show_progress: bool) -> Tree:
        tuner = training_tuner(self.n_threads, self.device.type)  # the scoring's threads, as training's
        weights = model_weights_fn(
            self.model,
            self.tree,
            leaves,
            hierarchical=self.config.hierarchical,
            max_samples_per_item=self.config.max_samples_per_item,
            seed=seed,
            stay_bonus=self.config.stay_bonus,
            precision=_weights_precision(self.config.weights_precision, self.device),
            threads=tuner,
        )
        try:
            return learn_tree(weights, d, tree=self.tree, n_threads=self.n_threads, show_progress=show_progress)
        finally:
            if tuner is not None:
                tuner.finish()

    def _cluster_tree(self, seed: int) -> Tree:
        """TDM's tree learning: balanced k-means over the model's current leaf embeddings."""
        tree = self.tree
        emb = getattr(self.model, "embedding", None)
        if emb is None:
            raise InvalidInputError("tree_learning='clustering' needs a model with an `embedding` table")
        items = tree.items
        vecs = emb.weight.detach()[torch.from_numpy(tree.leaves(items)).to(emb.weight.device)].float().cpu().numpy()
        return Tree.from_embeddings(items, vecs, arity=tree.arity, leaf_level=tree.leaf_level, seed=seed, n_threads=self.n_threads)

    def _initial_tree(self, parts: Sequence[Interactions], show_progress: bool = False) -> Tree:
        cfg = self.config
        items = np.unique(np.concatenate([p.items for p in parts]))
        if len(items) == 0:
            raise InvalidInputError("empty dataset: no items to build a tree over")
        has_categories = all(p.category is not None for p in parts)
        kind = cfg.initial_tree
        if kind == "auto":
            kind = "category" if has_categories else "kmeans"
        if kind == "kmeans":
            t0 = time.perf_counter()
            emb = cooccurrence_embeddings(parts[0], items, dim=cfg.embedding_dim, seed=cfg.seed)
            tree = Tree.from_embeddings(items, emb, arity=cfg.arity, seed=cfg.seed, n_threads=self.n_threads)
            if show_progress:
                say(f"initial tree: balanced k-means over co-occurrence embeddings of {len(items)} items "
                           f"in {time.perf_counter() - t0:.1f} s")
            return tree
        if kind == "category":
            if has_categories:
                cats = [p.item_categories() for p in parts if len(p)]
                it = np.concatenate([c["items"] for c in cats])
                ct = np.concatenate([c["categories"] for c in cats])
                it, first = np.unique(it, return_index=True)
                return Tree.from_categories(it, ct[first], arity=cfg.arity, seed=cfg.seed)
            warnings.warn("the data has no category column: starting from a random tree", stacklevel=3)
        return Tree.random(items, arity=cfg.arity, seed=cfg.seed)

    def _new_model(self, tree: Tree, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        model = self.model_factory(tree, self.config).to(self.device)
        n = getattr(model, "n_nodes", None)
        if n is not None and n < tree.n_nodes:
            raise InvalidInputError(f"the model embeds {n} nodes but the tree has {tree.n_nodes}")
        self._optimizer = make_optimizer(model, self.config.learning_rate)
        return model

    def _training_state(self, round_: int, rng: np.random.Generator, fingerprint: str) -> dict:
        """What a resumed ``fit`` needs beyond model, tree and history: saved with a checkpoint."""
        return {
            "round": round_,
            "fingerprint": fingerprint,
            "rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "optimizer": self._optimizer.state_dict(),
        }

    def _resume(self, path: Union[str, PathLike], rng: np.random.Generator, fingerprint: str) -> Optional[int]:
        """Restores model, tree, history, optimiser and random state from the checkpoint in
        ``path``; returns the round whose training it holds (None: no checkpoint there yet)."""
        d = Path(path)
        if not (d / MANIFEST).exists() and not (d / LEGACY_PARTS["config"]).exists():
            return None
        files = _part_files(d)
        if "training" not in files:
            raise InvalidInputError(f"{d}: a saved model, not a checkpoint of fit(): nothing to resume from")
        saved = JTM._from_parts(d, files, model_factory=self.model_factory, device=self.device, n_threads=self.n_threads)
        ours, theirs = dataclasses.asdict(self.config), dataclasses.asdict(saved.config)
        differ = sorted(k for k in ours if ours[k] != theirs.get(k))
        if differ:
            raise InvalidInputError(
                f"{d}: the checkpoint was made with another configuration ({', '.join(f'{k}={theirs.get(k)!r}' for k in differ)}; "
                f"this run has {', '.join(f'{k}={ours[k]!r}' for k in differ)})"
            )
        try:
            state = torch.load(files["training"], map_location="cpu", weights_only=True)
            round_, their_print = int(state["round"]), state["fingerprint"]
        except Exception as e:
            raise CorruptModelError(f"{files['training']}: not a training state ({e})") from None
        if their_print != fingerprint:
            raise InvalidInputError(f"{d}: the checkpoint was trained on other data (or another initial tree) than this run's")
        if len(saved.history) != round_ + 1:
            raise CorruptModelError(f"{d}: the history has {len(saved.history)} rounds, the training state says {round_ + 1}")
        self.tree, self.model, self.history, self.item_ids = saved.tree, saved.model, saved.history, saved.item_ids
        self.model.train()
        self._optimizer = make_optimizer(self.model, self.config.learning_rate)
        try:
            self._optimizer.load_state_dict(state["optimizer"])
            rng.bit_generator.state = state["rng"]
            torch.set_rng_state(state["torch_rng"])
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise CorruptModelError(f"{files['training']}: the training state does not fit this model ({e})") from None
        return round_

    def _on_tree_change(self, old_tree: Tree, iteration: int) -> None:
        mode = self.config.on_tree_change
        if mode == "auto":
            mode = "carry" if self.config.tree_learning == "clustering" else "keep"
        if mode == "keep":
            return  # θ goes on as it is (and so do Adam's moments): the paper's alternation
        table = getattr(getattr(self.model, "embedding", None), "weight", None)
        if mode == "carry" and isinstance(table, torch.Tensor):
            carry_node_embeddings(table.data, old_tree, self.tree)
        elif mode == "fresh" or not hasattr(self.model, "reset_embeddings"):
            self.model = self._new_model(self.tree, seed=self.config.seed + iteration)
            return
        else:
            torch.manual_seed(self.config.seed + iteration)
            self.model.reset_embeddings()
        # The optimiser's moments belong to the old placement.
        self._optimizer = make_optimizer(self.model, self.config.learning_rate)

    def _train(self, leaves: BehaviourLeaves, rng: np.random.Generator, iteration: int, show_progress: bool) -> float:
        cfg = self.config
        negatives = (
            default_negatives(self.tree.leaf_level, cfg.negatives, self.tree.arity)
            if isinstance(cfg.negatives, int)
            else list(cfg.negatives)
        )
        n = len(leaves.windows)
        loss = float("nan")
        tuner = training_tuner(self.n_threads, self.device.type)
        for epoch in range(cfg.epochs):
            k = n if cfg.max_examples_per_epoch is None else min(n, cfg.max_examples_per_epoch)
            examples = rng.permutation(n)[:k]  # shuffled: batches are runs of whole examples
            bar = progress_bar(None, f"round {iteration} epoch {epoch + 1}/{cfg.epochs}", "pair",
                               show=show_progress, unit_scale=True, leave=False)
            with bar:
                loss = train_epoch(
                    self.model,
                    self._optimizer,
                    self.tree,
                    leaves,
                    examples,
                    negatives,
                    hierarchical=cfg.hierarchical,
                    batch_size=cfg.batch_size,
                    seed=int(rng.integers(2**62)),
                    progress=bar,
                    threads=tuner,
                )
        return loss

    def _evaluation_users(self, validation) -> Optional[EvaluationUsers]:
        if validation is None:
            return None
        ev = validation if isinstance(validation, EvaluationUsers) else validation.evaluation_users(self.config.max_behaviours)
        n = self.config.validation_users
        if n is not None and len(ev) > n:
            ev = _subset(ev, np.sort(np.random.default_rng(self.config.seed).choice(len(ev), n, replace=False)))
        return ev if len(ev) else None

    def use_tree(self, tree: Tree) -> "JTM":
        """Retrieves over ``tree`` from now on (e.g. one from :meth:`learn_tree`, with the model
        unchanged): it must hold exactly the model's items, on no more nodes than the model
        embeds."""
        own, model = self._check_fitted()
        if not np.array_equal(tree.items, own.items):
            extra = np.setdiff1d(tree.items, own.items)
            missing = np.setdiff1d(own.items, tree.items)
            raise InvalidInputError(
                f"the tree holds other items than the model's: {len(missing)} missing (e.g. {missing[:3].tolist()}), "
                f"{len(extra)} unknown (e.g. {extra[:3].tolist()})"
            )
        n = getattr(model, "n_nodes", None)
        if n is not None and n < tree.n_nodes:
            raise InvalidInputError(f"the model embeds {n} nodes but the tree has {tree.n_nodes}")
        self.tree = tree
        return self

    # --- retrieval ----------------------------------------------------------------------------

    def _check_fitted(self) -> Tuple[Tree, nn.Module]:
        if self.tree is None or self.model is None:
            raise InvalidInputError("this JTM is not fitted: call fit() or JTM.load() first")
        return self.tree, self.model

    def _user_leaves(self, behaviours, on_unknown: str) -> torch.Tensor:
        tree, _ = self._check_fitted()
        beh = np.asarray(behaviours)
        if beh.ndim != 2:
            raise InvalidInputError(f"behaviours must be a 2-D array [n_users, W] (most recent first, -1 padded), got shape {beh.shape}")
        beh = beh.astype(np.int64, copy=True)
        real = beh != PAD
        unknown = real & ~np.isin(beh, tree.items)
        if unknown.any():
            if on_unknown == "raise":
                ids = np.unique(beh[unknown])
                raise UnknownItemError(
                    f"{len(ids)} behaviour item(s) unknown to the tree, e.g. {ids[:5].tolist()} "
                    "(pass on_unknown='ignore' to drop them)"
                )
            if on_unknown != "ignore":
                raise InvalidInputError(f"on_unknown must be 'raise' or 'ignore', got {on_unknown!r}")
            beh[unknown] = PAD
            real &= ~unknown
        leaves = np.full(beh.shape, PAD, dtype=np.int64)
        leaves[real] = tree.leaves(beh[real])
        return torch.from_numpy(leaves).to(self.device)

    def recommend(
        self,
        behaviours,
        M: int = 200,
        *,
        beam_size: Optional[int] = None,
        method: str = "beam",
        on_unknown: str = "raise",
        batch_size: int = 1024,
        pad=PAD,
    ) -> Tuple[np.ndarray, np.ndarray]:
        """Top-``M`` items per user, best first: ``(item_ids [n, M], scores float32[n, M])``,
        in the data's own item ids (those of the file the model was fitted on).

        Parameters
        ----------
        behaviours
            Either a list with one sequence of item ids per user, in time order (oldest
            first, any length), or an array ``[n_users, W]`` of item ids, most recent first,
            padded with ``pad`` (the layout of :attr:`EvaluationUsers.features`). Only the
            last 69 behaviours are used.
        M
            Items per user; at most the corpus size (larger raises :class:`InvalidInputError`).
        beam_size
            Beam width ``k >= M`` (default ``M``).
        method
            ``"beam"``: layer-wise beam search over the tree (Rust driver, batched torch
            scoring). ``"brute_force"``: score every item (the paper's "DNN" row).
        on_unknown
            ``"raise"`` (:class:`UnknownItemError`) or ``"ignore"`` (dropped) for behaviour
            items the model does not know.
        pad
            The padding value of an array ``behaviours`` (default ``-1``; pass another value,
            or use lists, when ``-1`` is a real item id). Empty result slots are ``-1`` (or
            ``""`` for string ids).
        """
        feats = self._encode_features(behaviours, on_unknown, pad)
        ids, scores = self.retrieve(feats, M, beam_size=beam_size, method=method, batch_size=batch_size)
        return (self.item_ids.decode(ids) if self.item_ids is not None else ids), scores

    def _encode_features(self, behaviours, on_unknown: str, pad) -> np.ndarray:
        """Internal-id feature matrix (most recent first, ``PAD`` padded) from user-facing input."""
        if on_unknown not in ("raise", "ignore"):
            raise InvalidInputError(f"on_unknown must be 'raise' or 'ignore', got {on_unknown!r}")
        W = self.config.max_behaviours
        if isinstance(behaviours, (list, tuple)):
            feats = np.full((len(behaviours), W), PAD, dtype=object)
            for r, seq in enumerate(behaviours):
                recent = list(seq)[::-1][:W]
                feats[r, : len(recent)] = recent
            real = np.zeros(feats.shape, dtype=bool)
            for r, seq in enumerate(behaviours):
                real[r, : min(len(seq), W)] = True
        else:
            feats = np.asarray(behaviours)
            if feats.ndim != 2:
                raise InvalidInputError(
                    f"behaviours must be a 2-D array [n_users, W] (most recent first, padded) or a list "
                    f"of per-user sequences, got shape {feats.shape}"
                )
            real = feats != pad
        if self.item_ids is None:
            internal = np.where(real, feats, PAD).astype(np.int64)
            tree, _ = self._check_fitted()
            known = real & np.isin(internal, tree.items)
        else:
            internal = np.full(feats.shape, PAD, dtype=np.int64)
            internal[real] = self.item_ids.encode(feats[real], unknown="ignore")
            known = internal != PAD
        unknown = real & ~known
        if unknown.any() and on_unknown == "raise":
            ids = np.unique(feats[unknown].astype(str) if feats.dtype == object else feats[unknown])
            raise UnknownItemError(
                f"{len(ids)} behaviour item(s) unknown to the model, e.g. {ids[:5].tolist()} "
                "(pass on_unknown='ignore' to drop them)"
            )
        out = np.where(known, internal, PAD)[:, :W]
        if out.shape[1] < W:  # the model reads exactly W behaviour columns
            out = np.pad(out, ((0, 0), (0, W - out.shape[1])), constant_values=PAD)
        return out

    @uses_torch_threads
    def retrieve(
        self,
        features: np.ndarray,
        M: int = 200,
        *,
        beam_size: Optional[int] = None,
        method: str = "beam",
        on_unknown: str = "raise",
        batch_size: int = 1024,
    ) -> Tuple[np.ndarray, np.ndarray]:
        """:meth:`recommend` on internal ids: ``features`` as :attr:`EvaluationUsers.features`."""
        tree, model = self._check_fitted()
        if M < 1 or M > tree.n_items:
            raise InvalidInputError(f"M must be between 1 and the corpus size {tree.n_items}, got {M}")
        k = M if beam_size is None else beam_size
        if k < M:
            raise InvalidInputError(f"beam_size ({k}) must be at least M ({M})")
        user_leaves = self._user_leaves(features, on_unknown)
        model.eval()
        hier = self.config.hierarchical
        if method == "brute_force":
            return brute_force(model, tree, user_leaves, M, hierarchical=hier)
        if method != "beam":
            raise InvalidInputError(f"method must be 'beam' or 'brute_force', got {method!r}")
        score = model_score_fn(model, tree, user_leaves, hierarchical=hier)
        return beam_search(tree, score, len(user_leaves), k, M, batch_size=batch_size, n_threads=self.n_threads)

    def evaluate(
        self,
        users: Union[Interactions, EvaluationUsers],
        M: int = 200,
        *,
        method: str = "beam",
        beam_size: Optional[int] = None,
        on_unknown: str = "raise",
    ) -> Dict[str, float]:
        """Paper protocol (DESIGN §4.6): features are the first half of each user's behaviours,
        the ground truth the distinct items of the second half; returns the averages of
        ``precision``, ``recall`` and ``f_measure`` @M, plus ``n_users``. ``users`` hold
        internal ids (as loaded and split)."""
        if isinstance(users, Interactions):
            users = users.evaluation_users(self.config.max_behaviours)
        return super().evaluate(users, M, method=method, beam_size=beam_size, on_unknown=on_unknown)

    # --- persistence --------------------------------------------------------------------------

    def save(self, path: Union[str, PathLike], *, _training_state: Optional[dict] = None) -> None:
        """Saves into the directory ``path`` (created if needed), atomically as a whole.

        Every part — ``config-<token>.json``, ``tree-<token>.jtm``, ``model-<token>.pt`` (a
        state dict), ``history-<token>.json`` and ``item_ids-<token>.npz`` (the map back to the
        data's item ids, when it has one) — is written under a token new to this save, then
        ``manifest.json`` (the token, each part's size and SHA-256) replaces the old manifest
        in one rename, and only then are the previous save's parts removed. A save killed at
        any moment leaves the previous model loadable; two saves to one path never collide
        (the last manifest wins). Other files in the directory (e.g. ``split.json``) stay."""
        tree, model = self._check_fitted()
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        token = f"{time.time_ns():x}-{os.getpid():x}-{uuid.uuid4().hex[:8]}"
        meta = {
            "format_version": FORMAT_VERSION,
            "config": dataclasses.asdict(self.config),
            "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        }
        parts: Dict[str, str] = {}

        def part(kind: str, suffix: str, write: Callable[[Path], None]) -> None:
            name = f"{kind}-{token}{suffix}"
            write(d / name)
            parts[kind] = name

        part("config", ".json", lambda p: _write_synced(p, json.dumps(meta, indent=1).encode()))
        part("tree", ".jtm", lambda p: tree.save(p))
        part("model", ".pt", lambda p: torch.save(model.state_dict(), p))
        history = json.dumps([dataclasses.asdict(r) for r in self.history], indent=1).encode()
        part("history", ".json", lambda p: _write_synced(p, history))
        if self.item_ids is not None:
            part("item_ids", ".npz", lambda p: self.item_ids.save(p))
        if _training_state is not None:  # a checkpoint of fit(): what resume needs
            part("training", ".pt", lambda p: torch.save(_training_state, p))
        manifest = {
            "format_version": FORMAT_VERSION,
            "token": token,
            "parts": {k: {"file": v, "bytes": (d / v).stat().st_size, "sha256": _sha256(d / v)} for k, v in parts.items()},
        }
        previous = _read_manifest(d) if (d / MANIFEST).exists() else None
        tmp = d / f".{MANIFEST}.{token}.tmp"
        _write_synced(tmp, json.dumps(manifest, indent=1).encode())
        os.replace(tmp, d / MANIFEST)
        _fsync_dir(d)
        # The previous save's parts (and the fixed names of the pre-manifest layout) go last;
        # so do leftovers of saves killed over an hour ago (a live save is never that old).
        stale = [p["file"] for p in previous["parts"].values()] if previous else list(LEGACY_PARTS.values())
        for name in stale:
            if name not in parts.values():
                (d / name).unlink(missing_ok=True)
        cutoff = time.time() - 3600
        leftovers = list(d.glob(f".{MANIFEST}.*.tmp"))
        for kind in LEGACY_PARTS:
            leftovers += d.glob(f"{kind}-*")
        for p in leftovers:
            try:
                if p.name not in parts.values() and p.stat().st_mtime < cutoff:
                    p.unlink()
            except FileNotFoundError:  # another save cleaned it first
                pass

    @classmethod
    def load(
        cls,
        path: Union[str, PathLike],
        *,
        model_factory: Optional[ModelFactory] = None,
        device: Union[str, torch.device, None] = None,
        n_threads: Optional[int] = None,
    ) -> "JTM":
        """Reads what :meth:`save` wrote. Nothing is unpickled: the tree has its own format and
        the model state is read with ``torch.load(weights_only=True)``. A model saved from a
        custom ``model_factory`` needs the same factory here."""
        return cls._from_parts(Path(path), _part_files(Path(path)), model_factory=model_factory, device=device,
                               n_threads=n_threads)

    @classmethod
    def _from_parts(cls, d: Path, files: Dict[str, Path], **kwargs) -> "JTM":
        """:meth:`load` from the parts :func:`_part_files` verified."""
        meta = _read_json(files["config"])
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
            version = meta.get("format_version") if isinstance(meta, dict) else None
            raise InvalidInputError(f"{d}: unknown format version {version}")
        fields = {f.name for f in dataclasses.fields(JTMConfig)}
        try:
            config = JTMConfig(**{k: v for k, v in meta["config"].items() if k in fields})
        except (KeyError, AttributeError, TypeError, InvalidInputError) as e:
            raise CorruptModelError(f"{files['config']}: not a JTM configuration ({e})") from None
        self = cls(config, **kwargs)
        self.tree = Tree.load(files["tree"])
        self.model = self._new_model(self.tree, seed=config.seed)
        state = torch.load(files["model"], map_location=self.device, weights_only=True)
        self.model.load_state_dict(state)
        self.model.eval()
        if "item_ids" in files and files["item_ids"].exists():
            self.item_ids = IdMap.load(files["item_ids"])
        hist = files.get("history")
        if hist is not None and hist.exists():
            try:
                self.history = [IterationRecord(**r) for r in _read_json(hist)]
            except TypeError as e:
                raise CorruptModelError(f"{hist}: not a training history ({e})") from None
        return self


def _weights_precision(setting: str, device: torch.device) -> str:
    """``"auto"`` made concrete: bfloat16 only where the device computes it natively (emulated
    bfloat16 is slower than float32)."""
    if setting != "auto":
        return setting
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device.type == "cpu":
        try:
            return "bfloat16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"
        except (AttributeError, RuntimeError):
            return "float32"
    return "float32"


def _data_fingerprint(windows, tree: Tree) -> str:
    """SHA-256 of the training examples and the initial tree: a resumed run must see both again."""
    h = hashlib.sha256()
    for a in (windows.items, windows.pos, windows.row_start, tree.items, tree.leaves(tree.items)):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _subset(ev: EvaluationUsers, idx: np.ndarray) -> EvaluationUsers:
    parts = [ev.truth(int(u)) for u in idx]
    indptr = np.concatenate(([0], np.cumsum([len(p) for p in parts]))).astype(np.int64)
    items = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return EvaluationUsers(ev.users[idx], ev.features[idx], indptr, items)


MANIFEST = "manifest.json"
#: The layout before manifests (still read): fixed names, written one by one.
LEGACY_PARTS = {"config": "config.json", "tree": "tree.jtm", "model": "model.pt",
                "history": "history.json", "item_ids": "item_ids.npz"}


def _sha256(path: Path) -> str:
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
    manifest = _read_json(d / MANIFEST)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("parts"), dict):
        raise CorruptModelError(f"{d / MANIFEST}: not a jtm_rs manifest")
    return manifest


def _part_files(d: Path) -> Dict[str, Path]:
    """The files of the model saved in ``d``, each checked against the manifest (size, then
    SHA-256): a part that is missing or does not belong to the manifest's save is named."""
    if not (d / MANIFEST).exists():
        if not (d / "config.json").exists():
            raise FileNotFoundError(f"{d} holds no saved JTM (no manifest.json or config.json)")
        return {k: d / v for k, v in LEGACY_PARTS.items()}
    files: Dict[str, Path] = {}
    for kind, entry in _read_manifest(d)["parts"].items():
        p = d / entry["file"]
        if not p.exists():
            raise CorruptModelError(f"{d}: the {kind} part {entry['file']} named by manifest.json is missing")
        if p.stat().st_size != entry["bytes"] or _sha256(p) != entry["sha256"]:
            raise CorruptModelError(f"{d}: the {kind} part {entry['file']} does not match manifest.json (changed or damaged)")
        files[kind] = p
    for kind in ("config", "tree", "model"):
        if kind not in files:
            raise CorruptModelError(f"{d}: manifest.json names no {kind} part")
    return files


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptModelError(f"{path}: unreadable JSON ({e}); the save was interrupted or the file damaged") from None


def _describe(r: IterationRecord) -> str:
    v = r.validation
    val = f" | valid P/R/F {v['precision']:.4f}/{v['recall']:.4f}/{v['f_measure']:.4f}" if v else ""
    return f"round {r.iteration}: trained in {r.seconds['train']:.1f} s, loss {r.train_loss:.4f}, objective {r.objective:.3f}{val}"


__all__ = ["JTM", "JTMConfig", "IterationRecord", "default_model_factory"]

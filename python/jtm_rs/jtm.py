"""The JTM learner: paper Algorithm 1 end to end, behind the :class:`Recommender` interface.

::

    model = JTM(iterations=3).fit(split, show_progress=True)   # split = data.split(...)
    ids, scores = model.recommend(histories, M=200)             # the data's own item ids
    model.evaluate(split.test, M=200)                           # {"precision", "recall", ...}
    model.save("run/"); same = JTM.load("run/")

This class is a façade: the joint loop is :mod:`jtm_rs.joint_loop`, where trees come from and
what the model does when the tree changes is :mod:`jtm_rs.tree_policy`, the configuration is
:mod:`jtm_rs.config`, saving and checkpoints are :mod:`jtm_rs.checkpoint`, and turning the data's
ids into features is :mod:`jtm_rs.encoding`.
"""

from __future__ import annotations

import dataclasses
from os import PathLike
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from ._core import Tree
from .checkpoint import SavedJTM, read_jtm, save_jtm
from .config import IterationRecord, JTMConfig, variant_name
from .data import PAD, EvaluationUsers, Interactions, Split
from .encoding import drop_unknown, history_items
from .distributed import Ranks
from .exceptions import InvalidInputError, JtmError, RankLostError
from .features import BehaviourLeaves
from .ids import IdMap
from . import lifecycle
from .joint_loop import JointLoop, validation_users
from .model import default_device
from .progress import ensure_handler, say
from .recommender import Recommender
from .retrieval import ExcludedLeaves, model_search
from .threads import uses_torch_threads
from .tree_policy import (ModelFactory, check_model_fits, default_model_factory, learn_tree_from_model, new_model,
                          resolve_precision)


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
        torch device (default: CUDA when available, else CPU).
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
        self.optimizer = None
        self.history: List[IterationRecord] = []
        self.item_ids: Optional[IdMap] = None
        self.retired = lifecycle.RetiredItems()  # items an update took out of the tree

    @property
    def name(self) -> str:
        """The Table 1 row this configuration is: ``jtm``, ``jtm-j``, ``jtm-h`` or ``tdm``."""
        return variant_name(self.config)

    @property
    def max_behaviours(self) -> int:
        return self.config.max_behaviours

    def __repr__(self) -> str:
        changed = ", ".join(f"{k}={v!r}" for k, v in self.config.changed().items())
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
        distributed: bool = False,
    ) -> "JTM":
        """Runs Algorithm 1 (:mod:`jtm_rs.joint_loop`).

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
            Called with each round's :class:`IterationRecord` once the model is trained and
            validated, before the round's tree learning (which then fills in
            ``objective_after_tree_learning``); ``False`` stops the loop, model and tree matching.
        checkpoint_dir
            The model is saved there after every training, with what a resume needs.
        resume
            A ``checkpoint_dir`` of an interrupted ``fit`` of the same data and configuration:
            it goes on from the last checkpoint to the tree, model and history of an
            uninterrupted run (checkpoints keep going to ``resume`` unless ``checkpoint_dir``
            says otherwise); without a checkpoint yet, from the start; a finished run returns.
        distributed
            Run over the ranks of the torch.distributed process group the caller initialised
            (every rank calls ``fit`` alike, which is checked): DDP training, tree learning's
            scoring and validation split over the ranks; rank 0 alone prints and writes
            checkpoints to one directory all ranks read (:mod:`jtm_rs.distributed`).
        """
        if show_progress:
            ensure_handler()
        train, corpus = (data.train, [data.train, data.validation, data.test]) if isinstance(data, Split) else (data, [data])
        if validation is None and isinstance(data, Split) and len(data.validation):
            validation = data.validation
        if checkpoint_dir is None and resume is not None:
            checkpoint_dir = resume
        cfg = self.config
        loop = JointLoop(self, train, corpus, show_progress=show_progress, callback=callback,
                         checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir),
                         ranks=Ranks() if distributed else None)
        self.item_ids = train.item_ids
        loop.start(tree, validation_users(validation, cfg.max_behaviours, cfg.validation_users, cfg.seed))
        start = loop.resume(Path(resume)) if resume is not None else None
        if start is not None and start >= cfg.iterations:
            if show_progress:
                say(f"{resume}: the run had finished; nothing to resume")
            return self
        try:
            loop.run(start)
        except RuntimeError as e:
            if not distributed or isinstance(e, JtmError):
                raise
            # torch.distributed's own message is a page of C++ source paths and advice.
            raise RankLostError(
                f"rank {loop.ranks.rank}: another rank of the distributed run died or stopped answering "
                f"({str(e).splitlines()[0][:300]}); checkpoints, if any, are in the checkpoint directory"
            ) from e
        return self

    @uses_torch_threads
    def learn_tree(self, train: Interactions, *, d: Optional[int] = None, show_progress: bool = True) -> Tree:
        """Paper Algorithm 2 with the current model fixed: a new tree learned from the training
        examples of ``train`` (``self.tree`` is left unchanged)."""
        tree, model = self.check_fitted()
        leaves = BehaviourLeaves(train.training_windows(self.config.max_behaviours), tree, self.device)
        return learn_tree_from_model(model, tree, leaves, self.config, d=d or self.config.d, seed=self.config.seed,
                                     n_threads=self.n_threads, show_progress=show_progress)

    @uses_torch_threads
    def update(self, new: Interactions, *, replay: Optional[Interactions] = None, retire=None, epochs: Optional[int] = None,
               show_progress: bool = True):
        """New behaviours and items, a replay of old ones, retired items: :func:`jtm_rs.lifecycle.update`."""
        return lifecycle.update(self, new, replay=replay, retire=retire, epochs=epochs, show_progress=show_progress)

    def use_tree(self, tree: Tree) -> "JTM":
        """Retrieves over ``tree`` from now on (e.g. one from :meth:`learn_tree`, with the model
        unchanged): it must hold exactly the model's items, on no more nodes than the model
        embeds."""
        own, model = self.check_fitted()
        if not np.array_equal(tree.items, own.items):
            extra = np.setdiff1d(tree.items, own.items)
            missing = np.setdiff1d(own.items, tree.items)
            raise InvalidInputError(
                f"the tree holds other items than the model's: {len(missing)} missing (e.g. {missing[:3].tolist()}), "
                f"{len(extra)} unknown (e.g. {extra[:3].tolist()})"
            )
        check_model_fits(model, tree)
        self.tree = tree
        return self

    # --- retrieval ----------------------------------------------------------------------------

    def check_fitted(self) -> Tuple[Tree, nn.Module]:
        """The tree and model, or :class:`InvalidInputError` when there are none yet."""
        if self.tree is None or self.model is None:
            raise InvalidInputError("this JTM is not fitted: call fit() or JTM.load() first")
        return self.tree, self.model

    def known_items(self, items: np.ndarray) -> np.ndarray:
        tree, _ = self.check_fitted()
        # A binary search per id, nothing per item of the catalogue; retired items are features.
        return tree.contains(items) | self.retired.contains(items)

    def recommend(self, behaviours, M: int = 200, *, beam_size: Optional[int] = None, method: str = "beam",
                  on_unknown: str = "raise", batch_size: int = 1024, pad=PAD,
                  exclude_history: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """Top-``M`` items per user, best first, in the data's own item ids (see
        :meth:`Recommender.recommend`); ``beam_size``, ``method`` and ``batch_size`` as in
        :meth:`retrieve`. Only the last ``max_behaviours`` (69) behaviours are used as
        features; ``exclude_history`` leaves every item of each user's whole history out of
        its answer (``exclude`` of :meth:`retrieve`)."""
        exclude = history_items(behaviours, self.item_ids, self.known_items, pad) if exclude_history else None
        return super().recommend(behaviours, M, on_unknown=on_unknown, pad=pad, beam_size=beam_size,
                                 method=method, batch_size=batch_size, exclude=exclude)

    @uses_torch_threads
    def retrieve(self, features: np.ndarray, M: int = 200, *, beam_size: Optional[int] = None, method: str = "beam",
                 on_unknown: str = "raise", batch_size: int = 1024,
                 exclude: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Top-``M`` internal item ids per user of ``features`` (as :attr:`EvaluationUsers.features`).

        ``method="beam"``: layer-wise beam search over the tree (Rust driver, batched torch
        scoring) with beam width ``beam_size >= M`` (default ``M``); ``"brute_force"``: score
        every item (the paper's "DNN" row). ``M`` is at most the corpus size. Unknown items
        raise :class:`UnknownItemError` (``on_unknown="raise"``) or are dropped (``"ignore"``).

        ``exclude``: ``int64[n_users, E]`` internal item ids (``PAD`` padded) never returned to
        that user: the beam drops them at the leaf level (:func:`~jtm_rs.retrieval.model_search`)."""
        tree, model = self.check_fitted()
        if M < 1 or M > tree.n_items:
            raise InvalidInputError(f"M must be between 1 and the corpus size {tree.n_items}, got {M}")
        k = M if beam_size is None else beam_size
        if k < M:
            raise InvalidInputError(f"beam_size ({k}) must be at least M ({M})")
        if method not in ("beam", "brute_force"):
            raise InvalidInputError(f"method must be 'beam' or 'brute_force', got {method!r}")
        user_leaves = self.user_leaves(features, on_unknown)
        model.eval()
        return model_search(model, tree, user_leaves, M, k, method=method, hierarchical=self.config.hierarchical,
                            excluded=ExcludedLeaves.of(tree, exclude, len(user_leaves)), batch_size=batch_size,
                            n_threads=self.n_threads,
                            precision=resolve_precision(self.config.retrieval_precision, self.device))

    def user_leaves(self, features: np.ndarray, on_unknown: str = "raise") -> torch.Tensor:
        """The leaves of the behaviours in ``features`` (internal item ids, ``PAD`` padded), on
        the model's device, ``-1`` padded; unknown items raised or dropped as in :meth:`retrieve`."""
        tree, _ = self.check_fitted()
        beh = drop_unknown(features, self.known_items, on_unknown, "the tree")
        return torch.from_numpy(self.retired.item_leaves(tree, beh)).to(self.device)

    # --- persistence --------------------------------------------------------------------------

    def save(self, path: Union[str, PathLike]) -> None:
        """Saves into the directory ``path`` (created if needed), atomically as a whole: the
        configuration, tree, model state, history and the map back to the data's item ids
        (:mod:`jtm_rs.checkpoint`). Other files in the directory stay."""
        tree, model = self.check_fitted()
        save_jtm(Path(path), self.config, tree, model, self.history, self.item_ids, retired=self.retired)

    @classmethod
    def load(
        cls,
        path: Union[str, PathLike],
        *,
        model_factory: Optional[ModelFactory] = None,
        device: Union[str, torch.device, None] = None,
        n_threads: Optional[int] = None,
    ) -> "JTM":
        """Reads what :meth:`save` (or a checkpoint of :meth:`fit`) wrote. Nothing is
        unpickled. A model saved from a custom ``model_factory`` needs the same factory here."""
        self = cls(model_factory=model_factory, device=device, n_threads=n_threads)
        self.restore(read_jtm(Path(path), self.device))
        self.model.eval()
        return self

    def restore(self, saved: SavedJTM) -> None:
        """Takes the configuration, tree, model weights, history and id map of a save."""
        self.config = saved.config
        self.tree, self.history, self.item_ids, self.retired = saved.tree, saved.history, saved.item_ids, saved.retired
        self.model = new_model(self.model_factory, saved.tree, saved.config, self.device, seed=saved.config.seed)
        self.model.load_state_dict(saved.model_state)


class BruteForce(Recommender):
    """The paper's "DNN" row: a fitted (or to be fitted) :class:`JTM`'s model scored against
    every item, no tree at retrieval. Sharing the JTM run, the two rows differ only in
    retrieval."""

    name = "dnn"

    def __init__(self, jtm: JTM):
        self.jtm = jtm

    @property
    def item_ids(self) -> Optional[IdMap]:
        return self.jtm.item_ids

    @property
    def max_behaviours(self) -> int:
        return self.jtm.max_behaviours

    def fit(self, split: Split, *, show_progress: bool = True, callback=None) -> "BruteForce":
        self.jtm.fit(split, show_progress=show_progress)
        return self

    def known_items(self, items: np.ndarray) -> np.ndarray:
        return self.jtm.known_items(items)

    def retrieve(self, features: np.ndarray, M: int = 200, **kwargs) -> Tuple[np.ndarray, np.ndarray]:
        return self.jtm.retrieve(features, M, method="brute_force", **kwargs)

    def save(self, path: Union[str, PathLike]) -> None:
        self.jtm.save(path)

    @classmethod
    def load(cls, path: Union[str, PathLike], **kwargs) -> "BruteForce":
        return cls(JTM.load(path, **kwargs))


__all__ = ["JTM", "JTMConfig", "IterationRecord", "BruteForce", "default_model_factory"]


"""Beam-aware training (OTM: Zhuo et al., "Learning Optimal Tree Models under Beam Search",
ICML 2020): train each level on the nodes a beam search with the current model expands, and
label the target's ancestors with estimated optimal pseudo targets.

The uniform sampler (:mod:`jtm_rs.samples`) shows each level mostly far-away nodes; the beam
only ever has to tell apart the children of the nodes it kept. :class:`BeamSampler` adds, per
training example and batch,

- the nodes a beam search of width ``k`` expands at every level it scores (the Rust beam
  search, :func:`jtm_rs.retrieval.beam_search`, run with the model as it is at that batch), and
- the siblings of the target's ancestors (what a beam that kept the right parent must beat),

as label-0 samples (the target's ancestors are already the uniform block's positives). With
``targets=h > 1`` an added node is labelled 1 when it is an ancestor of one of the user's next
``h`` items (the target and the ``h - 1`` after it in the user's row): OTM's multi-target
instance, whose beam nodes the user goes on to buy are positives, not noise.

Estimated optimal pseudo targets (:func:`optimal_pseudo_targets`): the max-heap label says
"a target is below this node"; beam search needs "the best leaf below this node is a target".
OTM estimates the best leaf with the model, by greedy descent: the target's ancestor at level
``l`` keeps label 1 only when, at every level below ``l``, the model scores the ancestor there
above its siblings. The scores are the training step's own (detached) logits, so the labels
cost no extra scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._core import Tree
from .exceptions import InvalidInputError
from .geometry import TreeGeometry
from .retrieval import beam_search, model_score_fn


class BeamSampler:
    """The beam-aware samples of a batch of training examples (see the module docstring).

    ``k``: beam width of the search that picks the samples (``0``: only the siblings);
    ``optimal_targets``: relabel the target's ancestors with :func:`optimal_pseudo_targets`;
    ``weight``: each added sample's weight in the loss, a uniform sample's being 1;
    ``targets``: how many of the user's next items label the added samples (1: the target)."""

    def __init__(self, tree: Tree, geometry: TreeGeometry, k: int, *, hierarchical: bool,
                 optimal_targets: bool = False, weight: float = 1.0, targets: int = 1):
        if k < 0:
            raise InvalidInputError(f"the training beam width must be >= 0, got {k}")
        if targets < 1:
            raise InvalidInputError(f"the beam samples' targets must be >= 1, got {targets}")
        self.tree, self.geometry, self.k, self.hierarchical = tree, geometry, k, hierarchical
        self.optimal_targets, self.weight, self.targets = optimal_targets, weight, targets
        self.live = torch.from_numpy(tree.is_live(np.arange(geometry.n_nodes, dtype=np.int64))).to(
            geometry.level_start.device)

    def candidates(self, model: nn.Module, behaviour_leaves: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(example, node)``: every pair a beam search of width ``k`` with ``model`` scores
        for the users ``behaviour_leaves`` (``[E, W]``), level by level, as the search asks."""
        empty = torch.zeros(0, dtype=torch.int64, device=behaviour_leaves.device)
        if self.k == 0 or len(behaviour_leaves) == 0:
            return empty, empty
        score = model_score_fn(model, self.tree, behaviour_leaves, hierarchical=self.hierarchical)
        seen: List[Tuple[np.ndarray, np.ndarray]] = []

        def recording(user_rows: np.ndarray, nodes: np.ndarray, level: int):
            seen.append((user_rows.copy(), nodes.copy()))
            return score(user_rows, nodes, level)

        was_training = model.training
        model.eval()
        try:
            beam_search(self.tree, recording, len(behaviour_leaves), self.k, min(self.k, self.tree.n_items))
        finally:
            model.train(was_training)
        device = behaviour_leaves.device
        example = torch.from_numpy(np.concatenate([r for r, _ in seen])).to(device)
        node = torch.from_numpy(np.concatenate([n for _, n in seen])).to(device)
        return example, node

    def samples(self, model: nn.Module, behaviour_leaves: torch.Tensor,
                path: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(example, level, node)`` of the added label-0 samples, each pair once: the beam's
        candidates and the live siblings of the target's ancestors, less the ancestors
        themselves. ``path[e, l - 1]`` is example ``e``'s target ancestor at level ``l``."""
        g = self.geometry
        E, L = path.shape
        ex_beam, node_beam = self.candidates(model, behaviour_leaves)
        # Siblings: the children of each ancestor at levels 0..L-1 (the root for level 1).
        parents = torch.cat([torch.zeros(E, 1, dtype=path.dtype, device=path.device), path[:, :-1]], dim=1)
        kids = g.children(parents)  # [E, L, b]
        ex_sib = torch.arange(E, device=path.device)[:, None, None].expand_as(kids).reshape(-1)
        kids = kids.reshape(-1)
        keep = self.live[kids]
        example = torch.cat([ex_beam, ex_sib[keep]])
        node = torch.cat([node_beam, kids[keep]])
        key = torch.unique(example * g.n_nodes + node)  # sorted: example-major, as blocks are
        example, node = torch.div(key, g.n_nodes, rounding_mode="floor"), key % g.n_nodes
        level = g.level_of(node)
        on_path = path[example, level - 1] == node
        return example[~on_path], level[~on_path], node[~on_path]

    def extend(self, model: nn.Module, behaviour_leaves: torch.Tensor, block_node: torch.Tensor,
               positives: torch.Tensor, ahead: Optional[torch.Tensor] = None) -> "BeamBatch":
        """The added samples of a batch whose uniform blocks are ``block_node`` (``[E, block]``,
        the target's ancestor at level ``l`` in column ``positives[l - 1]``). ``ahead``
        (``[E, h]`` leaves of each user's next items, ``-1`` padded) labels them; without it
        they are all 0."""
        path = block_node[:, positives]
        example, level, node = self.samples(model, behaviour_leaves, path)
        L = self.geometry.leaf_level
        rows = example * L + (level - 1) if self.hierarchical else example
        if ahead is None:
            label = torch.zeros(len(node), device=node.device)
        else:
            anc = self.geometry.ancestors(ahead[example], level[:, None])  # [S, h]; padding stays -1
            label = (anc == node[:, None]).any(dim=1).to(torch.float32)
        return BeamBatch(example, level, node, rows, path, label)

    def loss(self, batch: "BeamBatch", block_label: torch.Tensor, positives: torch.Tensor,
             logits: torch.Tensor) -> torch.Tensor:
        """The weighted mean binary cross-entropy of ``logits``: the uniform blocks' pairs
        (weight 1) followed by the added ones (``batch.label``, weight ``weight``). With
        ``optimal_targets`` the ancestors' labels are the estimated optimal pseudo targets,
        computed from these logits."""
        n = block_label.numel()
        if self.optimal_targets:
            scores = logits.detach()
            best = sibling_best(batch.example, batch.level, batch.node, scores[n:], batch.path, self.geometry)
            targets = optimal_pseudo_targets(scores[:n].view(block_label.shape)[:, positives], best)
            block_label = block_label.clone()
            block_label[:, positives] = targets.to(block_label.dtype)
        block = F.binary_cross_entropy_with_logits(logits[:n], block_label.reshape(-1), reduction="sum")
        added = F.binary_cross_entropy_with_logits(logits[n:], batch.label.to(logits.dtype), reduction="sum")
        return (block + self.weight * added) / (n + self.weight * (len(logits) - n))


@dataclass
class BeamBatch:
    """The added samples of one batch: example (row of the batch), level, node, the pair's
    row in :func:`jtm_rs.training.user_levels`'s output and its label; ``path`` the targets'
    ancestors (``[E, L]``)."""

    example: torch.Tensor
    level: torch.Tensor
    node: torch.Tensor
    rows: torch.Tensor
    path: torch.Tensor
    label: torch.Tensor


def sibling_best(example: torch.Tensor, level: torch.Tensor, node: torch.Tensor, logits: torch.Tensor,
                 path: torch.Tensor, geometry: TreeGeometry) -> torch.Tensor:
    """``[E, L]``: per example and level, the highest logit among the scored siblings of the
    target's ancestor there (``-inf`` where none was scored)."""
    E, L = path.shape
    parent_on_path = torch.where(level >= 2, path[example, (level - 2).clamp(min=0)], 0)
    sibling = geometry.parent(node) == parent_on_path
    best = torch.full((E * L,), float("-inf"), dtype=logits.dtype, device=logits.device)
    slot = example[sibling] * L + (level[sibling] - 1)
    best.scatter_reduce_(0, slot, logits[sibling], reduce="amax")
    return best.view(E, L)


def optimal_pseudo_targets(path_logits: torch.Tensor, best_sibling: torch.Tensor) -> torch.Tensor:
    """OTM's estimated optimal pseudo targets of the target's ancestors, ``[E, L]`` (entry
    ``l - 1``: level ``l``): 1 where greedy descent with the model from the ancestor at ``l``
    reaches the target, i.e. the ancestor beats its siblings at every level below ``l``; the
    target's leaf is always 1."""
    wins = (path_logits >= best_sibling).to(path_logits.dtype)  # [E, L]: ancestor at l beats its siblings
    below = torch.ones_like(wins)
    # below[:, l-1] = prod_{m > l} wins[:, m-1]: a reversed cumulative product, shifted by one.
    below[:, :-1] = torch.flip(torch.cumprod(torch.flip(wins[:, 1:], [1]), dim=1), [1])
    return below


__all__ = ["BeamBatch", "BeamSampler", "optimal_pseudo_targets", "sibling_best"]

"""Training the model with the tree fixed (paper Algorithm 1, first step) and the objective.

Per epoch, the Rust generator draws per-level samples for the epoch's examples (the target's
ancestor with label 1 and uniform live negatives with label 0, docs/design.md §4.2); the loss is
binary cross-entropy with logits over those samples (paper eq. 2 with sampled negatives).
Batches are gathered with tensor indexing on the model's device — no DataLoader, so no worker
processes (rayon does not survive ``fork``) and no per-example Python.
"""

from __future__ import annotations

import functools
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ._core import Tree
from .beam_training import BeamSampler
from .config import LOSSES
from .distributed.training import shard_batches
from .exceptions import InvalidInputError
from .features import BehaviourLeaves
from .fused_mlp import fused_leaves_bce_loss
from .geometry import TreeGeometry
from .model import pair_bce_loss, score_pairs
from .optimizers import CombinedOptimizer, LazyAdam, make_optimizer  # noqa: F401 (their old home)
from .samples import generate_samples
from .threads import ThreadTuner, tuned


def default_negatives(leaf_level: int, total: int, arity: int = 2) -> List[int]:
    """Negatives per level ``0..leaf_level``, summing to about ``total``, growing linearly with
    the level (more near the leaves, as TDM's configs do) and capped by the nodes a level has."""
    if total < 0:
        raise InvalidInputError(f"the number of negatives must be non-negative, got {total}")
    levels = np.arange(leaf_level + 1, dtype=float)
    raw = np.ceil(total * levels / max(levels.sum(), 1.0))
    cap = np.power(float(arity), levels) - 1
    return [int(x) for x in np.minimum(raw, cap)]


def negatives_per_level(negatives, tree: Tree) -> List[int]:
    """``JTMConfig.negatives`` for ``tree``: a total spread over its levels, or the list given."""
    return default_negatives(tree.leaf_level, negatives, tree.arity) if isinstance(negatives, int) else list(negatives)


def user_levels(geometry: TreeGeometry, leaves: torch.Tensor, hierarchical: bool) -> torch.Tensor:
    """Each user's representation at every level 1..L, ``[E, W] -> [E * L, W]`` (row
    ``e * L + (l - 1)`` is user ``e`` at level ``l``); without the hierarchical representation
    the leaves themselves, ``[E, W]``."""
    if not hierarchical:
        return leaves
    levels = torch.arange(1, geometry.leaf_level + 1, device=leaves.device)
    return geometry.ancestors(leaves[:, None, :], levels[None, :, None]).flatten(0, 1)


def pair_rows(n_users: int, levels: torch.Tensor, leaf_level: int, hierarchical: bool) -> torch.Tensor:
    """Row of :func:`user_levels`'s output for each pair of ``n_users`` blocks whose pairs sit at
    ``levels`` (the same pattern in every block)."""
    users = torch.arange(n_users, device=levels.device)[:, None]
    if not hierarchical:
        return users.expand(n_users, len(levels)).reshape(-1)
    return (users * leaf_level + (levels[None, :] - 1)).reshape(-1)


def train_epoch(
    model: nn.Module,
    optimizer,
    tree: Tree,
    leaves: BehaviourLeaves,
    examples: np.ndarray,
    negatives: Sequence[int],
    *,
    hierarchical: bool,
    batch_size: int,
    seed: int,
    progress: Optional[tqdm] = None,
    threads: Optional[ThreadTuner] = None,
    shard: Optional[Tuple[int, int]] = None,
    scorer: Optional[Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = None,
    beam: Optional[BeamSampler] = None,
    loss: str = "bce",
    start_level: int = 1,
) -> float:
    """One pass, in the order given, over the samples of ``examples`` (rows of
    ``leaves.windows``), at the levels ``start_level..leaf_level``; returns the mean loss per sample (per example and level with the
    softmax loss). With ``threads``, torch's thread
    count is chosen by timing the first batches (:class:`ThreadTuner`). Example ``e`` draws its
    negatives from random stream ``e``. ``scorer(behaviours, rows, nodes)`` gives the logits
    and ``scorer(behaviours, rows, nodes, labels)`` the mean BCE loss (default: the model's
    :func:`~jtm_rs.model.score_pairs`, and its ``pair_bce_loss``, fused on the CPU).

    With ``shard=(rank, world)`` (distributed training, with the DDP-wrapped
    :class:`~jtm_rs.distributed.PairScorer` as ``scorer``), this rank trains on its part of
    every batch (:func:`~jtm_rs.distributed.shard_batches`): the ranks' steps are the
    one-process steps, each example with its one-process samples.

    The generator gives every example one block of samples with the same level pattern, so a
    batch is whole examples (about ``batch_size`` samples) and each user representation is
    built once per level (:meth:`JTMModel.score_pairs`), not once per sample.

    With ``beam`` (beam-aware training, :mod:`jtm_rs.beam_training`), each batch also trains
    on the nodes a beam search with the current model expands for its examples.

    ``loss``: ``"bce"`` (paper eq. 2 with sampled negatives: binary cross-entropy per sample) or
    ``"softmax"`` (:func:`level_softmax_loss`: per example and level, cross-entropy of the
    target's ancestor against that level's negatives).
    """
    if loss not in LOSSES:
        raise InvalidInputError(f"loss must be one of {LOSSES}, got {loss!r}")
    if loss == "softmax" and beam is not None:
        raise InvalidInputError("the per-level softmax loss does not combine with beam-aware training")
    device = leaves.device
    geometry = TreeGeometry.of(tree, device)
    targets = leaves.windows.targets_at(examples)
    # One example's samples give the block every example shares: its size and level pattern.
    first = generate_samples(tree, targets[:1], negatives, start_level=start_level, seed=seed)
    block = len(first.node)
    level = torch.from_numpy(first.level).to(device)
    positives = torch.from_numpy(np.flatnonzero(first.label == 1)).to(device)  # one per level 1..L
    groups = level_groups(first.level).to(device) if loss == "softmax" else None
    per_batch = max(1, batch_size // max(block, 1))
    streams = np.arange(len(examples))  # each example's random stream: its place in the epoch
    if shard is not None:
        per_batch, streams = shard_batches(len(examples), per_batch, *shard)
        examples, targets = examples[streams], targets[streams]
    n_ex = len(examples)
    # Samples are generated a chunk of whole batches at a time (the chunk's examples keep their
    # random streams, so the epoch is the same): a whole epoch's samples at once were 28 bytes
    # x ~90 per example, 3.7 GB for 1.5 M examples of a 10^6-item tree.
    chunk = per_batch * max(1, SAMPLE_CHUNK_EXAMPLES // per_batch)
    ex_t = torch.from_numpy(np.ascontiguousarray(examples, dtype=np.int64)).to(device)
    model.train()
    total, count = 0.0, 0
    if threads is not None:
        threads.start()
    try:
        for c0 in range(0, n_ex, chunk):
            node, label = _samples(tree, targets[c0 : c0 + chunk], negatives, seed, streams[c0 : c0 + chunk],
                                   start_level)
            n_c = min(chunk, n_ex - c0)
            node = torch.from_numpy(node).to(device).view(n_c, block)
            label = torch.from_numpy(label).to(device).view(n_c, block)
            for lo in range(0, n_c, per_batch):
                ex = ex_t[c0 + lo : c0 + lo + per_batch]
                with tuned(threads, len(ex) * block):
                    blocks = _Blocks(node[lo : lo + per_batch], label[lo : lo + per_batch], level, positives, groups)
                    value, n_pairs = _train_batch(scorer, optimizer, geometry, leaves, ex, blocks,
                                                  hierarchical, beam, model)
                total += value * n_pairs
                count += n_pairs
                if progress is not None:
                    progress.update(n_pairs)
                    progress.set_postfix(loss=f"{total / count:.4f}", refresh=False)
    finally:
        if threads is not None:
            threads.finish()
    return total / max(count, 1)


#: Examples whose samples are generated at once by :func:`train_epoch` (~90 samples of 28
#: bytes each on a 20-level tree: ~100 MB).
SAMPLE_CHUNK_EXAMPLES = 1 << 15


def _samples(tree: Tree, targets: np.ndarray, negatives: Sequence[int], seed: int,
             streams: np.ndarray, start_level: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """``(node, label)`` of the samples of ``targets``, target ``i`` drawing from random stream
    ``streams[i]``: one generator call per run of consecutive streams (one run in a
    one-process epoch; a rank's parts of the batches in a distributed one)."""
    runs = np.split(np.arange(len(streams)), np.flatnonzero(np.diff(streams) != 1) + 1)
    parts = [generate_samples(tree, targets[r], negatives, start_level=start_level, seed=seed,
                              first_stream=int(streams[r[0]]))
             for r in runs if len(r)]
    if len(parts) == 1:
        return parts[0].node, parts[0].label
    return np.concatenate([p.node for p in parts]), np.concatenate([p.label for p in parts])


class _Blocks(NamedTuple):
    """A batch's uniform samples: ``node``/``label`` ``[E, block]``, each block's ``level``
    pattern, the columns of its ``positives`` (the target's ancestors, levels 1..L) and, for
    the softmax loss, its columns by level (:func:`level_groups`)."""

    node: torch.Tensor
    label: torch.Tensor
    level: torch.Tensor
    positives: torch.Tensor
    groups: Optional[torch.Tensor] = None


def level_groups(level: np.ndarray) -> torch.Tensor:
    """``[levels, C]``: row ``r`` holds the block's columns at its ``r``-th level from the top
    (the target's ancestor first, as the generator writes it), ``-1`` padded to the widest."""
    levels = np.unique(level)
    width = max((int((level == lv).sum()) for lv in levels), default=0)
    out = np.full((len(levels), width), -1, dtype=np.int64)
    for row, lv in enumerate(levels):
        cols = np.flatnonzero(level == lv)
        out[row, : len(cols)] = cols
    return torch.from_numpy(out)


def level_softmax_loss(logits: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Mean over examples and levels of ``−log softmax`` of the target's ancestor among its
    level's samples: ``logits [E, block]``, ``groups [L, C]`` (:func:`level_groups`; column 0
    of each row the ancestor). Beam search ranks the nodes of a level against each other; this
    trains that ranking rather than each node's probability on its own."""
    pad = groups < 0
    g = logits[:, groups.clamp(min=0)]  # [E, L, C]
    g = g.masked_fill(pad, float("-inf"))
    return (torch.logsumexp(g, dim=2) - g[:, :, 0]).mean()


def _train_batch(scorer, optimizer, geometry: TreeGeometry, leaves: BehaviourLeaves, ex: torch.Tensor,
                 blocks: _Blocks, hierarchical: bool, beam: Optional[BeamSampler] = None,
                 model: Optional[nn.Module] = None) -> Tuple[float, int]:
    """One optimiser step on the samples of examples ``ex``: ``(mean loss, samples)``."""
    behaviour_leaves = leaves(ex)
    rows = pair_rows(len(ex), blocks.level, geometry.leaf_level, hierarchical)
    nodes = blocks.node.reshape(-1)
    if blocks.groups is None and beam is None and scorer is None and model is not None:
        # The default model's fused step, its indices built from the leaves in Rust.
        levels = (geometry.arity, geometry.leaf_level) if hierarchical else None
        loss = fused_leaves_bce_loss(model, behaviour_leaves, levels, rows, nodes, blocks.label.reshape(-1))
        if loss is not None:
            return _step(optimizer, loss, len(rows))
    beh = user_levels(geometry, behaviour_leaves, hierarchical)
    added = None
    if beam is not None:
        ahead = leaves.targets_ahead(ex, beam.targets) if beam.targets > 1 else None
        added = beam.extend(model, behaviour_leaves, blocks.node, blocks.positives, ahead)
        rows, nodes = torch.cat([rows, added.rows]), torch.cat([nodes, added.node])
    if blocks.groups is None and added is None:
        # The plain loss: the model's own (a fused forward and backward where it has one).
        loss = (scorer or functools.partial(pair_bce_loss, model))(beh, rows, nodes, blocks.label.reshape(-1))
    else:
        logits = (scorer or functools.partial(score_pairs, model))(beh, rows, nodes)
        if blocks.groups is not None:
            loss = level_softmax_loss(logits.view(blocks.node.shape), blocks.groups)
        elif added is None:
            loss = F.binary_cross_entropy_with_logits(logits, blocks.label.reshape(-1))
        else:
            loss = beam.loss(added, blocks.label, blocks.positives, logits)
    return _step(optimizer, loss, len(rows))


def _step(optimizer, loss: torch.Tensor, n_pairs: int) -> Tuple[float, int]:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    value = float(loss.detach())
    if not np.isfinite(value):
        raise FloatingPointError("training loss became NaN or infinite; lower the learning rate")
    return value, n_pairs


@torch.no_grad()
def objective_by_level(
    model: nn.Module,
    tree: Tree,
    leaves: BehaviourLeaves,
    examples: np.ndarray,
    *,
    hierarchical: bool,
    batch_size: int = 1 << 15,
) -> np.ndarray:
    """Paper eq. 2 per example, level by level: ``[L]``, entry ``j - 1`` the mean over
    ``examples`` of ``−log p̂(b_j(π(c)) | u)`` (a fixed sample, so values are comparable across
    joint iterations). The targets' paths come from ``tree``, the user features from ``leaves``
    (which may be under another tree). Split by level it shows which of Algorithm 2's segments
    gained or lost."""
    model.eval()
    device = leaves.device
    geometry = TreeGeometry.of(tree, device)
    L = tree.leaf_level
    target_leaf = torch.from_numpy(tree.leaves(leaves.windows.targets_at(examples))).to(device)
    ex = torch.from_numpy(np.ascontiguousarray(examples, dtype=np.int64)).to(device)
    levels = torch.arange(1, L + 1, device=device)
    total = torch.zeros(L, dtype=torch.float64, device=device)
    per_batch = max(1, batch_size // max(L, 1))
    for lo in range(0, len(ex), per_batch):
        rows_ex = ex[lo : lo + per_batch]
        beh = user_levels(geometry, leaves(rows_ex), hierarchical)
        path = geometry.ancestors(target_leaf[lo : lo + per_batch, None], levels[None, :]).reshape(-1)
        rows = pair_rows(len(rows_ex), levels, L, hierarchical)
        logp = F.logsigmoid(score_pairs(model, beh, rows, path).double()).view(-1, L)
        total -= logp.sum(0)
    return (total / max(len(ex), 1)).cpu().numpy()

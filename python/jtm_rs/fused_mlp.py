"""The MLP in Rust: the training step's forward and backward with the loss in one pass
(``rust/fused_mlp.rs``), and scoring, forward only (``rust/mlp_scores.rs``).

torch runs each operation over a whole batch of pairs (~8 000 a step) before the next, so
activations leave the cache between their write and their read, and the window means'
``embedding_bag`` sorts in its backward. :func:`fused_bce_loss` takes the batch's distinct
embedding rows (from the leaves: :func:`fused_leaves_bce_loss`, ``rust/batch_bags.rs``) and
runs everything after — the users' window means and their
share of the first layer (``rust/window_bags.rs``), each pair's node share, the PReLUs, the
layers, the mean binary cross-entropy and the backward of all of it, the pairs chunk by chunk
in cache — returning the loss with its gradients attached for autograd. Same loss and
gradients as torch's ops, up to rounding; 1.17–1.22x torch's examples/s at 10^6 items
(docs/scale.md, "The fused pass").
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ._core import ScoringLayers, batch_bags, linear_layer, mlp_bce_step, user_share_rows


def mlp_parameters(mlp: nn.Sequential) -> Optional[List[torch.Tensor]]:
    """The parameters the fused step needs from ``mlp`` — the weights and biases of its layers
    after the first, then its PReLU slopes — or ``None`` where it is not the shape the step
    computes: ``Linear, PReLU, (Linear, PReLU)*, Linear`` with one-slope PReLUs, one logit."""
    layers = list(mlp)
    if len(layers) < 3 or len(layers) % 2 == 0:
        return None
    linears, acts = layers[0::2], layers[1::2]
    if not all(isinstance(x, nn.Linear) for x in linears):
        return None
    if not all(isinstance(a, nn.PReLU) and a.weight.numel() == 1 for a in acts):
        return None
    if linears[-1].out_features != 1:
        return None
    params: List[torch.Tensor] = []
    for lin in linears[1:]:
        params += [lin.weight, lin.bias]
    return params + [a.weight for a in acts]


def fused_bce_loss(model: nn.Module, unique: torch.Tensor, bag_rows: torch.Tensor, bag_offsets: torch.Tensor,
                   rows: torch.Tensor, nodes: torch.Tensor, labels: torch.Tensor,
                   params: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean ``binary_cross_entropy_with_logits`` of pairs ``(rows[p], nodes[p])`` through
    ``model`` (a :class:`~jtm_rs.model.JTMModel`; ``params`` its :func:`mlp_parameters`).

    The batch uses embedding rows ``unique`` (distinct, ascending) of ``model.embedding``.
    User row ``g`` is the means of their rows ``bag_rows`` over its windows (the bags of
    ``embedding_bag(bag_rows, table, bag_offsets, mode="mean")``, one per window); pair ``p``'s
    first pre-activation is ``bias + means[rows[p]] @ w_user.T + table[nodes[p]] @ w_node.T``
    (the first layer's two parts), then ``params``. CPU, float32; the gradients go straight
    to the embedding table (sparse over ``unique`` where the embedding is sparse), the first
    layer and ``params``: autograd sees one operation."""
    embedding, first = model.embedding, model.mlp[0]
    d_user = len(model.window_sizes) * model.embedding_dim
    return _FusedBCE.apply(bag_rows, bag_offsets, rows, nodes, labels.to(torch.float32), unique, d_user,
                           (embedding.sparse, embedding.padding_idx), embedding.weight, first.weight, first.bias,
                           *params)


def fused_leaves_bce_loss(model: nn.Module, leaves: torch.Tensor, levels, rows: torch.Tensor, nodes: torch.Tensor,
                          labels: torch.Tensor) -> Optional[torch.Tensor]:
    """``model.pair_bce_loss`` of a training batch given as its examples' behaviour leaves
    ``[E, W]``: user row ``e * L + l - 1`` is example ``e`` at level ``l`` (``levels=(arity,
    leaf_level)``, the hierarchical representation), or row ``e`` the leaves themselves
    (``levels=None``). The batch's embedding rows and window bags come from one Rust pass
    (``rust/batch_bags.rs``) instead of torch's ancestors, masks and unique; the same rows in
    the same order, so the same loss and gradients. ``None`` where the fused step does not
    apply (:meth:`JTMModel.fused_parameters`)."""
    fused = getattr(model, "fused_parameters", None)
    params = fused(leaves) if fused is not None else None
    if params is None:
        return None
    tree = {} if levels is None else dict(arity=levels[0], leaf_level=levels[1])
    unique, bag_rows, offsets, local_nodes = (
        torch.from_numpy(a) for a in batch_bags(_array(leaves), list(model.window_sizes), _array(nodes),
                                                model.n_nodes, **tree))
    return fused_bce_loss(model, unique, bag_rows, offsets, rows, local_nodes, labels, params)


def _array(t):
    return t.detach().contiguous().numpy() if isinstance(t, torch.Tensor) else np.ascontiguousarray(t)


class ScoringPass:
    """The Rust scoring pass (``rust/mlp_scores.rs``) with an MLP's parameters read once: the
    node table as a numpy view, the first layer's node share ``w_node`` and ``params``
    (:func:`mlp_parameters`) copied and packed for the multiplies once per precision
    (:class:`jtm_rs._core.ScoringLayers`). A beam search scores a dozen levels with the same
    weights; converting and packing them at every call cost about as much as one user's level
    did (``benches/retrieve_latency.py``). The weights must not change while it is in use."""

    def __init__(self, node_rows: torch.Tensor, w_node: torch.Tensor, params: Sequence[torch.Tensor]):
        n_layers = len(params) // 3
        self.node_rows, self.w_node = _array(node_rows), _array(w_node)
        self.weights = [_array(w) for w in params[0 : 2 * n_layers : 2]]
        self.biases = [_array(b) for b in params[1 : 2 * n_layers : 2]]
        self.slopes = [float(s.detach()) for s in params[2 * n_layers :]]
        self._packed: dict = {}

    def scores(self, user_share, rows, nodes, *, node_shares: bool = False, precision: str = "float32",
               n_threads: Optional[int] = None) -> np.ndarray:
        """Each pair's logit (float32 numpy): pair ``p``'s first pre-activation is
        ``user_share[rows[p]] + node_rows[nodes[p]] @ w_node.T`` (or ``+ node_rows[nodes[p]]``
        with ``node_shares=True``), then the layers; tensors or numpy arrays. ``n_threads``
        as the Rust core's (``None``: rayon's pool, every core); a call of fewer than 1 024
        pairs (one user's beam-search level) runs on the calling thread whatever it is."""
        packed = self._packed.get(precision)
        if packed is None:
            packed = ScoringLayers(self.w_node, self.weights, self.biases, self.slopes, precision=precision)
            self._packed[precision] = packed
        return packed.scores(_array(user_share), self.node_rows, _array(rows), _array(nodes), node_shares=node_shares,
                             n_threads=n_threads)


def fused_scores(user_share: torch.Tensor, node_rows: torch.Tensor, rows: torch.Tensor, nodes: torch.Tensor,
                 w_node: torch.Tensor, params: Sequence[torch.Tensor], *, node_shares: bool = False,
                 precision: str = "float32") -> torch.Tensor:
    """Each pair's logit, forward only: pair ``p``'s first pre-activation is
    ``user_share[rows[p]] + node_rows[nodes[p]] @ w_node.T`` (or ``+ node_rows[nodes[p]]`` with
    ``node_shares=True``: shares already multiplied), then ``params`` (:func:`mlp_parameters`).
    The pairs go through the whole MLP a chunk at a time, in cache, on torch's intra-op thread
    count; a pair's score does not depend on the rest of the call. ``precision="bfloat16"``
    rounds the multiplies' operands to bfloat16 and sums in float32 (AVX-512 BF16 where the
    CPU has it). CPU, float32 tensors, no autograd."""
    scores = ScoringPass(node_rows, w_node, params).scores(user_share, rows, nodes, node_shares=node_shares,
                                                          precision=precision, n_threads=torch.get_num_threads())
    return torch.from_numpy(scores)


def fused_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, precision: str = "float32") -> torch.Tensor:
    """``x @ weight.T + bias`` through the scoring pass's multiplies (``precision`` as
    :func:`fused_scores`), each row alike whatever the others. CPU, float32, no autograd."""
    out = linear_layer(_array(x), _array(weight), _array(bias), precision=precision, n_threads=torch.get_num_threads())
    return torch.from_numpy(out)


def fused_user_shares(table: torch.Tensor, behaviours: torch.Tensor, windows: Sequence[int], weight: torch.Tensor,
                      bias: torch.Tensor, precision: str = "float32", levels: Optional[torch.Tensor] = None,
                      arity: int = 2, leaf_level: int = 0) -> torch.Tensor:
    """The first layer's user share of each row of ``behaviours`` (node ids, ``-1`` padded,
    most recent first): the ``windows``' means of their ``table`` rows, times ``weight``, plus
    ``bias``; with ``levels`` (one per row) the behaviours are leaves, each taken as its
    ancestor at the row's level (``rust/user_shares.rs``). CPU, float32, no autograd."""
    out = user_share_rows(
        _array(table), _array(behaviours), list(windows), _array(weight), _array(bias),
        levels=None if levels is None else _array(levels), arity=arity, leaf_level=leaf_level,
        precision=precision, n_threads=torch.get_num_threads(),
    )
    return torch.from_numpy(out)


class _FusedBCE(torch.autograd.Function):
    """Forward computes the loss *and* every gradient (the Rust pass); backward hands them on,
    scaled by the incoming gradient. Nothing is recomputed and no activation is kept; the
    table's gradient is built once over the batch's rows (the embedding lookup and the first
    layer's slices left autograd ~10 % of a step's time, on 2 threads)."""

    @staticmethod
    def forward(ctx, bag_rows, bag_offsets, rows, nodes, labels, unique, d_user, table_kind, weight, first_weight,
                bias, *params):
        n_layers = len(params) // 3  # a weight, a bias and a PReLU slope per layer after the first
        weights, biases = params[0 : 2 * n_layers : 2], params[1 : 2 * n_layers : 2]
        slopes = params[2 * n_layers :]
        loss, (g_table, g_user, g_bias, g_node, g_w, g_b, g_s) = mlp_bce_step(
            _array(weight.index_select(0, unique)), _array(bag_rows), _array(bag_offsets),
            _array(first_weight[:, :d_user]), _array(bias), _array(rows), _array(nodes), _array(labels),
            _array(first_weight[:, d_user:]), [_array(w) for w in weights], [_array(b) for b in biases],
            [float(s) for s in slopes], n_threads=torch.get_num_threads(),
        )
        dtype = weight.dtype
        g_rows, (sparse, padding) = torch.from_numpy(g_table), table_kind
        if padding is not None and len(unique) and int(unique[-1]) == padding % len(weight):  # as embedding's backward
            unique, g_rows = unique[:-1], g_rows[:-1]
        if sparse:  # rows distinct and ascending: coalesced as it is
            g_weight = torch.sparse_coo_tensor(unique[None], g_rows, weight.shape, is_coalesced=True,
                                               check_invariants=False)
        else:
            g_weight = torch.zeros_like(weight).index_add_(0, unique, g_rows)
        grads: list = [g_weight, torch.cat([torch.from_numpy(g_user), torch.from_numpy(g_node)], dim=1),
                       torch.from_numpy(g_bias)]
        for w, b in zip(g_w, g_b):
            grads += [torch.from_numpy(w), torch.from_numpy(b)]
        grads += [torch.tensor([s], dtype=dtype) for s in g_s]
        ctx.grads = grads
        return torch.tensor(loss, dtype=dtype)

    @staticmethod
    def backward(ctx, grad):
        # Dropped from ctx, so that autograd may keep each gradient as it is instead of a copy.
        grads, ctx.grads = ctx.grads, None
        if not bool(grad == 1):
            grads = [g * grad for g in grads]
        return (None,) * 8 + tuple(grads)

"""The MLP in Rust: the training step's forward and backward with the loss in one pass
(``rust/fused_mlp.rs``), and scoring, forward only (``rust/mlp_scores.rs``).

torch runs each operation over a whole batch of pairs (~8 000 a step) before the next, so
activations leave the cache between their write and their read, and the window means'
``embedding_bag`` sorts in its backward. :func:`fused_bce_loss` takes the batch's embedding
rows as torch looked them up and runs everything after — the users' window means and their
share of the first layer (``rust/window_bags.rs``), each pair's node share, the PReLUs, the
layers, the mean binary cross-entropy and the backward of all of it, the pairs chunk by chunk
in cache — returning the loss with its gradients attached for autograd. Same loss and
gradients as torch's ops, up to rounding; 1.17–1.22x torch's examples/s at 10^6 items
(docs/scale.md, "The fused pass").
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import nn

from ._core import linear_layer, mlp_bce_step, mlp_scores, user_share_rows


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


def fused_bce_loss(table: torch.Tensor, bag_rows: torch.Tensor, bag_offsets: torch.Tensor, w_user: torch.Tensor,
                   bias: torch.Tensor, rows: torch.Tensor, nodes: torch.Tensor, labels: torch.Tensor,
                   w_node: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean ``binary_cross_entropy_with_logits`` of pairs ``(rows[p], nodes[p])`` through the model.

    User row ``g`` is the means of ``table[bag_rows]`` over its windows (the bags of
    ``embedding_bag(bag_rows, table, bag_offsets, mode="mean")``, ``windows`` of them per row);
    pair ``p``'s first pre-activation is ``bias + means[rows[p]] @ w_user.T + table[nodes[p]] @
    w_node.T``, then ``params`` (:func:`mlp_parameters`). CPU, float32; gradients flow to
    ``table``, the first layer's three parts and ``params``."""
    return _FusedBCE.apply(bag_rows, bag_offsets, rows, nodes, labels.to(torch.float32), table, w_user, bias, w_node,
                           *params)


def _array(t: torch.Tensor):
    return t.detach().contiguous().numpy()


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
    n_layers = len(params) // 3
    weights, biases = params[0 : 2 * n_layers : 2], params[1 : 2 * n_layers : 2]
    slopes = [float(s.detach()) for s in params[2 * n_layers :]]
    scores = mlp_scores(
        _array(user_share), _array(node_rows), _array(rows), _array(nodes), _array(w_node),
        [_array(w) for w in weights], [_array(b) for b in biases], slopes,
        node_shares=node_shares, precision=precision, n_threads=torch.get_num_threads(),
    )
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
    """Forward computes the loss *and* every gradient (the Rust pass); backward scales them by
    the incoming gradient. Nothing is recomputed and no activation is kept."""

    @staticmethod
    def forward(ctx, bag_rows, bag_offsets, rows, nodes, labels, table, w_user, bias, w_node, *params):
        n_layers = len(params) // 3  # a weight, a bias and a PReLU slope per layer after the first
        weights, biases = params[0 : 2 * n_layers : 2], params[1 : 2 * n_layers : 2]
        slopes = params[2 * n_layers :]
        loss, (g_table, g_user, g_bias, g_node, g_w, g_b, g_s) = mlp_bce_step(
            _array(table), _array(bag_rows), _array(bag_offsets), _array(w_user), _array(bias), _array(rows),
            _array(nodes), _array(labels), _array(w_node), [_array(w) for w in weights], [_array(b) for b in biases],
            [float(s) for s in slopes], n_threads=torch.get_num_threads(),
        )
        dtype = table.dtype
        grads: list = [torch.from_numpy(g) for g in (g_table, g_user, g_bias, g_node)]
        for w, b in zip(g_w, g_b):
            grads += [torch.from_numpy(w), torch.from_numpy(b)]
        grads += [torch.tensor([s], dtype=dtype) for s in g_s]
        ctx.grads = grads
        return torch.tensor(loss, dtype=dtype)

    @staticmethod
    def backward(ctx, grad):
        return (None, None, None, None, None, *(g * grad for g in ctx.grads))

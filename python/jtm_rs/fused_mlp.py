"""The training step's MLP and loss, forward and backward in one Rust pass (``rust/fused_mlp.rs``).

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

from ._core import mlp_bce_step


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

"""The training step's MLP and loss, forward and backward in one Rust pass (``rust/fused_mlp.rs``).

torch runs each layer over a whole batch of pairs before the next, so at ~8 000 pairs a step
every activation leaves the cache between its write and its read: the elementwise work and
the gather of each pair's user share were half of a training step at 10^6 items
(docs/scale.md, "Training throughput"). :func:`fused_bce_loss` takes the first layer's two
shares as torch computed them (the user's once per user, with the bias; the batch's embedding
rows) and runs everything above them — the node share's product, the PReLUs, the layers, the
mean binary cross-entropy and its backward — chunk by chunk in cache, returning the loss with
its gradients attached for autograd. Same loss and gradients as torch's ops, up to rounding.
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


def fused_bce_loss(user_share: torch.Tensor, table: torch.Tensor, rows: torch.Tensor, nodes: torch.Tensor,
                  labels: torch.Tensor, w_node: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean ``binary_cross_entropy_with_logits`` of pairs ``(rows[p], nodes[p])`` through the MLP:
    pair ``p``'s first pre-activation is ``user_share[rows[p]] + table[nodes[p]] @ w_node.T``,
    then ``params`` (:func:`mlp_parameters`). CPU, float32; gradients flow to every tensor
    argument but ``rows``, ``nodes`` and ``labels``."""
    return _FusedBCE.apply(rows, nodes, labels.to(torch.float32), user_share, table, w_node, *params)


def _array(t: torch.Tensor):
    return t.detach().contiguous().numpy()


class _FusedBCE(torch.autograd.Function):
    """Forward computes the loss *and* every gradient (the Rust pass); backward scales them by
    the incoming gradient. Nothing is recomputed and no activation is kept."""

    @staticmethod
    def forward(ctx, rows, nodes, labels, user_share, table, w_node, *params):
        n_layers = len(params) // 3  # a weight, a bias and a PReLU slope per layer after the first
        weights, biases = params[0 : 2 * n_layers : 2], params[1 : 2 * n_layers : 2]
        slopes = params[2 * n_layers :]
        loss, (g_user, g_table, g_node, g_w, g_b, g_s) = mlp_bce_step(
            _array(user_share), _array(table), _array(rows), _array(nodes), _array(labels), _array(w_node),
            [_array(w) for w in weights], [_array(b) for b in biases], [float(s) for s in slopes],
            n_threads=torch.get_num_threads(),
        )
        dtype = user_share.dtype
        grads: list = [torch.from_numpy(g_user), torch.from_numpy(g_table), torch.from_numpy(g_node)]
        for w, b in zip(g_w, g_b):
            grads += [torch.from_numpy(w), torch.from_numpy(b)]
        grads += [torch.tensor([s], dtype=dtype) for s in g_s]
        ctx.grads = grads
        return torch.tensor(loss, dtype=dtype)

    @staticmethod
    def backward(ctx, grad):
        return (None, None, None, *(g * grad for g in ctx.grads))

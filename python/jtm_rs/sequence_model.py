"""A (user, node) scorer no inner product can express: the behaviour sequence encoded by
self-attention, then read by the node.

The user side is SASRec's encoder (:class:`SequenceEncoder`, which
:class:`jtm_rs.two_tower.SASRec` uses too: learned positions, causal Transformer blocks) over the user's behaviours — with the hierarchical
representation (paper §3.3), over their ancestors at the node's level, so each level sees the
sequence at its own granularity. The node then enters *before* the interaction, as in DIN and
TDM's attention model: its embedding is the query of an attention over the encoder's outputs
at every position, and the MLP reads ``[encoder's last output, node-attended output, node,
node ⊙ node-attended]``. The score so depends on the node through a softmax over the sequence
and a non-linear MLP: no user vector and node vector have it as their inner product.

Cost: the sequence is encoded once per row of ``behaviours`` (one example at one level in
training; one user at one level in beam search and tree learning) and shared by all the pairs
of that row; per pair remain the attention read (``T · D``) and the MLP.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

class SequenceEncoder(nn.Module):
    """SASRec's encoder (Kang & McAuley, ICDM 2018), as the paper's code and RecBole's
    ``SASRec`` build it: item embeddings plus learned position embeddings, LayerNorm and
    dropout, then ``blocks`` post-norm Transformer blocks (multi-head attention, a GELU
    feed-forward of ``4 · dim``, residuals, dropout) under a causal mask.

    ``[batch, T]`` ids (oldest first, ``-1`` right-padded, ``T ≤ max_length``) →
    ``[batch, T, dim]``: at each position, the vector of the sequence up to it; padding, after
    the last behaviour, is never seen by a real position."""

    def __init__(self, n_items: int, dim: int = 64, blocks: int = 2, heads: int = 2, max_length: int = 50,
                 dropout: float = 0.5):
        super().__init__()
        self.n_items, self.max_length = n_items, max_length
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=n_items)
        self.position = nn.Embedding(max_length, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout, activation="gelu", batch_first=True,
                                           layer_norm_eps=1e-12)
        self.blocks = nn.TransformerEncoder(layer, blocks, enable_nested_tensor=False)
        self.apply(_init)
        with torch.no_grad():
            self.item.weight[n_items].zero_()

    def item_vectors(self) -> torch.Tensor:
        """``[n_items, dim]``: the item embeddings, which are also the output layer."""
        return self.item.weight[: self.n_items]

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        T = seq.shape[1]
        x = self.item(torch.where(seq >= 0, seq, self.n_items)) + self.position.weight[:T]
        x = self.dropout(self.norm(x))
        causal = nn.Transformer.generate_square_subsequent_mask(T, device=seq.device, dtype=x.dtype)
        return self.blocks(x, mask=causal, is_causal=True)

    def last(self, seq: torch.Tensor) -> torch.Tensor:
        """``[batch, dim]``: the vector at each sequence's last behaviour (the user vector)."""
        h = self(seq)
        last = ((seq >= 0).sum(1) - 1).clamp(min=0)
        return h[torch.arange(len(seq), device=seq.device), last]


def _init(module: nn.Module) -> None:
    # RecBole's and BERT's: N(0, 0.02) weights, zero biases, unit LayerNorm.
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def most_recent_first_to_oldest_first(behaviours: torch.Tensor, max_length: int) -> torch.Tensor:
    """``[G, W]`` ids most recent first, ``-1`` padded at the end → ``[G, T]`` the ``T ≤
    max_length`` most recent, oldest first, right-padded with ``-1`` (the encoder's input)."""
    beh = behaviours[:, :max_length]
    length = (beh >= 0).sum(1)
    width = max(int(length.max()) if len(beh) else 1, 1)
    src = length[:, None] - 1 - torch.arange(width, device=beh.device)[None, :]
    out = torch.gather(beh, 1, src.clamp(min=0)) if beh.shape[1] else beh.new_full((len(beh), width), -1)
    return torch.where(src >= 0, out, torch.full_like(out, -1))


class SequenceNodeModel(nn.Module):
    """``model(behaviours [B, W], nodes [B]) -> logits [B]`` (the :mod:`jtm_rs.model` call
    convention), with ``score_pairs`` encoding each row of behaviours once.

    One embedding table over every node id (the encoder's), for behaviours and scored nodes
    alike, as in :class:`~jtm_rs.model.JTMModel`."""

    def __init__(self, n_nodes: int, dim: int = 32, blocks: int = 1, heads: int = 2, max_length: int = 50,
                 dropout: float = 0.0, hidden: Sequence[int] = (128, 64)):
        super().__init__()
        self.n_nodes, self.max_length, self.dim = n_nodes, max_length, dim
        self.encoder = SequenceEncoder(n_nodes, dim, blocks, heads, max_length, dropout)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        layers: list[nn.Module] = []
        width = 4 * dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.PReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)
        # Rows of up to 1, 2, 4, ... behaviours are encoded together (score_pairs).
        widths = [2**k for k in range(max_length.bit_length()) if 2**k < max_length]
        self.register_buffer("group_widths", torch.tensor(widths, dtype=torch.int64), persistent=False)

    def reset_embeddings(self) -> None:
        """New node embeddings (what a warm start does when the tree changes)."""
        with torch.no_grad():
            nn.init.normal_(self.encoder.item.weight, std=0.02)
            self.encoder.item.weight[self.n_nodes].zero_()

    def _node(self, nodes: torch.Tensor) -> torch.Tensor:
        return self.encoder.item(torch.where(nodes >= 0, nodes, self.n_nodes))

    def forward(self, behaviours: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        return self.score_pairs(behaviours, torch.arange(len(nodes), device=nodes.device), nodes)

    def score_pairs(self, behaviours: torch.Tensor, rows: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """``forward(behaviours[rows], nodes)``: ``[G, W], [P], [P] -> [P]``, each row encoded once.

        Rows are encoded in groups of similar length (up to 1, 2, 4, … behaviours), each at its
        own width: the encoder is causal and padding comes last, so a row's outputs do not
        depend on the width, and short histories (most of them) cost what they hold."""
        seq = most_recent_first_to_oldest_first(behaviours, self.max_length)
        length = (seq >= 0).sum(1)
        group = torch.bucketize(length, self.group_widths.to(length.device))
        pair_group = group.index_select(0, rows)
        local = torch.empty(len(seq), dtype=torch.int64, device=seq.device)
        values, order = [], []
        for k in torch.unique(group).tolist():
            members = (group == k).nonzero().squeeze(1)
            pairs = (pair_group == k).nonzero().squeeze(1)
            if not len(pairs):
                continue
            width = max(int(length.index_select(0, members).max()), 1)
            local[members] = torch.arange(len(members), device=seq.device)
            values.append(self._score_group(seq.index_select(0, members)[:, :width],
                                            local.index_select(0, rows.index_select(0, pairs)), nodes.index_select(0, pairs)))
            order.append(pairs)
        if not values:
            return seq.new_zeros(0, dtype=self.encoder.item.weight.dtype)
        out = torch.cat(values)
        return out.new_zeros(len(rows)).index_copy(0, torch.cat(order), out)

    def _score_group(self, seq: torch.Tensor, rows: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        states = self.encoder(seq)  # [G, T, D]
        real = seq >= 0
        g = len(seq)
        last = states[torch.arange(g, device=seq.device), (real.sum(1) - 1).clamp(min=0)]
        n = self._node(nodes)
        q = self.query(n) / math.sqrt(self.dim)
        # Each row's pairs side by side ([G, C] slots), so that the node-query attention is two
        # batched matrix products per row instead of a [pairs, T, D] gather per pair.
        order = torch.argsort(rows, stable=True)
        counts = torch.bincount(rows, minlength=g)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.empty_like(rows)
        slot[order] = torch.arange(len(rows), device=rows.device) - starts.index_select(0, rows.index_select(0, order))
        width = int(counts.max()) if len(rows) else 0
        queries = q.new_zeros(g, width, self.dim).index_put((rows, slot), q)
        logits = torch.bmm(queries, self.key(states).transpose(1, 2)).masked_fill(~real[:, None, :], float("-inf"))
        # A row with no behaviour attends to nothing: its read is zeros, not NaN.
        weights = torch.nan_to_num(F.softmax(logits, dim=2), nan=0.0)
        read = torch.bmm(weights, states)[rows, slot]  # [P, D]
        x = torch.cat([last.index_select(0, rows), read, n, read * n], dim=1)
        return self.mlp(x).squeeze(1)


__all__ = ["SequenceEncoder", "SequenceNodeModel", "most_recent_first_to_oldest_first"]

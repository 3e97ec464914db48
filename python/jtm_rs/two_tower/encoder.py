"""SASRec's user tower (Kang & McAuley, ICDM 2018): causal self-attention over the behaviour
sequence, and the sequences it reads.

The encoder follows the reference implementations (the paper's code and RecBole's ``SASRec``):
item embeddings plus learned position embeddings, LayerNorm and dropout, then ``blocks``
post-norm Transformer blocks (multi-head attention, a GELU feed-forward of ``4 · dim``, residuals,
dropout) under a causal mask. Sequences are oldest first and right-padded, so position ``t``
sees behaviours ``0..t`` only, padding never; the output at the last behaviour is the user
vector, and the output at every position is that prefix's user vector, which is how training
predicts every next item of a sequence in one pass.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from torch import nn

from ..data import PAD, Interactions


class SequenceEncoder(nn.Module):
    """``[batch, T]`` item ids (oldest first, ``PAD`` right-padded, ``T ≤ max_length``) →
    ``[batch, T, dim]``: at each position, the vector of the sequence up to it."""

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


def oldest_first(features: np.ndarray, max_length: int, n_items: int) -> np.ndarray:
    """Behaviour matrices as a :class:`~jtm_rs.data.Split` holds them (most recent first,
    ``PAD`` padded) → the encoder's input: the ``max_length`` most recent known items, oldest
    first, right-padded. Ids the encoder does not know are dropped."""
    f = np.asarray(features, dtype=np.int64)
    valid = (f >= 0) & (f < n_items)
    f = np.take_along_axis(f, np.argsort(~valid, axis=1, kind="stable"), axis=1)[:, :max_length]
    length = np.minimum(valid.sum(1), max_length)
    width = max(int(length.max(initial=0)), 1)
    src = length[:, None] - 1 - np.arange(width)[None, :]
    out = np.take_along_axis(f, np.clip(src, 0, None), axis=1) if f.shape[1] else np.full((len(f), width), PAD)
    return np.where(src >= 0, out, PAD)


def training_sequences(train: Interactions, max_length: int) -> Tuple[np.ndarray, np.ndarray]:
    """Each training user's behaviours cut, from the newest back, into pieces of at most
    ``max_length + 1``: ``(inputs, targets)``, both ``int64[n_pieces, max_length]``, right-padded
    with ``PAD``; ``targets[:, t]`` is the item after ``inputs[:, t]``. Every behaviour but a
    user's first is a target exactly once."""
    starts = train.user_starts()
    ends = []
    lo = []
    for s, e in zip(starts[:-1], starts[1:]):
        stop = int(e)
        while stop - int(s) >= 2:  # a piece needs an input and a target
            begin = max(int(s), stop - max_length - 1)
            ends.append(stop)
            lo.append(begin)
            stop = begin + 1  # the piece's first item is the next piece's last target
    ends, lo = np.asarray(ends, np.int64), np.asarray(lo, np.int64)
    t = np.arange(max_length)[None, :]
    inp = lo[:, None] + t
    ok = inp + 1 < ends[:, None]
    items = train.item.astype(np.int64)
    inputs = np.where(ok, items[np.where(ok, inp, 0)], PAD)
    targets = np.where(ok, items[np.where(ok, inp + 1, 0)], PAD)
    return inputs, targets


__all__ = ["SequenceEncoder", "oldest_first", "training_sequences"]

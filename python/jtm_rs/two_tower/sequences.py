"""The sequences SASRec reads: behaviour matrices turned oldest first, and training users'
sequences cut into pieces whose every position predicts the next item (the encoder,
:class:`jtm_rs.sequence_model.SequenceEncoder`, is causal, so the output at position ``t`` is
the user vector of the prefix up to ``t``)."""

from __future__ import annotations

from typing import Tuple

import numpy as np

from ..data import PAD, Interactions


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


__all__ = ["oldest_first", "training_sequences"]

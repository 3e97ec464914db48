"""User histories in the data's own ids -> the internal feature matrix every method reads.

The matrix is ``int64[n_users, width]``: internal item ids, most recent first, ``PAD`` padded
(the layout of :attr:`jtm_rs.data.EvaluationUsers.features`). Items a fitted method does not
know raise :class:`UnknownItemError` or are dropped, in this one place.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from .data import PAD
from .exceptions import InvalidInputError, UnknownItemError
from .ids import IdMap

ON_UNKNOWN = ("raise", "ignore")


def encode_behaviours(
    behaviours,
    item_ids: Optional[IdMap],
    known: Callable[[np.ndarray], np.ndarray],
    width: int,
    *,
    on_unknown: str = "raise",
    pad=PAD,
) -> np.ndarray:
    """``behaviours``: a list with one sequence of item ids per user in time order (oldest
    first, any length), or an array ``[n_users, W]`` most recent first, padded with ``pad``.
    ``item_ids`` maps the data's ids to internal ones (None: they are internal already);
    ``known(internal ids)`` says which the method can use."""
    check_on_unknown(on_unknown)
    if isinstance(behaviours, (list, tuple)):
        feats = np.full((len(behaviours), width), PAD, dtype=object)
        real = np.zeros(feats.shape, dtype=bool)
        for r, seq in enumerate(behaviours):
            recent = list(seq)[::-1][:width]
            feats[r, : len(recent)] = recent
            real[r, : len(recent)] = True
    else:
        feats = np.asarray(behaviours)
        if feats.ndim != 2:
            raise InvalidInputError(
                f"behaviours must be a 2-D array [n_users, W] (most recent first, padded) or a list "
                f"of per-user sequences, got shape {feats.shape}"
            )
        real = feats != pad
    if item_ids is None:
        internal = np.where(real, feats, PAD).astype(np.int64)
        found = real & known(internal)
    else:
        internal = np.full(feats.shape, PAD, dtype=np.int64)
        internal[real] = item_ids.encode(feats[real], unknown="ignore")
        # The map may know more than the method (items retired from a JTM's tree).
        found = (internal != PAD) & known(internal)
    unknown = real & ~found
    if unknown.any() and on_unknown == "raise":
        ids = np.unique(feats[unknown].astype(str) if feats.dtype == object else feats[unknown])
        raise_unknown(ids, "the model")
    out = np.where(found, internal, PAD)[:, :width]
    if out.shape[1] < width:  # models read exactly `width` behaviour columns
        out = np.pad(out, ((0, 0), (0, width - out.shape[1])), constant_values=PAD)
    return out


def history_items(behaviours, item_ids: Optional[IdMap], known: Callable[[np.ndarray], np.ndarray], pad=PAD) -> np.ndarray:
    """Every item of each user's whole history (as :func:`encode_behaviours` takes it), in
    internal ids, ``PAD`` padded; unknown ones dropped."""
    lists = isinstance(behaviours, (list, tuple))
    width = max((len(h) for h in behaviours), default=0) if lists else np.shape(behaviours)[-1]
    return encode_behaviours(behaviours, item_ids, known, max(int(width), 1), on_unknown="ignore", pad=pad)


def drop_unknown(features: np.ndarray, known: Callable[[np.ndarray], np.ndarray], on_unknown: str, what: str) -> np.ndarray:
    """An internal feature matrix (a copy, int64) with the items ``known`` rejects raised
    about or replaced by ``PAD``."""
    check_on_unknown(on_unknown)
    beh = np.asarray(features)
    if beh.ndim != 2:
        raise InvalidInputError(f"behaviours must be a 2-D array [n_users, W] (most recent first, -1 padded), got shape {beh.shape}")
    beh = beh.astype(np.int64, copy=True)
    real = beh != PAD
    unknown = real & ~known(beh)
    if unknown.any():
        if on_unknown == "raise":
            raise_unknown(np.unique(beh[unknown]), what)
        beh[unknown] = PAD
    return beh


def check_on_unknown(on_unknown: str) -> None:
    if on_unknown not in ON_UNKNOWN:
        raise InvalidInputError(f"on_unknown must be 'raise' or 'ignore', got {on_unknown!r}")


def raise_unknown(ids: np.ndarray, what: str) -> None:
    raise UnknownItemError(
        f"{len(ids)} behaviour item(s) unknown to {what}, e.g. {ids[:5].tolist()} "
        "(pass on_unknown='ignore' to drop them)"
    )

"""Id mapping: the user's ids (any int64 or string) <-> contiguous internal ints ``0..n-1``.

Public data sets name users and items by strings (Amazon ASINs, hashes) or by sparse, huge or
negative integers. The tree, the model's embedding tables and the padding convention
(``PAD = -1``) all want dense non-negative ints, so every loader maps ids through an
:class:`IdMap` and every user-facing output maps them back. An ``IdMap`` is saved next to a
model without pickle (a ``.npz`` of a plain int64 or unicode array).

A fitted map is sorted; a model that goes on with new items appends them
(:meth:`IdMap.extend`), so the ids of items it knew never change and the map is then sorted
only up to where the appended ids begin: lookups go through a sorting permutation.
"""

from __future__ import annotations

from os import PathLike
from typing import Union

import numpy as np

from .exceptions import InvalidInputError, UnknownItemError


class IdMap:
    """Distinct original ids; the internal id of ``ids[k]`` is ``k``.

    ``ids`` is ``int64`` (integer ids) or a numpy unicode array (string ids), sorted unless ids
    were appended by :meth:`extend`.
    """

    __slots__ = ("ids", "_order", "_sorted")

    def __init__(self, ids: np.ndarray):
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise InvalidInputError(f"an IdMap needs one-dimensional ids, got shape {ids.shape}")
        if ids.dtype.kind in "iu":
            ids = ids.astype(np.int64, copy=False)
        elif ids.dtype.kind == "O":
            ids = ids.astype(str)
        elif ids.dtype.kind != "U":
            raise InvalidInputError(f"ids must be integers or strings, got dtype {ids.dtype}")
        self.ids = ids
        #: ``ids[_order]`` is sorted; None when ``ids`` is (every map not extended).
        self._order = None if len(ids) < 2 or np.all(ids[1:] > ids[:-1]) else np.argsort(ids, kind="stable")
        self._sorted = ids if self._order is None else ids[self._order]
        if self._order is not None and not np.all(self._sorted[1:] > self._sorted[:-1]):
            raise InvalidInputError("IdMap ids must be distinct")

    @classmethod
    def fit(cls, values) -> "tuple[IdMap, np.ndarray]":
        """The map of the distinct ``values`` and the internal id (``int64``) of every value."""
        values = np.asarray(values)
        if values.dtype.kind == "O":
            values = values.astype(str)
        ids, inverse = np.unique(values, return_inverse=True)
        return cls(ids), inverse.astype(np.int64).reshape(-1)

    def extend(self, values) -> "tuple[IdMap, np.ndarray]":
        """A map that also knows the ``values`` it does not, appended in order of first
        appearance (internal ids ``len(self)``, ``len(self) + 1``, …; the known ones keep
        theirs), and the internal id of every value. Values of the other kind (strings
        against integers) are refused."""
        v = np.asarray(values)
        if v.dtype.kind == "O":
            v = v.astype(str)
        if v.size and (v.dtype.kind in "iu") != self.is_int:
            raise InvalidInputError(
                f"these ids are {'integers' if v.dtype.kind in 'iu' else 'strings'} but the model's are "
                f"{'integers' if self.is_int else 'strings'}")
        v = self._coerce(v).reshape(-1)
        unseen = v[~self.contains(v)]
        fresh, first = np.unique(unseen, return_index=True)
        fresh = fresh[np.argsort(first, kind="stable")]
        grown = IdMap(np.concatenate([self.ids, fresh.astype(self.ids.dtype)])) if len(fresh) else self
        return grown, grown.encode(v)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        kind = "int" if self.is_int else "str"
        return f"IdMap({len(self)} {kind} ids)"

    def __eq__(self, other) -> bool:
        return isinstance(other, IdMap) and self.ids.dtype.kind == other.ids.dtype.kind and np.array_equal(self.ids, other.ids)

    @property
    def is_int(self) -> bool:
        return self.ids.dtype.kind == "i"

    def _coerce(self, values) -> np.ndarray:
        v = np.asarray(values)
        if self.is_int:
            if v.dtype.kind in "iu":
                return v.astype(np.int64, copy=False)
            if v.dtype.kind in "UO" and v.size:
                try:
                    return v.astype(np.int64)
                except (ValueError, OverflowError):
                    raise UnknownItemError(f"ids must be integers for this map, got e.g. {v.reshape(-1)[:3].tolist()}") from None
            return v.astype(np.int64)
        return v.astype(str)

    def contains(self, values) -> np.ndarray:
        """Boolean mask: which ``values`` the map knows."""
        v = self._coerce(values)
        if len(self.ids) == 0:
            return np.zeros(v.shape, dtype=bool)
        pos = np.minimum(np.searchsorted(self._sorted, v), len(self.ids) - 1)
        return self._sorted[pos] == v

    def encode(self, values, *, unknown: str = "raise", what: str = "id") -> np.ndarray:
        """Internal ids of ``values`` (any shape). ``unknown="raise"`` raises
        :class:`UnknownItemError` naming the first unknown ids; ``"ignore"`` gives ``-1``."""
        v = self._coerce(values)
        pos = np.searchsorted(self._sorted, v) if len(self.ids) else np.zeros(v.shape, dtype=np.int64)
        pos = np.minimum(pos, max(len(self.ids) - 1, 0))
        known = (self._sorted[pos] == v) if len(self.ids) else np.zeros(v.shape, dtype=bool)
        if self._order is not None:
            pos = self._order[pos]
        if not known.all():
            if unknown == "raise":
                bad = np.unique(v[~known])
                raise UnknownItemError(f"{len(bad)} unknown {what}(s), e.g. {bad[:5].tolist()}")
            if unknown != "ignore":
                raise InvalidInputError(f"unknown must be 'raise' or 'ignore', got {unknown!r}")
        return np.where(known, pos, -1).astype(np.int64)

    def decode(self, internal) -> np.ndarray:
        """Original ids of internal ids (any shape); ``-1`` (an empty slot) stays ``-1`` for int
        maps and becomes ``""`` for string maps."""
        a = np.asarray(internal, dtype=np.int64)
        if a.size and (a.max() >= len(self.ids) or a.min() < -1):
            raise InvalidInputError(f"internal ids must lie in [-1, {len(self.ids)}), got {a.min()}..{a.max()}")
        out = self.ids[np.maximum(a, 0)] if len(self.ids) else np.full(a.shape, -1, dtype=np.int64)
        if (a < 0).any():
            out = out.copy()
            out[a < 0] = -1 if self.is_int else ""
        return out

    # --- persistence (no pickle) ----------------------------------------------------------------

    def save(self, path: Union[str, PathLike]) -> None:
        with open(path, "wb") as f:
            np.savez(f, ids=self.ids)

    @classmethod
    def load(cls, path: Union[str, PathLike]) -> "IdMap":
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(z["ids"])
        except (ValueError, KeyError, OSError) as e:
            if isinstance(e, FileNotFoundError):
                raise
            raise InvalidInputError(f"{path}: not a saved IdMap ({e})") from None


__all__ = ["IdMap"]

"""User-behaviour data, the paper's split protocol and training windows (docs/design.md §4.6).

Everything is held in flat numpy arrays sorted by (user, timestamp); training windows and
evaluation features are views computed from positions into those arrays, so a dataset of
100 M behaviours needs no per-example copy of its 69 behaviours.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from os import PathLike
from typing import Dict, Optional, Union

import numpy as np

from .exceptions import InvalidInputError
from .ids import IdMap
from .load_report import LoadReport

#: Behaviours before the target that the model sees (paper: 69, in 10 time windows).
MAX_BEHAVIOURS = 69
#: Padding id in behaviour matrices (never a valid item id in a feature matrix).
PAD = -1


def _int_column(values, name: str) -> np.ndarray:
    """``values`` checked as integer ids, as int32 where every id fits (internal ids always do
    below 2^31 users or items: the behaviour table's id columns take 4 bytes per behaviour
    each instead of 8), else int64. One conversion at most."""
    a = np.asarray(values)
    if a.ndim != 1:
        raise InvalidInputError(f"{name} must be one-dimensional, got shape {a.shape}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise InvalidInputError(f"{name} must hold integer ids (found NaN, infinity or a fraction)")
    elif a.dtype.kind not in "iub" and a.size:
        raise InvalidInputError(f"{name} must hold integer ids, got dtype {a.dtype}")
    if a.dtype == np.int32:
        return a
    small = np.iinfo(np.int32)
    if a.size == 0 or (a.min() >= small.min and a.max() <= small.max):
        return a.astype(np.int32)
    return a.astype(np.int64, copy=False)


def _sorted_by_user_time(user: np.ndarray, ts: np.ndarray, block: int = 1 << 22) -> bool:
    """Whether rows are already in (user, timestamp) order: vectorised passes over blocks that
    overlap by a row (whole-column temporaries were 2 GB at 10^8 rows), no sort."""
    for lo in range(0, max(len(user) - 1, 0), block):
        u, t = user[lo : lo + block + 1], ts[lo : lo + block + 1]
        du = np.diff(u)
        if not ((du >= 0).all() and (t[1:][du == 0] >= t[:-1][du == 0]).all()):
            return False
    return True


@dataclass(frozen=True)
class Interactions:
    """Time-ordered user behaviours: ``user[i]`` acted on ``item[i]`` at ``timestamp[i]``.

    Rows are sorted by (user, timestamp) on construction (stable, so equal timestamps keep
    their input order). ``category`` (one label per row, constant per item) is optional and
    only used to build the paper's initial tree.

    ``user`` and ``item`` are *internal* ids: non-negative ints (``-1`` is the padding of
    behaviour matrices, so a negative item id is refused). Data with string, negative or
    sparse ids goes through :meth:`from_ids` or a loader of :mod:`jtm_rs.datasets`, which map
    them to ``0..n-1`` and keep the maps in ``user_ids`` / ``item_ids`` (carried through
    :meth:`split` and saved with a fitted model, so outputs speak the original ids).
    """

    user: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray
    category: Optional[np.ndarray] = None
    user_ids: Optional[IdMap] = field(default=None, compare=False)
    item_ids: Optional[IdMap] = field(default=None, compare=False)
    #: What the loader read and dropped, if loaded from a file.
    report: Optional[LoadReport] = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        user = _int_column(self.user, "user")
        item = _int_column(self.item, "item")
        ts = np.asarray(self.timestamp)
        if ts.ndim != 1 or ts.dtype.kind not in "iuf":
            raise InvalidInputError("timestamp must be a one-dimensional numeric array")
        if ts.dtype.kind == "f" and not np.all(np.isfinite(ts)):
            raise InvalidInputError("timestamp holds NaN or infinity")
        cat = None if self.category is None else _int_column(self.category, "category")
        if item.size and item.min() < 0:
            raise InvalidInputError(
                f"item ids must be non-negative ({PAD} pads behaviour matrices), found {item.min()}: "
                "use Interactions.from_ids(...) or a jtm_rs.datasets loader to map any ids"
            )
        n = len(user)
        for name, col in (("item", item), ("timestamp", ts), ("category", cat)):
            if col is not None and len(col) != n:
                raise InvalidInputError(f"{name} has {len(col)} rows, user has {n}")
        if not _sorted_by_user_time(user, ts):
            order = np.lexsort((ts, user))
            user, item, ts = user[order], item[order], ts[order]
            cat = None if cat is None else cat[order]
        object.__setattr__(self, "user", user)
        object.__setattr__(self, "item", item)
        object.__setattr__(self, "timestamp", ts)
        object.__setattr__(self, "category", cat)
        for name, m in (("user", self.user_ids), ("item", self.item_ids)):
            col = user if name == "user" else item
            if m is not None and col.size and (col.min() < 0 or col.max() >= len(m)):
                raise InvalidInputError(f"{name} holds internal ids outside its IdMap of {len(m)} ids")

    @classmethod
    def from_ids(cls, users, items, timestamps, categories=None) -> "Interactions":
        """Behaviours with any ids (int64 of any sign and size, or strings): users, items and
        categories are mapped to contiguous internal ids, the user and item maps kept."""
        user_ids, u = IdMap.fit(users)
        item_ids, i = IdMap.fit(items)
        c = None if categories is None else IdMap.fit(categories)[1]
        return cls(u, i, np.asarray(timestamps), c, user_ids=user_ids, item_ids=item_ids)

    def _with_rows(self, keep: np.ndarray) -> "Interactions":
        """The same data set (maps included) restricted to the rows ``keep``."""
        return dataclasses.replace(
            self,
            user=self.user[keep],
            item=self.item[keep],
            timestamp=self.timestamp[keep],
            category=None if self.category is None else self.category[keep],
        )

    def __len__(self) -> int:
        return len(self.user)

    def __repr__(self) -> str:
        extra = ", categories" if self.category is not None else ""
        extra += ", ids mapped" if self.item_ids is not None else ""
        return f"Interactions(rows={len(self)}, users={self.n_users}, items={self.n_items}{extra})"

    @property
    def users(self) -> np.ndarray:
        """Distinct user ids, sorted."""
        return np.unique(self.user)

    @property
    def items(self) -> np.ndarray:
        """Distinct item ids, sorted: the corpus a tree is built over."""
        return np.unique(self.item)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def user_starts(self) -> np.ndarray:
        """``starts[k]:starts[k+1]`` are the rows of the k-th user (length ``n_users + 1``)."""
        if len(self) == 0:
            return np.zeros(1, dtype=np.int64)
        change = np.flatnonzero(self.user[1:] != self.user[:-1]) + 1
        return np.concatenate(([0], change, [len(self)])).astype(np.int64)

    def item_categories(self) -> Dict[str, np.ndarray]:
        """``{"items", "categories"}``: each distinct item with the category of its first row."""
        if self.category is None:
            raise InvalidInputError("this dataset has no category column")
        items, first = np.unique(self.item, return_index=True)
        return {"items": items, "categories": self.category[first]}

    def select_users(self, users: np.ndarray) -> "Interactions":
        return self._with_rows(np.isin(self.user, users))

    def select_items(self, items: np.ndarray, *, invert: bool = False) -> "Interactions":
        """The rows on ``items`` (``invert``: the rows on every other item)."""
        return self._with_rows(np.isin(self.item, items, invert=invert))

    def filter_users(self, min_interactions: int = 10) -> "Interactions":
        """Drop users with fewer than ``min_interactions`` behaviours (paper: 10)."""
        users, counts = np.unique(self.user, return_counts=True)
        return self.select_users(users[counts >= min_interactions])

    def split(
        self,
        validation: Union[int, float] = 0.1,
        test: Union[int, float] = 0.1,
        seed: int = 0,
    ) -> "Split":
        """Disjoint random user split (paper protocol). ``validation`` / ``test`` are user
        counts (int) or fractions of the users (float < 1); the rest are training users."""
        users = self.users
        n = len(users)

        def count(x, name):
            c = int(round(x * n)) if isinstance(x, float) and x < 1 else int(x)
            if c < 0:
                raise InvalidInputError(f"{name} must be non-negative, got {x}")
            return c

        n_valid, n_test = count(validation, "validation"), count(test, "test")
        if n_valid + n_test > n:
            raise InvalidInputError(f"{n_valid} validation + {n_test} test users, but only {n} users")
        perm = np.random.default_rng(seed).permutation(users)
        return Split(
            train=self.select_users(perm[n_valid + n_test :]),
            validation=self.select_users(perm[:n_valid]),
            test=self.select_users(perm[n_valid : n_valid + n_test]),
        )

    def training_windows(self, max_behaviours: int = MAX_BEHAVIOURS) -> "Windows":
        """One example per behaviour that has at least one behaviour before it: the target is
        that item, the features the (up to ``max_behaviours``) items before it."""
        starts = self.user_starts()
        first = np.zeros(len(self), dtype=bool)
        first[starts[:-1]] = True
        pos = np.flatnonzero(~first)
        row_start = np.repeat(starts[:-1], np.diff(starts))[pos]
        return Windows(self.item, pos, row_start, max_behaviours)

    def evaluation_users(self, max_behaviours: int = MAX_BEHAVIOURS) -> "EvaluationUsers":
        """Paper protocol: the first half of each user's time-ordered behaviours are the
        features (the last ``max_behaviours`` of them), the distinct items of the second half
        the ground truth. Users with fewer than 2 behaviours are skipped."""
        starts = self.user_starts()
        lengths = np.diff(starts)
        keep = lengths >= 2
        s, n = starts[:-1][keep], lengths[keep]
        half = s + n // 2  # features: [s, half), truth: [half, s + n)
        feats = Windows(self.item, half, s, max_behaviours).behaviours(np.arange(len(half)))
        # Ground truth: distinct (user, item) pairs of the second halves, by one sort.
        count = s + n - half
        user_idx = np.repeat(np.arange(len(s)), count)
        items = self.item[np.repeat(half - np.cumsum(count) + count, count) + np.arange(count.sum())]
        order = np.lexsort((items, user_idx))
        user_idx, items = user_idx[order], items[order]
        first = np.ones(len(items), dtype=bool)
        first[1:] = (user_idx[1:] != user_idx[:-1]) | (items[1:] != items[:-1])
        indptr = np.concatenate(([0], np.cumsum(np.bincount(user_idx[first], minlength=len(s)))))
        return EvaluationUsers(self.user[s], feats, indptr.astype(np.int64), items[first].astype(np.int64))

    # --- files -------------------------------------------------------------------------------

    def to_csv(self, path: Union[str, PathLike]) -> None:
        """Writes ``user,item,timestamp[,category]`` with a header, in the original ids."""
        import pyarrow as pa
        import pyarrow.csv as pacsv

        users = self.user_ids.decode(self.user) if self.user_ids is not None else self.user
        items = self.item_ids.decode(self.item) if self.item_ids is not None else self.item
        cols = {"user": users, "item": items, "timestamp": self.timestamp}
        if self.category is not None:
            cols["category"] = self.category
        pacsv.write_csv(pa.table(cols), str(path), pacsv.WriteOptions(quoting_style="needed"))


@dataclass(frozen=True)
class Split:
    """Users split disjointly into train / validation / test."""

    train: Interactions
    validation: Interactions
    test: Interactions

    def __repr__(self) -> str:
        part = lambda x: f"{x.n_users} users/{len(x)} rows"  # noqa: E731
        return f"Split(train={part(self.train)}, validation={part(self.validation)}, test={part(self.test)})"


class Windows:
    """Training examples as positions into one item column: example ``r`` has target
    ``items[pos[r]]`` and behaviours ``items[pos[r]-1], items[pos[r]-2], …`` (most recent
    first) down to ``row_start[r]``, at most ``max_behaviours`` of them."""

    def __init__(self, items: np.ndarray, pos: np.ndarray, row_start: np.ndarray, max_behaviours: int):
        if max_behaviours < 1:
            raise InvalidInputError(f"max_behaviours must be at least 1, got {max_behaviours}")
        self.items = items
        # Places in `items`: int32 where they fit (at 78 M examples the two are 1.25 GB as int64).
        places = np.int32 if len(items) <= np.iinfo(np.int32).max else np.int64
        self.pos = np.asarray(pos, dtype=places)
        self.row_start = np.asarray(row_start, dtype=places)
        self.max_behaviours = max_behaviours
        self._row_end: Optional[np.ndarray] = None  # row_ends(), computed when first asked

    def __len__(self) -> int:
        return len(self.pos)

    def __repr__(self) -> str:
        return f"Windows(examples={len(self)}, max_behaviours={self.max_behaviours})"

    @property
    def targets(self) -> np.ndarray:
        return self.items[self.pos]

    def targets_at(self, rows) -> np.ndarray:
        """The targets of examples ``rows`` only (``targets`` builds all of them: 78 M ids at
        the UserBehavior scale, for a training's 20 000)."""
        return self.items[self.pos[rows]]

    def row_ends(self) -> np.ndarray:
        """``int64[len(self)]``: where each example's user row ends (exclusive), as far as the
        examples show it: examples of one row share ``row_start`` and the row ends after its
        last example (all of a row's behaviours but its first, as
        :meth:`Interactions.training_windows` builds them). Computed once, when first asked."""
        if self._row_end is None and len(self.pos) == 0:
            self._row_end = np.zeros(0, dtype=np.int64)
        if self._row_end is None:
            order = np.argsort(self.pos, kind="stable")
            starts = self.row_start[order]
            last = np.append(starts[1:] != starts[:-1], True)
            group = np.cumsum(np.append(True, last[:-1])) - 1
            end = np.empty(len(order), dtype=np.int64)
            end[order] = (self.pos[order][last] + 1)[group]
            self._row_end = end
        return self._row_end

    def targets_ahead(self, rows: np.ndarray, h: int) -> np.ndarray:
        """``int64[len(rows), h]`` positions into ``items`` of each example's target and the
        ``h - 1`` items after it in the user's row, ``-1`` past the row's end."""
        offs = self.pos[rows, None] + np.arange(h)
        return np.where(offs < self.row_ends()[rows, None], offs, -1)

    def behaviour_positions(self, rows: np.ndarray) -> np.ndarray:
        """``int64[len(rows), max_behaviours]`` positions into ``items``, ``-1`` for padding."""
        offs = self.pos[rows, None] - np.arange(1, self.max_behaviours + 1)
        return np.where(offs >= self.row_start[rows, None], offs, -1)

    def behaviours(self, rows: np.ndarray) -> np.ndarray:
        """``int64[len(rows), max_behaviours]`` item ids, most recent first, ``PAD`` padded."""
        p = self.behaviour_positions(rows)
        return np.where(p >= 0, self.items[np.maximum(p, 0)], PAD).astype(np.int64, copy=False)


@dataclass(frozen=True)
class EvaluationUsers:
    """Validation/test users: ``features[u]`` (item ids, most recent first, ``PAD`` padded)
    and ground truth ``truth_items[truth_indptr[u]:truth_indptr[u+1]]`` (distinct items)."""

    users: np.ndarray
    features: np.ndarray
    truth_indptr: np.ndarray
    truth_items: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def __repr__(self) -> str:
        return f"EvaluationUsers(users={len(self)}, truth_items={len(self.truth_items)}, window={self.features.shape[1]})"

    def truth(self, u: int) -> np.ndarray:
        return self.truth_items[self.truth_indptr[u] : self.truth_indptr[u + 1]]

    def subset(self, idx: np.ndarray) -> "EvaluationUsers":
        """The users at positions ``idx``, in that order."""
        parts = [self.truth(int(u)) for u in idx]
        indptr = np.concatenate(([0], np.cumsum([len(p) for p in parts]))).astype(np.int64)
        items = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return EvaluationUsers(self.users[idx], self.features[idx], indptr, items)

    def sample(self, n: Optional[int], seed: int) -> "EvaluationUsers":
        """At most ``n`` users drawn without replacement (seeded), in their original order;
        all of them when ``n`` is None or not smaller."""
        if n is None or len(self) <= n:
            return self
        return self.subset(np.sort(np.random.default_rng(seed).choice(len(self), n, replace=False)))

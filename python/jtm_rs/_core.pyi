"""Type stub for the native module built from rust/ (see rust/bindings/)."""

from os import PathLike
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt

__version__: str

_Ids = npt.ArrayLike

class Tree:
    """A b-ary tree with heap-ordered node ids and items on its leaves. Immutable."""

    @staticmethod
    def from_categories(
        items: _Ids, categories: _Ids, arity: int = 2, leaf_level: Optional[int] = None, seed: int = 0
    ) -> Tree: ...
    @staticmethod
    def random(items: _Ids, arity: int = 2, leaf_level: Optional[int] = None, seed: int = 0) -> Tree: ...
    @staticmethod
    def from_order(order: _Ids, arity: int = 2, leaf_level: Optional[int] = None) -> Tree: ...
    @staticmethod
    def from_embeddings(
        items: _Ids,
        embeddings: npt.ArrayLike,
        arity: int = 2,
        leaf_level: Optional[int] = None,
        iterations: int = 10,
        seed: int = 0,
        n_threads: Optional[int] = None,
    ) -> Tree: ...
    @staticmethod
    def kmeans_leaf_order(
        items: _Ids,
        embeddings: npt.ArrayLike,
        arity: int = 2,
        leaf_level: Optional[int] = None,
        iterations: int = 10,
        seed: int = 0,
        part: int = 0,
        parts: int = 1,
        n_threads: Optional[int] = None,
    ) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32], int]: ...
    @staticmethod
    def from_leaves(items: _Ids, leaves: _Ids, arity: int = 2, leaf_level: Optional[int] = None) -> Tree: ...
    @property
    def arity(self) -> int: ...
    @property
    def leaf_level(self) -> int: ...
    @property
    def n_levels(self) -> int: ...
    @property
    def n_items(self) -> int: ...
    @property
    def n_nodes(self) -> int: ...
    @property
    def items(self) -> npt.NDArray[np.int64]: ...
    def __len__(self) -> int: ...
    def __eq__(self, other: object) -> bool: ...
    def capacity(self, level: int) -> int: ...
    def leaves(self, items: _Ids) -> npt.NDArray[np.int64]: ...
    def contains(self, items: _Ids) -> npt.NDArray[np.bool_]: ...
    def items_at(self, leaves: _Ids, default: int = -1) -> npt.NDArray[np.int64]: ...
    def ancestors(self, nodes: _Ids, level: int) -> npt.NDArray[np.int64]: ...
    def item_ancestors(self, items: _Ids, level: int) -> npt.NDArray[np.int64]: ...
    def hierarchical_features(
        self, behaviours: _Ids, level: int, padding: Optional[int] = -1
    ) -> npt.NDArray[np.int64]: ...
    def level_of(self, nodes: _Ids) -> npt.NDArray[np.int64]: ...
    def is_live(self, nodes: _Ids) -> npt.NDArray[np.bool_]: ...
    def live_nodes(self, level: int) -> npt.NDArray[np.int64]: ...
    def children(self, nodes: _Ids) -> npt.NDArray[np.int64]: ...
    def descendants(self, nodes: _Ids, level: int) -> npt.NDArray[np.int64]: ...
    def validate(self) -> None: ...
    def save(self, path: str | PathLike[str]) -> None: ...
    @classmethod
    def load(cls, path: str | PathLike[str]) -> Tree: ...
    def to_bytes(self) -> bytes: ...
    @staticmethod
    def from_bytes(data: bytes) -> Tree: ...
    def generate_samples(
        self,
        targets: _Ids,
        negatives: _Ids,
        start_level: int = 1,
        seed: int = 0,
        n_threads: Optional[int] = None,
        first_stream: int = 0,
    ) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]: ...
    def beam_search(
        self,
        score_fn: Callable[[npt.NDArray[np.int64], npt.NDArray[np.int64], int], npt.NDArray[np.floating]],
        n_users: int,
        k: int,
        m: Optional[int] = None,
        n_threads: Optional[int] = None,
    ) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]: ...

def learn_tree(
    weights_fn: Callable[[npt.NDArray[np.int64], npt.NDArray[np.int64], int, int], npt.NDArray[np.floating]],
    tree: Tree,
    d: int,
    max_candidates: Optional[int] = None,
    chunk_size: Optional[int] = None,
    n_threads: Optional[int] = None,
    progress: Optional[Callable[[int, int, int, int], object]] = None,
    rebalance: str = "regret",
    improve_passes: int = 8,
    keep_better: bool = True,
    stay_bonus: Optional[npt.ArrayLike] = None,
) -> Tree: ...

def batch_bags(
    leaves: npt.NDArray[np.int64],
    windows: list[int],
    nodes: npt.NDArray[np.int64],
    n_nodes: int,
    arity: int | None = None,
    leaf_level: int | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``(unique, bag_rows, offsets, local_nodes)`` of a training batch: its distinct embedding
    rows (ascending; ``n_nodes`` for padding), each real behaviour's place among them in bags of
    one user row and window, the bags' offsets, and each sampled node's place. ``leaves`` is
    ``[E, W]`` behaviour leaves (most recent first, ``-1`` padded); with ``arity`` and
    ``leaf_level`` example ``e`` is user rows ``e * leaf_level + l - 1``, its behaviours the
    ancestors at levels ``l = 1..leaf_level``."""

def item_samples(
    targets: npt.NDArray[np.int32] | npt.NDArray[np.int64],
    perm: npt.NDArray[np.int64],
    cap: int | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``(keys, indptr, rows, counts)``: the example rows of each target item (``keys``
    ascending), in the order of ``perm`` (a permutation of the rows), the first ``cap`` of each
    (``None``: all); item ``keys[k]`` keeps ``rows[indptr[k]:indptr[k+1]]`` of its ``counts[k]``."""

def lazy_adam_rows(
    param: npt.NDArray[np.float32],
    exp_avg: npt.NDArray[np.float32],
    exp_avg_sq: npt.NDArray[np.float32],
    rows: npt.NDArray[np.int64],
    grad: npt.NDArray[np.float32],
    beta1: float,
    beta2: float,
    eps: float,
    step_size: float,
    n_threads: int | None = None,
) -> None:
    """Lazy Adam on rows ``rows`` (strictly increasing) of the ``[n, dim]`` table ``param`` and
    its moments, in place (C-contiguous float32); ``grad`` is ``[len(rows), dim]``."""

def mlp_bce_step(
    table: npt.NDArray[np.float32],
    bag_rows: npt.NDArray[np.int64],
    bag_offsets: npt.NDArray[np.int64],
    w_user: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32],
    rows: npt.NDArray[np.int64],
    nodes: npt.NDArray[np.int64],
    labels: npt.NDArray[np.float32],
    w_node: npt.NDArray[np.float32],
    weights: Sequence[npt.NDArray[np.float32]],
    biases: Sequence[npt.NDArray[np.float32]],
    slopes: Sequence[float],
    n_threads: Optional[int] = None,
) -> Tuple[
    float,
    Tuple[
        npt.NDArray[np.float32],
        npt.NDArray[np.float32],
        npt.NDArray[np.float32],
        npt.NDArray[np.float32],
        List[npt.NDArray[np.float32]],
        List[npt.NDArray[np.float32]],
        List[float],
    ],
]:
    """The mean BCE loss of pairs ``(rows[p], nodes[p])`` through the model and its gradients
    ``(table, w_user, bias, w_node, weights, biases, slopes)``. User row ``g`` is the window
    means of ``table[bag_rows]`` (bags as ``torch.nn.functional.embedding_bag``'s
    ``bag_offsets``, ``w_user.shape[1] / table.shape[1]`` windows per row); a pair's first
    pre-activation is ``bias + means[rows[p]] @ w_user.T + table[nodes[p]] @ w_node.T``, then a
    PReLU after every layer but the last. All arrays C-contiguous (``jtm_rs.fused_mlp``)."""

def example_leaves(
    leaf: npt.NDArray[np.int64],
    pos: npt.NDArray[np.integer],
    row_start: npt.NDArray[np.integer],
    examples: npt.NDArray[np.int64],
    width: int,
) -> npt.NDArray[np.int64]:
    """``[len(examples), width]`` behaviour leaves, most recent first, ``-1`` padded: example
    ``e``'s are ``leaf[pos[e] - 1]``, ``leaf[pos[e] - 2]``, … down to ``row_start[e]``
    (``pos`` and ``row_start`` both int32 or both int64; ``jtm_rs.data.Windows``)."""

def unique_ranks(ids: npt.NDArray[np.int64], n_ids: int) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``(unique, inverse)`` of ``ids`` in ``0..n_ids``, as ``torch.unique(ids,
    return_inverse=True)``: from a bitmap of the id range, not a sort."""

class ScoringLayers:
    """An MLP copied and packed for the scoring pass's multiplies once: the first layer's node
    share ``w_node`` ``[hidden, dim]``, the layers after it (``weights[j]`` ``[out, in]``,
    ``biases[j]``) and the PReLU slopes (one after every layer but the last); the operands in
    ``precision`` ("float32" or "bfloat16", sums in float32). All arrays C-contiguous."""

    def __init__(
        self,
        w_node: npt.NDArray[np.float32],
        weights: Sequence[npt.NDArray[np.float32]],
        biases: Sequence[npt.NDArray[np.float32]],
        slopes: Sequence[float],
        precision: str = "float32",
    ) -> None: ...
    def scores(
        self,
        user_share: npt.NDArray[np.float32],
        node_rows: npt.NDArray[np.float32],
        rows: npt.NDArray[np.int64],
        nodes: npt.NDArray[np.int64],
        node_shares: bool = False,
        n_threads: Optional[int] = None,
    ) -> npt.NDArray[np.float32]:
        """Each pair's logit through the MLP, forward only: row ``rows[p]`` of ``user_share``
        (the first layer's user share, bias included) against row ``nodes[p]`` of
        ``node_rows`` (node embeddings times ``w_node``, or node shares with
        ``node_shares=True``). Below 1 024 pairs on the calling thread; else on ``n_threads``
        (``None``: rayon's pool)."""

def bfloat16_native() -> bool:
    """Whether this CPU multiplies bfloat16 natively in the scoring pass (AVX-512 BF16)."""

def bfloat16_faster() -> bool:
    """Whether bfloat16 scoring beats float32 on this CPU (what ``"auto"`` precisions choose):
    native bfloat16 on AMX tiles, or AVX-512 BF16 on CPUs other than Intel's (there it does no
    more multiplies than float32)."""

def user_share_rows(
    table: npt.NDArray[np.float32],
    behaviours: npt.NDArray[np.int64],
    windows: Sequence[int],
    weight: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32],
    levels: Optional[npt.NDArray[np.int64]] = None,
    arity: int = 2,
    leaf_level: int = 0,
    precision: str = "float32",
    n_threads: Optional[int] = None,
) -> npt.NDArray[np.float32]:
    """The first layer's user share of each row of ``behaviours`` (node ids, ``-1`` padding):
    the time windows' means of their ``table`` rows times ``weight``, plus ``bias``; with
    ``levels`` (one per row) the behaviours are leaves, each taken as its ancestor at the
    row's level of the heap-ordered tree (``arity``, ``leaf_level``)."""

def linear_layer(
    x: npt.NDArray[np.float32],
    weight: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32],
    precision: str = "float32",
    n_threads: Optional[int] = None,
) -> npt.NDArray[np.float32]:
    """``x @ weight.T + bias`` with the multiplies' operands in ``precision`` ("float32" or
    "bfloat16", sums in float32); a row's result does not depend on the other rows."""

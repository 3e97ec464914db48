"""SASRec as a two-tower recommender: the user vector is the causal self-attention encoder's
output at the last behaviour (:class:`~jtm_rs.sequence_model.SequenceEncoder`), the item vectors are its input embeddings, and
retrieval is a nearest-neighbour search by inner product (:mod:`.index`: exact, or faiss HNSW).

Training predicts every next item of each training user's sequence in one pass, with a full
softmax over the catalogue (the reference implementations' cross-entropy), or, for large
catalogues, a sampled softmax: ``negatives`` items per batch drawn by training frequency, every
logit corrected by ``-log Q`` of its item (Yi et al., RecSys 2019), accidental hits masked.
Passes stop when validation recall@M has not improved for ``patience`` passes; the best
pass's weights are kept. Nothing is chosen on test users.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..baselines import TorchRecommender
from ..data import PAD, Interactions, Split
from ..exceptions import InvalidInputError
from ..threads import uses_torch_threads
from ..sequence_model import SequenceEncoder
from .sequences import oldest_first, training_sequences
from .index import INDEXES, ExactIndex, HNSWIndex, make_index

#: ``loss="auto"`` takes the full softmax up to this many items, the sampled one beyond.
FULL_SOFTMAX_MAX_ITEMS = 200_000


class SASRec(TorchRecommender):
    """Self-attentive sequential recommendation, retrieved by nearest-neighbour search.

    ``dim``, ``blocks``, ``heads``, ``max_length``, ``dropout``: the encoder (the paper's and
    RecBole's defaults). ``loss``: ``"full"``, ``"sampled"`` or ``"auto"`` (full up to
    :data:`FULL_SOFTMAX_MAX_ITEMS` items); ``negatives``: the sampled softmax's items per batch.
    ``index``: ``"exact"`` or ``"hnsw"``, built after fitting (``index_options`` go to it: for
    HNSW ``m``, ``ef_construction``, ``ef_search``). Passes, patience, batch size (sequences),
    learning rate, validation users and the device are :class:`TorchRecommender`'s options."""

    name = "sasrec"

    def __init__(self, dim: int = 64, blocks: int = 2, heads: int = 2, max_length: int = 50, dropout: float = 0.5,
                 loss: str = "auto", negatives: int = 4096, index: str = "exact",
                 index_options: Optional[Dict[str, int]] = None, *, max_epochs: int = 200, patience: int = 10,
                 batch_size: int = 128, learning_rate: float = 1e-3, **kwargs):
        super().__init__(embedding_dim=dim, hidden=(), max_epochs=max_epochs, patience=patience,
                         batch_size=batch_size, learning_rate=learning_rate, **kwargs)
        if loss not in ("auto", "full", "sampled"):
            raise InvalidInputError(f"loss must be 'auto', 'full' or 'sampled', got {loss!r}")
        if index not in INDEXES:
            raise InvalidInputError(f"unknown index {index!r}; known: {', '.join(INDEXES)}")
        if min(dim, blocks, heads, max_length, negatives) < 1 or dim % heads:
            raise InvalidInputError("dim, blocks, heads, max_length and negatives must be positive, "
                                    "and dim a multiple of heads")
        if not 0.0 <= dropout < 1.0:
            raise InvalidInputError("dropout must be in [0, 1)")
        self.blocks, self.heads, self.max_length, self.dropout = blocks, heads, max_length, dropout
        self.loss, self.negatives = loss, negatives
        self.index_kind, self.index_options = index, dict(index_options or {})
        #: The nearest-neighbour index over the fitted item vectors (None while training).
        self.index = None
        #: The internal ids of the items the model knows, sorted; row ``r`` of the item vectors
        #: and of the index is item ``catalogue[r]``.
        self.catalogue = np.zeros(0, np.int64)

    # --- fitting -------------------------------------------------------------------------------

    @uses_torch_threads
    def fit(self, split: Split, *, show_progress: bool = True, callback=None) -> "SASRec":
        rng = np.random.default_rng(self.seed)
        torch.manual_seed(self.seed)
        self.item_ids = split.train.item_ids
        # The catalogue: every item of the data (as JTM's tree holds them), as rows 0..n-1.
        self.catalogue = np.unique(np.concatenate([p.item for p in (split.train, split.validation, split.test)])).astype(np.int64)
        self.n_items = n_items = len(self.catalogue)
        inputs, targets = (self._rows(x) for x in training_sequences(split.train, self.max_length))
        if not len(inputs):
            raise InvalidInputError("no training examples: the training users have no behaviour with one before it")
        self.model = model = self._encoder().to(self.device)
        self.index = None
        inputs_t, targets_t = (torch.from_numpy(x).to(self.device) for x in (inputs, targets))
        full = self.loss == "full" or (self.loss == "auto" and n_items <= FULL_SOFTMAX_MAX_ITEMS)
        if full:
            def batch_loss(b: torch.Tensor) -> torch.Tensor:
                h, y = self._positions(model, inputs_t[b], targets_t[b])
                return F.cross_entropy(h @ model.item_vectors().T, y)
        else:
            counts = np.bincount(self._rows(split.train.item), minlength=n_items).astype(np.float64) + 1.0
            q = counts / counts.sum()
            log_q = torch.from_numpy(np.log(q * self.negatives).astype(np.float32)).to(self.device)
            sampler = torch.from_numpy(q)

            def batch_loss(b: torch.Tensor) -> torch.Tensor:
                h, y = self._positions(model, inputs_t[b], targets_t[b])
                neg = torch.multinomial(sampler, self.negatives, replacement=True).to(self.device)
                items = model.item_vectors()
                pos = (h * items[y]).sum(1, keepdim=True) - log_q[y, None]
                neg_logit = (h @ items[neg].T - log_q[neg]).masked_fill(neg[None, :] == y[:, None], float("-inf"))
                logits = torch.cat([pos, neg_logit], 1)
                return F.cross_entropy(logits, torch.zeros(len(y), dtype=torch.long, device=self.device))

        self.train_model(split, model, len(inputs), batch_loss, rng, show_progress)
        self.build_index()
        return self

    @staticmethod
    def _positions(model: SequenceEncoder, seq: torch.Tensor, target: torch.Tensor):
        """The encoder's vectors at the positions that have a target, and those targets."""
        width = int((seq >= 0).sum(1).max())
        seq, target = seq[:, :width], target[:, :width]
        h = model(seq)
        keep = target >= 0
        return h[keep], target[keep]

    def _rows(self, items: np.ndarray) -> np.ndarray:
        """Internal item ids → rows of the catalogue; ``PAD`` and unknown ids → ``PAD``."""
        items = np.asarray(items, dtype=np.int64)
        pos = np.clip(np.searchsorted(self.catalogue, items), 0, max(len(self.catalogue) - 1, 0))
        hit = (items >= 0) & (self.catalogue[pos] == items) if len(self.catalogue) else np.zeros(items.shape, bool)
        return np.where(hit, pos, PAD)

    def known_items(self, items: np.ndarray) -> np.ndarray:
        return self._rows(items) >= 0

    def _encoder(self) -> SequenceEncoder:
        return SequenceEncoder(self.n_items, self.embedding_dim, self.blocks, self.heads, self.max_length, self.dropout)

    # --- retrieval -----------------------------------------------------------------------------

    def build_index(self, kind: Optional[str] = None, **options) -> None:
        """(Re)builds the nearest-neighbour index over the fitted item vectors: ``kind`` and
        ``options`` replace the constructor's ``index`` and ``index_options`` when given."""
        kind, options = (self.index_kind, self.index_options) if kind is None else (kind, dict(options))
        self.index = make_index(kind, self.item_vectors(), **options)  # refuses an unknown kind first
        self.index_kind, self.index_options = kind, options

    @torch.no_grad()
    def item_vectors(self) -> np.ndarray:
        """``float32[n_items, dim]``: the item tower (the encoder's item embeddings), one row
        per item of :attr:`catalogue`."""
        return self.model.item_vectors().detach().float().cpu().numpy()

    @torch.no_grad()
    @uses_torch_threads
    def user_vectors(self, features: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """``float32[n, dim]``: the user tower over behaviour matrices (internal ids, most recent
        first, ``PAD`` padded, as a :class:`~jtm_rs.data.Split` holds them)."""
        self.model.eval()
        seq = oldest_first(self._rows(features), self.max_length, self.n_items)
        out = np.zeros((len(seq), self.embedding_dim), np.float32)
        for s in range(0, len(seq), batch_size):
            out[s : s + batch_size] = self.model.last(torch.from_numpy(seq[s : s + batch_size]).to(self.device)).float().cpu().numpy()
        return out

    @uses_torch_threads
    def retrieve(self, features: np.ndarray, M: int, batch_size: int = 1024) -> Tuple[np.ndarray, np.ndarray]:
        users = self.user_vectors(features, batch_size)
        # While training (validation) there is no index yet: every item is scored.
        index = self.index if self.index is not None else ExactIndex(self.item_vectors())
        scores, rows = index.search(users, M)
        return self.catalogue[rows], scores

    # --- persistence ---------------------------------------------------------------------------

    def get_params(self) -> Dict[str, object]:
        p = super().get_params()
        del p["embedding_dim"], p["hidden"]
        return dict(p, dim=self.embedding_dim, blocks=self.blocks, heads=self.heads, max_length=self.max_length,
                    dropout=self.dropout, loss=self.loss, negatives=self.negatives, index=self.index_kind,
                    index_options=self.index_options)

    def state(self) -> Dict[str, np.ndarray]:
        extra = {f"index.{k}": v for k, v in self.index.state().items()} if self.index is not None else {}
        return dict(super().state(), catalogue=self.catalogue, **extra)

    def set_state(self, state: Dict[str, np.ndarray]) -> None:
        self.catalogue = np.asarray(state["catalogue"], dtype=np.int64)
        self.n_items = len(self.catalogue)
        self.model = self._encoder().to(self.device)
        self.load_model_state(state)
        if "index.hnsw" in state:  # the saved graph, not rebuilt
            self.index = HNSWIndex(serialized=state["index.hnsw"], **self.index_options)
        else:
            self.build_index()


#: Passes and patience of the SASRec whose item vectors place JTM's initial tree: the tree
#: needs neighbourhoods of items, not the best ranking, so it stops sooner than the sasrec row.
TREE_PASSES, TREE_PATIENCE = 30, 3


def sasrec_item_vectors(parts: Sequence[Interactions], items: np.ndarray, *, seed: int = 0,
                        n_threads: Optional[int] = None, show_progress: bool = False) -> np.ndarray:
    """``float32[len(items), 64]``: unit-length item vectors of a SASRec fitted on ``parts[0]``
    (training users), stopped on ``parts[1]``'s users where given, for a k-means initial
    tree. Unit length, so that k-means groups items by direction (the users they suit), not by
    the norm, which grows with an item's popularity. An item SASRec never saw gets zeros."""
    train = parts[0]
    none = train.select_users(np.zeros(0, np.int64))
    rest = list(parts[1:3]) + [none] * (3 - min(len(parts), 3))
    model = SASRec(max_epochs=TREE_PASSES, patience=TREE_PATIENCE, seed=seed, n_threads=n_threads)
    model.fit(Split(train, rest[0], rest[1]), show_progress=show_progress)
    vectors = model.item_vectors()
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    rows = model._rows(items)
    out = np.zeros((len(items), vectors.shape[1]), np.float32)
    out[rows >= 0] = vectors[rows[rows >= 0]]
    return out


__all__ = ["SASRec", "FULL_SOFTMAX_MAX_ITEMS", "TREE_PASSES", "TREE_PATIENCE", "sasrec_item_vectors"]

"""The deep model that scores (user, node) pairs (docs/design.md §4.3) and the hierarchical user
representation (paper §3.3).

Call convention, which any ``torch.nn.Module`` can follow to plug in::

    model(behaviours: LongTensor[B, W], nodes: LongTensor[B]) -> Tensor[B]   # logits

``behaviours`` are *node ids* (most recent first, ``-1`` for padding): with the hierarchical
representation, the ancestors at the level of ``nodes`` of the user's behaviour items; without
it, the items' leaves. ``model.n_nodes`` (optional) is checked against the tree. A module may
also offer ``score_pairs(behaviours[G, W], rows[P], nodes[P]) -> [P]``, equal to
``forward(behaviours[rows], nodes)`` but free to compute each user representation once
(:func:`score_pairs` falls back to ``forward``).
"""

from __future__ import annotations

import itertools
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .fused_mlp import ScoringPass, fused_bce_loss, fused_linear, fused_scores, fused_user_shares, mlp_parameters
from .model_layers import TIME_WINDOWS, PReLU, WindowPool, fit_width, unique_inverse

class JTMModel(nn.Module):
    """The paper's model: one embedding table over all node ids (leaves and internal nodes),
    10 time-window averages of the behaviour embeddings, concatenated with the node embedding
    (264 floats for 24-d), MLP 128-64-24 with PReLU, one logit.

    With ``attention=True`` each behaviour is first weighted by a DIN activation unit
    ``a(e_i, e_node)`` (MLP over ``[e_i, e_node, e_i * e_node, e_i - e_node]``), the TDM model.

    ``sparse=True`` (default) gives the node-embedding table sparse gradients: a batch touches
    a few thousand of its rows, and a dense gradient plus dense Adam over the whole table was
    40 % of a training step. Train it with :func:`jtm_rs.training.make_optimizer` (LazyAdam
    for the table, Adam for the rest).
    """

    #: Whether :meth:`pair_bce_loss` may use the fused Rust pass (:mod:`jtm_rs.fused_mlp`);
    #: ``False`` gives torch's ops, the reference ``benches/train_throughput.py`` compares with.
    fused_step: bool = True
    #: Whether scoring without autograd (beam search, tree learning) may use the Rust forward
    #: pass (:class:`jtm_rs.fused_mlp.ScoringPass`); ``False`` gives torch's ops.
    fused_scoring: bool = True

    def __init__(
        self,
        n_nodes: int,
        embedding_dim: int = 24,
        hidden: Sequence[int] = (128, 64, 24),
        windows: Sequence[int] = TIME_WINDOWS,
        attention: bool = False,
        attention_hidden: int = 36,
        batch_norm: bool = False,
        sparse: bool = True,
    ):
        super().__init__()
        self.n_nodes = n_nodes
        self.embedding_dim = embedding_dim
        self.window_sizes = tuple(windows)
        self.embedding = nn.Embedding(n_nodes + 1, embedding_dim, padding_idx=n_nodes, sparse=sparse)  # last row: padding
        nn.init.normal_(self.embedding.weight, std=0.05)
        with torch.no_grad():
            self.embedding.weight[n_nodes].zero_()
        self.pool = WindowPool(windows)
        bounds = [0, *itertools.accumulate(self.window_sizes)]
        self.register_buffer("window_bounds", torch.tensor(bounds, dtype=torch.int64), persistent=False)
        self.attention = (
            nn.Sequential(nn.Linear(4 * embedding_dim, attention_hidden), PReLU(), nn.Linear(attention_hidden, 1))
            if attention
            else None
        )
        layers: list[nn.Module] = []
        width = (len(windows) + 1) * embedding_dim
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(PReLU())
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def reset_embeddings(self) -> None:
        """Re-initialise the node embeddings (what a warm start does when the tree changes)."""
        with torch.no_grad():
            nn.init.normal_(self.embedding.weight, std=0.05)
            self.embedding.weight[self.n_nodes].zero_()

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(torch.where(ids >= 0, ids, self.n_nodes))

    def user_vector(self, behaviours: torch.Tensor, node_vec: Optional[torch.Tensor] = None) -> torch.Tensor:
        beh = fit_width(behaviours, self.pool.width)
        mask = (beh >= 0).to(self.embedding.weight.dtype)
        vec = self._embed(beh)
        if self.attention is not None:
            if node_vec is None:
                raise ValueError("the attention model needs the node to build the user vector")
            n = node_vec[:, None, :].expand_as(vec)
            vec = vec * self.attention(torch.cat([vec, n, vec * n, vec - n], dim=-1))
        return self.pool(vec, mask)

    def forward(self, behaviours: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        node_vec = self._embed(nodes)
        user = self.user_vector(behaviours, node_vec)
        return self.mlp(torch.cat([user, node_vec], dim=1)).squeeze(1)

    def score_pairs(self, behaviours: torch.Tensor, rows: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """``forward(behaviours[rows], nodes)``, computed faster: ``[G, W], [P], [P] -> [P]``.

        Many pairs share a user representation (one user at one level against many nodes), so
        without attention the user vector and its share of the first layer are computed once
        per row of ``behaviours``, not once per pair; the node's share of the first layer is
        added per pair. This is the hot path of training, tree learning and retrieval.
        """
        first = self.mlp[0]
        if not isinstance(first, nn.Linear):
            return _forward_in_chunks(self, behaviours, rows, nodes)
        if self.attention is not None:
            return _attention_pairs(self, behaviours, rows, nodes)
        h_user, table, local_nodes, w_node = self._first_layer_parts(behaviours, nodes)
        # index_select, not indexing: its backward is an index_add_ (2.4x faster on CPU than
        # indexing's accumulating index_put_).
        h = torch.addmm(h_user.index_select(0, rows), table.index_select(0, local_nodes), w_node.T)
        return _mlp_after_first(self, h).squeeze(-1)

    def pair_bce_loss(self, behaviours: torch.Tensor, rows: torch.Tensor, nodes: torch.Tensor,
                      labels: torch.Tensor) -> torch.Tensor:
        """Training's loss: the mean ``binary_cross_entropy_with_logits`` of
        ``score_pairs(behaviours, rows, nodes)`` against ``labels``. On the CPU, for the default
        MLP, everything after the embedding lookup runs forward and backward as one Rust pass
        (:mod:`jtm_rs.fused_mlp`): the same loss and gradients up to rounding."""
        params = self.fused_parameters(behaviours)
        if params is None:
            logits = self.score_pairs(behaviours, rows, nodes)
            return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        unique, bag_rows, offsets, local_nodes = self._embedding_bags(behaviours, nodes)
        return fused_bce_loss(self, unique, bag_rows, offsets, rows, local_nodes, labels, params)

    def fused_parameters(self, behaviours: torch.Tensor) -> Optional[list]:
        """The MLP's parameters for the fused pass, or ``None`` where it does not apply."""
        if (not self.fused_step or self.attention is not None or behaviours.device.type != "cpu"
                or self.embedding.weight.dtype != torch.float32 or not torch.is_grad_enabled()):
            return None
        return mlp_parameters(self.mlp)

    def user_share(self, behaviours: torch.Tensor, precision: str = "float32") -> Optional[torch.Tensor]:
        """The first layer's user share, bias included, of each row of ``behaviours``:
        ``[G, W] -> [G, H]``, the part of a pair's pre-activation that does not depend on the
        node (:meth:`score_user_share` adds the rest). ``None`` where the first layer does not
        split (the attention model; batch norm first)."""
        if self.attention is not None or not isinstance(self.mlp[0], nn.Linear):
            return None
        fused = self.user_share_at(behaviours, None, None, precision)
        return fused if fused is not None else self._first_layer_parts(behaviours, behaviours.new_zeros(0))[0]

    def user_share_at(self, leaves: torch.Tensor, levels: Optional[torch.Tensor], geometry,
                      precision: str = "float32") -> Optional[torch.Tensor]:
        """:meth:`user_share` of row ``r`` of ``leaves`` taken at ``levels[r]`` (each leaf as
        its ancestor there, under ``geometry``'s numbering; ``levels=None``: as given), through
        the Rust pass; ``None`` where it does not apply (autograd, another device or model)."""
        if _pass_parameters(self, leaves) is None or not isinstance(self.mlp[0], nn.Linear):
            return None
        first, d_user = self.mlp[0], len(self.window_sizes) * self.embedding_dim
        tree = {} if levels is None else dict(levels=levels, arity=geometry.arity, leaf_level=geometry.leaf_level)
        return fused_user_shares(self.embedding.weight, leaves, self.window_sizes, first.weight[:, :d_user],
                                 first.bias, precision, **tree)

    def score_user_share(self, share: torch.Tensor, rows: torch.Tensor, nodes: torch.Tensor,
                         precision: str = "float32") -> torch.Tensor:
        """``score_pairs`` from precomputed :meth:`user_share` rows: ``[G, H], [P], [P] -> [P]``.
        A beam search computes each user's share once for all its levels and calls this per
        level: one user's search at 10^6 items was mostly the per-level user work. Without
        autograd on the CPU the pairs go through the Rust scoring pass; ``precision`` is
        "float32" or "bfloat16" (there: operands rounded, sums in float32; elsewhere
        ``torch.autocast``)."""
        first = self.mlp[0]
        d_user = len(self.window_sizes) * self.embedding_dim
        ids = torch.where(nodes >= 0, nodes, self.n_nodes)
        params = _pass_parameters(self, share) if share.dtype == torch.float32 else None
        if params is not None:
            return fused_scores(share, self.embedding.weight, rows, ids, first.weight[:, d_user:], params,
                                precision=precision)
        with torch.autocast(share.device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            if len(rows) > 2 * PAIR_BLOCK:  # blocks whose activations stay in cache
                n = -(-len(rows) // PAIR_BLOCK)
                return torch.cat([self.score_user_share(share, r, v) for r, v in zip(rows.chunk(n), nodes.chunk(n))])
            h = torch.addmm(share.index_select(0, rows), self._embed(nodes), first.weight[:, d_user:].T)
            return _mlp_after_first(self, h).squeeze(-1)

    def score_grid(self, behaviours: torch.Tensor, nodes: torch.Tensor, precision: str = "float32") -> torch.Tensor:
        """``[S, W], [S, C] -> [S, C]`` (tree learning's and beam search's shape): as
        :meth:`score_pairs`, with the user's share of the first layer broadcast over its ``C``
        nodes instead of gathered per pair; the Rust scoring pass where it applies, else torch
        in cache-sized blocks of users (``precision`` as :meth:`score_user_share`)."""
        first = self.mlp[0]
        if self.attention is not None or not isinstance(first, nn.Linear) or nodes.dim() != 2:
            s, c = nodes.shape
            rows = torch.arange(s, device=nodes.device).repeat_interleave(c)
            with torch.autocast(nodes.device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
                return self.score_pairs(behaviours, rows, nodes.reshape(-1)).view(s, c)
        fused = self.score_grid_at(behaviours, None, None, nodes, precision)
        if fused is not None:
            return fused
        with torch.autocast(nodes.device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            return _grid_blocks(self, behaviours, nodes)

    def score_grid_at(self, leaves: torch.Tensor, level: Optional[int], geometry, nodes: torch.Tensor,
                      precision: str = "float32") -> Optional[torch.Tensor]:
        """:meth:`score_grid` with each row of ``leaves`` taken at ``level`` (as
        :meth:`user_share_at`), through the Rust pass; ``None`` where it does not apply."""
        params = _pass_parameters(self, nodes)
        if params is None or not isinstance(self.mlp[0], nn.Linear) or nodes.dim() != 2:
            return None
        s, c = nodes.shape
        levels = None if level is None else torch.full((s,), level, dtype=torch.int64)
        h_user = self.user_share_at(leaves, levels, geometry, precision)
        unique, local_nodes = unique_inverse(torch.where(nodes >= 0, nodes, self.n_nodes).reshape(-1), self.n_nodes + 1)
        table, w_node = self.embedding.weight[unique], self.mlp[0].weight[:, -self.embedding_dim :]
        rows = torch.arange(s, device=nodes.device).repeat_interleave(c)
        # The node share once per distinct node (a block's nodes repeat across its users), in
        # Rust too: a node's share must not depend on the others in its call (the ranks of a
        # sharded tree learning score different items and must agree).
        shares = fused_linear(table, w_node, torch.zeros(len(w_node)), precision)
        return fused_scores(h_user, shares, rows, local_nodes, w_node, params, node_shares=True,
                            precision=precision).view(s, c)

    def _first_layer_parts(self, behaviours: torch.Tensor, nodes: torch.Tensor):
        """The first layer split by its inputs: ``(user share with bias [G, H], the batch's
        embedding rows [U, D], each node's row in them [P], the node share's weight [H, D])``;
        a pair's pre-activation is ``user_share[row] + rows[node_row] @ weight.T``."""
        first = self.mlp[0]
        unique, bag_rows, offsets, local_nodes = self._embedding_bags(behaviours, nodes)
        table = F.embedding(unique, self.embedding.weight, padding_idx=self.n_nodes, sparse=self.embedding.sparse)
        d_user = len(self.window_sizes) * self.embedding_dim
        user = F.embedding_bag(bag_rows, table, offsets, mode="mean").view(len(behaviours), d_user)
        h_user = torch.addmm(first.bias, user, first.weight[:, :d_user].T)
        return h_user, table, local_nodes, first.weight[:, d_user:]

    def _embedding_bags(self, behaviours: torch.Tensor, nodes: torch.Tensor):
        """``(the batch's distinct embedding rows [U] (ascending), each real behaviour's place
        among them, the offsets of the [G · windows] bags, each node's place [P])``.

        The embedding rows the batch uses are looked up once (one sparse gradient over its
        distinct rows, not one per use). The window averages are bags of the real behaviours
        only: padding is dropped first, so each window is a bag of its real behaviours (an
        empty one gives zeros) and short histories cost what they hold."""
        beh = behaviours[:, : self.pool.width]
        real = beh >= 0
        # Real behaviours per window: differences of the prefix sums at the window bounds.
        bounds = self.window_bounds.clamp(max=beh.shape[1])
        prefix = F.pad(real.cumsum(1), (1, 0))
        counts = (prefix[:, bounds[1:]] - prefix[:, bounds[:-1]]).reshape(-1)
        offsets = counts.cumsum(0) - counts
        kept = beh[real]  # row-major: each row's behaviours in order, so windows stay contiguous
        flat = torch.cat([kept, torch.where(nodes >= 0, nodes, self.n_nodes).reshape(-1)])
        unique, local = unique_inverse(flat, self.n_nodes + 1)
        return unique, local[: len(kept)], offsets, local[len(kept) :]


def _pass_parameters(model: JTMModel, like: torch.Tensor) -> Optional[list]:
    """The MLP's parameters for the Rust scoring pass, or ``None`` where it does not apply:
    autograd on, autocast on, not the CPU, not float32, not the pass's shape."""
    if (not model.fused_scoring or model.attention is not None or like.device.type != "cpu"
            or model.embedding.weight.dtype != torch.float32 or torch.is_grad_enabled()
            or torch.is_autocast_enabled("cpu")):
        return None
    return mlp_parameters(model.mlp)


def scoring_pass(model: nn.Module) -> Optional[ScoringPass]:
    """``model``'s MLP read once for a beam search's levels, or ``None`` where the pass does not apply."""
    params = _pass_parameters(model, model.embedding.weight) if isinstance(model, JTMModel) else None
    if params is None or not isinstance(model.mlp[0], nn.Linear):
        return None
    return ScoringPass(model.embedding.weight, model.mlp[0].weight[:, -model.embedding_dim :], params)


def _mlp_after_first(model: JTMModel, h: torch.Tensor) -> torch.Tensor:
    """``model.mlp[1:](h)``; without autograd on the CPU, the shared-slope PReLUs act in
    place on ``h`` (tree learning's scoring: out-of-place activations on its big bfloat16
    blocks cost as much as the GEMMs)."""
    if torch.is_grad_enabled() or h.device.type != "cpu":  # elsewhere reading the slope would synchronise
        return model.mlp[1:](h)
    for layer in itertools.islice(model.mlp, 1, None):  # a slice would build a new Sequential per call
        if isinstance(layer, nn.PReLU) and layer.weight.numel() == 1:
            h = F.leaky_relu_(h, float(layer.weight))
        else:
            h = layer(h)
    return h


def _grid_blocks(model: JTMModel, behaviours: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
    """torch's :meth:`JTMModel.score_grid`, in blocks of users whose activations stay in cache."""
    s, c = nodes.shape
    step = max(1, GRID_BLOCK // max(c, 1))
    parts = []
    for lo in range(0, s, step):
        h_user, table, local_nodes, w_node = model._first_layer_parts(behaviours[lo : lo + step], nodes[lo : lo + step])
        g = len(h_user)
        # The node share per distinct row, then gathered: a block's nodes repeat across its
        # users (all of them under the root in tree learning's first segment).
        h = (table @ w_node.T).index_select(0, local_nodes).view(g, c, -1)
        h += h_user[:, None, :].to(h.dtype)  # in place: the [g * c, H] block is the big one
        parts.append(_mlp_after_first(model, h.view(g * c, -1)).view(g, c))
    return torch.cat(parts) if parts else nodes.new_zeros((0, c), dtype=model.embedding.weight.dtype)


def _attention_pairs(model: JTMModel, behaviours: torch.Tensor, rows: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
    """The attention model's pairs, with the activation unit's first layer split by its
    inputs: ``[e, n, e*n, e-n] W = e (W_e + W_d) + n (W_n - W_d) + (e*n) W_p``. The
    behaviour term is computed once per row of ``behaviours`` (shared by all its pairs), the
    node term once per pair, and only ``(e*n) W_p`` per (pair, behaviour) — a quarter of the
    concatenated layer's work and memory."""
    lin, act, out = model.attention[0], model.attention[1], model.attention[2]
    D = model.embedding_dim
    w_e, w_n, w_p, w_d = lin.weight.split(D, dim=1)
    beh = fit_width(behaviours, model.pool.width)
    vec = model._embed(beh)  # [G, W, D]
    mask = (beh >= 0).to(vec.dtype)
    user_term = vec @ (w_e + w_d).T  # [G, W, H]
    parts = []
    for i in range(0, len(rows), ATTENTION_CHUNK):
        r, n = rows[i : i + ATTENTION_CHUNK], model._embed(nodes[i : i + ATTENTION_CHUNK])
        v = vec[r]  # [P, W, D]
        pre = user_term[r] + (n @ (w_n - w_d).T + lin.bias)[:, None, :] + (v * n[:, None, :]) @ w_p.T
        weights = out(act(pre))  # [P, W, 1]
        user = model.pool(v * weights, mask[r])
        parts.append(model.mlp(torch.cat([user, n], dim=1)).squeeze(1))
    return torch.cat(parts) if parts else vec.new_zeros(0)


def score_pairs(model: nn.Module, behaviours: torch.Tensor, rows: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
    """Logits of pairs ``(behaviours[rows[i]], nodes[i])``, through ``model.score_pairs`` when
    the model has one, else its ``forward``."""
    fn = getattr(model, "score_pairs", None)
    return fn(behaviours, rows, nodes) if fn is not None else _forward_in_chunks(model, behaviours, rows, nodes)


def pair_bce_loss(model: nn.Module, behaviours: torch.Tensor, rows: torch.Tensor, nodes: torch.Tensor,
                  labels: torch.Tensor) -> torch.Tensor:
    """Mean BCE of the pairs' logits against ``labels``: ``model.pair_bce_loss`` where the model
    has one (fused on the CPU), else of :func:`score_pairs`."""
    fn = getattr(model, "pair_bce_loss", None)
    if fn is not None:
        return fn(behaviours, rows, nodes, labels)
    return F.binary_cross_entropy_with_logits(score_pairs(model, behaviours, rows, nodes), labels)


#: Pairs per forward call on the slow path, where each pair carries its own [W, D] behaviours.
FORWARD_CHUNK = 8192

#: Pairs per chunk of the attention model's fast path: its [pairs, 69, 36] activations must
#: stay in cache. Measured (TDM model, one thread, batches of 8192): 8192 pairs 97 examples/s,
#: 2048 241, 1024 260 (batches of 2048 with 8192-pair chunks, the old setting: 205).
ATTENTION_CHUNK = 1024


def _forward_in_chunks(model: nn.Module, behaviours: torch.Tensor, rows: torch.Tensor, nodes: torch.Tensor):
    if len(rows) <= FORWARD_CHUNK:
        return model(behaviours[rows], nodes)
    parts = [
        model(behaviours[rows[i : i + FORWARD_CHUNK]], nodes[i : i + FORWARD_CHUNK])
        for i in range(0, len(rows), FORWARD_CHUNK)
    ]
    return torch.cat(parts)


#: Pairs per block of :meth:`JTMModel.score_grid`: its [pairs, 128] activations stay in cache.
GRID_BLOCK = 1 << 15
#: Pairs per block of :meth:`JTMModel.score_user_share` past twice this many (a batched beam
#: search's level): 64 users' levels at 10^6 items scored 1.4x faster in blocks of 4 096 than
#: whole, 16 users' (~6 400 pairs, left whole) unchanged (``docs/performance.md``).
PAIR_BLOCK = 1 << 12


def score_grid(model: nn.Module, behaviours: torch.Tensor, nodes: torch.Tensor, precision: str = "float32") -> torch.Tensor:
    """``[S, W], [S, C] -> [S, C]``: each row's user against each of its nodes; ``precision``
    "bfloat16" scores the model's multiplies in bfloat16 (the Rust pass where
    :meth:`JTMModel.score_grid` takes it, else ``torch.autocast``)."""
    fn = getattr(model, "score_grid", None)
    if fn is not None:
        return fn(behaviours, nodes, precision=precision)
    s, c = nodes.shape
    rows = torch.arange(s, device=nodes.device).repeat_interleave(c)
    with torch.autocast(nodes.device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
        return score_pairs(model, behaviours, rows, nodes.reshape(-1)).view(s, c)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")

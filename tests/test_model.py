"""The model: hierarchical mapping, time windows, the fast scoring paths, plug-in modules."""

import numpy as np
import pytest
import torch
from torch import nn
import torch.nn.functional as F

import jtm_rs
from jtm_rs.features import behaviours_at
from jtm_rs.geometry import TreeGeometry
from jtm_rs.model import TIME_WINDOWS, JTMModel, score_grid, score_pairs
from jtm_rs.training import pair_rows, user_levels


@pytest.mark.parametrize("arity", [2, 3, 4])
def test_hierarchical_mapping_matches_the_tree_at_every_level(arity):
    rng = np.random.default_rng(arity)
    items = rng.choice(10_000, size=300, replace=False)
    tree = jtm_rs.Tree.random(items, arity=arity, seed=1)
    beh = rng.choice(items, size=(20, 69))
    beh[:, 50:] = -1
    geo = TreeGeometry.of(tree)
    leaves = torch.from_numpy(np.where(beh >= 0, tree.leaves(np.where(beh >= 0, beh, items[0])), -1))
    for level in range(tree.n_levels):
        expect = tree.hierarchical_features(beh, level, padding=-1)
        assert np.array_equal(behaviours_at(geo, leaves, level, True).numpy(), expect), level
    # JTM-J: the leaves at every level.
    assert torch.equal(behaviours_at(geo, leaves, 1, False), leaves)
    # Per-row levels, and the stacked all-levels layout used in training.
    per_row = torch.arange(len(leaves)) % tree.n_levels
    got = behaviours_at(geo, leaves, per_row, True).numpy()
    for r in range(len(leaves)):
        assert np.array_equal(got[r], tree.hierarchical_features(beh[r], int(per_row[r]), padding=-1))
    stacked = user_levels(geo, leaves, True).view(len(leaves), tree.leaf_level, -1)
    for level in range(1, tree.n_levels):
        assert np.array_equal(stacked[:, level - 1].numpy(), tree.hierarchical_features(beh, level, padding=-1))
    assert np.array_equal(geo.level_of(torch.arange(tree.n_nodes)).numpy(), tree.level_of(np.arange(tree.n_nodes)))


def test_window_averages_by_hand():
    torch.manual_seed(0)
    m = JTMModel(n_nodes=10, embedding_dim=3)
    e = m.embedding.weight.detach()
    beh = torch.full((1, 69), -1)
    beh[0, :5] = torch.tensor([1, 2, 3, 4, 5])  # windows 1,1,1,2(+padding),...
    beh[0, 6] = 7
    v = m.user_vector(beh).view(len(TIME_WINDOWS), 3)
    assert torch.allclose(v[0], e[1]) and torch.allclose(v[2], e[3])
    assert torch.allclose(v[3], (e[4] + e[5]) / 2)
    assert torch.allclose(v[4], e[7])  # window 5 holds positions 5,6: only 6 is real
    assert torch.all(v[5:] == 0)


@pytest.mark.parametrize("attention", [False, True])
def test_score_pairs_and_grid_equal_forward(attention, monkeypatch):
    import jtm_rs.model as model_mod

    monkeypatch.setattr(model_mod, "GRID_BLOCK", 8)  # the grid in blocks of two users
    torch.manual_seed(1)
    m = JTMModel(n_nodes=50, attention=attention).eval()
    beh = torch.randint(-1, 50, (6, 69))
    rows = torch.tensor([0, 0, 3, 5, 5, 5, 1])
    nodes = torch.randint(0, 50, (7,))
    with torch.no_grad():
        expect = m(beh[rows], nodes)
        assert torch.allclose(score_pairs(m, beh, rows, nodes), expect, atol=1e-5)
        grid_nodes = torch.randint(0, 50, (6, 4))
        direct = torch.stack([m(beh[i].expand(4, -1), grid_nodes[i]) for i in range(6)])
        assert torch.allclose(score_grid(m, beh, grid_nodes), direct, atol=1e-5)


def test_pair_rows_layout():
    levels = torch.tensor([1, 1, 2, 2, 2])
    assert pair_rows(2, levels, 3, True).tolist() == [0, 0, 1, 1, 1, 3, 3, 4, 4, 4]
    assert pair_rows(2, levels, 3, False).tolist() == [0] * 5 + [1] * 5


class MeanDot(nn.Module):
    """A plug-in model with only the call convention: no score_pairs, no n_nodes."""

    def __init__(self, n_nodes):
        super().__init__()
        self.e = nn.Embedding(n_nodes + 1, 8)

    def forward(self, behaviours, nodes):
        b = self.e(torch.where(behaviours >= 0, behaviours, self.e.num_embeddings - 1)).mean(1)
        return (b * self.e(nodes)).sum(1)


def test_any_module_with_the_call_convention_plugs_in():
    m = MeanDot(20)
    beh = torch.randint(-1, 20, (3, 69))
    nodes = torch.randint(0, 20, (3, 5))
    with torch.no_grad():
        g = score_grid(m, beh, nodes)
        assert torch.allclose(g[1], m(beh[1].expand(5, -1), nodes[1]))


def _dense(g):
    return None if g is None else (g.to_dense() if g.is_sparse else g)


@pytest.mark.parametrize("width", [69, 12, 80])
@pytest.mark.parametrize("attention", [False, True])
def test_fast_path_matches_forward_in_value_and_gradient(monkeypatch, attention, width):
    """score_pairs (shared user rows, one embedding lookup, embedding_bag over the real
    behaviours, the fast PReLU) equals the reference forward, in value and in every gradient
    (sparse ones densified), for histories shorter and longer than the windows."""
    import jtm_rs.model as model_mod

    monkeypatch.setattr(model_mod, "FORWARD_CHUNK", 3)  # several chunks
    monkeypatch.setattr(model_mod, "ATTENTION_CHUNK", 3)
    torch.manual_seed(2)
    m = JTMModel(n_nodes=40, attention=attention)
    beh = torch.randint(-1, 40, (5, width))
    beh[3] = -1  # a user with no behaviour at all: every window empty
    rows = torch.tensor([0, 1, 1, 4, 2, 2, 2, 3])
    nodes = torch.randint(0, 40, (8,))
    fast = score_pairs(m, beh, rows, nodes)
    g_fast = torch.autograd.grad(fast.square().sum(), list(m.parameters()), allow_unused=True)
    slow = m(beh[rows], nodes)
    g_slow = torch.autograd.grad(slow.square().sum(), list(m.parameters()), allow_unused=True)
    assert torch.allclose(fast, slow, atol=1e-5)
    for a, b in zip(map(_dense, g_fast), map(_dense, g_slow)):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-5)
    # The padding row never moves.
    assert _dense(g_fast[0])[40].abs().sum() == 0


@pytest.mark.parametrize("n_ids", [50, 5000, 100_000])  # the Rust bitmap (CPU); torch.unique's sort
def test_unique_inverse_is_torch_unique(n_ids):
    from jtm_rs.model import unique_inverse

    ids = torch.randint(0, n_ids, (300,))
    ids[:3] = n_ids - 1
    got, want = unique_inverse(ids, n_ids), torch.unique(ids, return_inverse=True)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert torch.equal(got[0][got[1]], ids)


def test_prelu_matches_torch_in_value_and_gradient():
    from jtm_rs.model import PReLU

    torch.manual_seed(3)
    ours, ref = PReLU(), nn.PReLU()
    with torch.no_grad():
        ours.weight.fill_(0.1)
        ref.weight.fill_(0.1)
    x = torch.randn(50, 7, requires_grad=True)
    y1, y2 = ours(x), ref(x)
    g = torch.randn_like(y1)
    gx1, ga1 = torch.autograd.grad(y1, [x, ours.weight], g)
    gx2, ga2 = torch.autograd.grad(y2, [x, ref.weight], g)
    assert torch.allclose(y1, y2) and torch.allclose(gx1, gx2) and torch.allclose(ga1, ga2, atol=1e-5)
    assert set(ours.state_dict()) == set(ref.state_dict())


def test_sparse_model_trains_with_lazy_adam():
    from jtm_rs.training import make_optimizer

    m = JTMModel(n_nodes=30)
    opt = make_optimizer(m, 1e-2)
    assert {type(o).__name__ for o in opt.optimizers} == {"LazyAdam", "Adam"}
    before = m.embedding.weight.detach().clone()
    beh = torch.randint(-1, 5, (4, 69))  # only rows 0..4 are behaviours
    nodes = torch.tensor([5, 6, 7, 8])
    loss = score_pairs(m, beh, torch.arange(4), nodes).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()
    moved = (m.embedding.weight.detach() != before).any(1)
    assert moved[:9].any() and not moved[9:].any()  # lazy: untouched rows stay
    dense = make_optimizer(JTMModel(n_nodes=30, sparse=False), 1e-2)
    assert isinstance(dense, torch.optim.Adam)


@pytest.mark.parametrize("native", [True, False])  # the Rust row update (CPU float32); torch's ops
def test_lazy_adam_is_sparse_adam(monkeypatch, native):
    """Same update and state as torch's SparseAdam, for sorted distinct rows (the fast path)
    and for repeated, unsorted ones (coalesced first)."""
    import copy

    import jtm_rs.optimizers as optimizers
    from jtm_rs.optimizers import LazyAdam

    if not native:
        monkeypatch.setattr(optimizers, "_native_rows", lambda *a: False)

    torch.manual_seed(0)
    a = torch.nn.Embedding(50, 4, sparse=True)
    b = copy.deepcopy(a)
    oa, ob = torch.optim.SparseAdam(a.parameters(), lr=0.01), LazyAdam(b.parameters(), lr=0.01)
    for step in range(30):
        idx = torch.unique(torch.randint(0, 50, (20,))) if step % 3 else torch.randint(0, 50, (20,))
        target = torch.randn(len(idx), 4)
        for emb, opt in ((a, oa), (b, ob)):
            opt.zero_grad()
            ((F.embedding(idx, emb.weight, sparse=True) - target) ** 2).sum().backward()
            opt.step()
    assert torch.allclose(a.weight, b.weight, atol=1e-6)
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.allclose(oa.state[a.weight][key], ob.state[b.weight][key], atol=1e-6)
    assert oa.state[a.weight]["step"] == ob.state[b.weight]["step"] == 30
    with pytest.raises(RuntimeError, match="sparse gradients"):
        dense = torch.nn.Parameter(torch.zeros(3))
        dense.grad = torch.ones(3)
        LazyAdam([dense]).step()


def test_carry_node_embeddings_follows_items_and_averages_levels():
    from jtm_rs import Tree
    from jtm_rs.tree_policy import carry_node_embeddings

    items = np.array([10, 11, 12, 13, 14])
    old = Tree.from_order(items, arity=2)  # 3 levels below the root, 8 leaf slots
    new = Tree.from_order(items[::-1].copy(), arity=2)
    torch.manual_seed(0)
    table = torch.randn(old.n_nodes + 1, 4)
    before = table.clone()
    carry_node_embeddings(table, old, new)
    # Leaves follow their items.
    assert torch.equal(table[new.leaves(items)], before[old.leaves(items)])
    # An internal node: the mean of its items' old rows at its level.
    for level in range(1, new.leaf_level):
        for node in np.unique(new.item_ancestors(items, level)):
            below = items[new.item_ancestors(items, level) == node]
            expect = before[old.item_ancestors(below, level)].mean(0)
            assert torch.allclose(table[node], expect)
    assert torch.equal(table[0], before[0]) and torch.equal(table[-1], before[-1])  # root, padding
    empty = np.setdiff1d(np.arange(new.n_nodes), np.concatenate(
        [new.item_ancestors(items, lv) for lv in range(new.n_levels)]))
    assert torch.equal(table[empty], before[empty])
    with pytest.raises(ValueError, match="arity or depth"):
        carry_node_embeddings(table, old, Tree.from_order(items, arity=3))

"""The model: hierarchical mapping, time windows, the fast scoring paths, plug-in modules."""

import numpy as np
import pytest
import torch
from torch import nn

import jtm_rs
from jtm_rs.model import TIME_WINDOWS, JTMModel, TreeGeometry, behaviours_at, score_grid, score_pairs
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
def test_score_pairs_and_grid_equal_forward(attention):
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


def test_attention_fast_path_matches_forward_in_value_and_gradient(monkeypatch):
    import jtm_rs.model as model_mod

    monkeypatch.setattr(model_mod, "FORWARD_CHUNK", 3)  # several chunks
    torch.manual_seed(2)
    m = JTMModel(n_nodes=40, attention=True)
    beh = torch.randint(-1, 40, (5, 69))
    rows = torch.tensor([0, 1, 1, 4, 2, 2, 2, 3])
    nodes = torch.randint(0, 40, (8,))
    fast = score_pairs(m, beh, rows, nodes)
    g_fast = torch.autograd.grad(fast.square().sum(), list(m.parameters()), allow_unused=True)
    slow = m(beh[rows], nodes)
    g_slow = torch.autograd.grad(slow.square().sum(), list(m.parameters()), allow_unused=True)
    assert torch.allclose(fast, slow, atol=1e-5)
    for a, b in zip(g_fast, g_slow):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-5)

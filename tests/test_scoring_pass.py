"""The Rust scoring pass (jtm_rs.fused_mlp.fused_scores, rust/mlp_scores.rs,
rust/dense_kernels.rs): beam search's and tree learning's scores against torch's ops."""

import numpy as np
import pytest
import torch

from jtm_rs import InvalidInputError
from jtm_rs._core import ScoringLayers, bfloat16_faster, bfloat16_native
from jtm_rs.fused_mlp import mlp_parameters
from jtm_rs.model import JTMModel


def _model(hidden=(128, 64, 24), n_nodes=3000, dim=24):
    torch.manual_seed(0)
    model = JTMModel(n_nodes, embedding_dim=dim, hidden=hidden).eval()
    with torch.no_grad():  # biases and slopes away from their initial values, so a mix-up shows
        for p in model.mlp.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _inputs(model, users=40, pairs=5000, seed=1):
    g = torch.Generator().manual_seed(seed)
    beh = torch.randint(-1, model.n_nodes, (users, 69), generator=g)
    rows = torch.randint(0, users, (pairs,), generator=g)
    nodes = torch.randint(0, model.n_nodes, (pairs,), generator=g)
    return beh, rows, nodes


def _both(model, call):
    with torch.no_grad():
        model.fused_scoring = True
        fused = call()
        model.fused_scoring = False
        torchs = call()
        model.fused_scoring = True
    return fused, torchs


@pytest.mark.parametrize("hidden", [(128, 64, 24), (16,), (32, 8, 8, 4)])
def test_float32_scores_equal_torchs(hidden):
    model = _model(hidden, dim=8 if hidden != (128, 64, 24) else 24)
    beh, rows, nodes = _inputs(model)
    with torch.no_grad():
        share = model.user_share(beh)
    fused, torchs = _both(model, lambda: model.score_user_share(share, rows, nodes))
    assert fused.dtype == torch.float32 and fused.shape == (len(rows),)
    torch.testing.assert_close(fused, torchs, rtol=1e-5, atol=1e-5)
    grid = nodes[:4000].view(40, 100)
    fused, torchs = _both(model, lambda: model.score_grid(beh, grid))
    torch.testing.assert_close(fused, torchs, rtol=1e-5, atol=1e-5)


def test_grid_scores_equal_torchs_and_do_not_depend_on_the_other_rows():
    """score_grid multiplies each distinct node once: for repeated nodes (tree learning) and
    all distinct (a brute force over every leaf) alike, and a row scores the same alone."""
    model = _model()
    beh, _, nodes = _inputs(model)
    few = nodes[:50].repeat(40, 1)  # 50 nodes, each for all 40 users: shared
    many = torch.randperm(model.n_nodes)[:2000].view(40, 50)  # all distinct: per pair
    for grid in (few, many):
        fused, torchs = _both(model, lambda: model.score_grid(beh, grid))
        torch.testing.assert_close(fused, torchs, rtol=1e-5, atol=1e-5)
        for precision in ("float32", "bfloat16"):
            with torch.no_grad():
                whole = model.score_grid(beh, grid, precision=precision)
                alone = model.score_grid(beh[7:8], grid[7:8], precision=precision)
            assert torch.equal(alone[0], whole[7])


def test_bfloat16_scores_follow_float32_and_do_not_depend_on_the_batch():
    model = _model()
    beh, rows, nodes = _inputs(model)
    with torch.no_grad():
        share = model.user_share(beh)
        f32 = model.score_user_share(share, rows, nodes)
        b16 = model.score_user_share(share, rows, nodes, precision="bfloat16")
        part = model.score_user_share(share, rows[777:1500], nodes[777:1500], precision="bfloat16")
    assert not torch.equal(f32, b16)  # bfloat16 operands round differently
    assert (b16 - f32).abs().max() < 0.05 * f32.abs().max()
    order = torch.argsort(f32, descending=True)[:200]
    assert len(np.intersect1d(order, torch.argsort(b16, descending=True)[:200])) >= 180
    assert torch.equal(part, b16[777:1500])


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_a_pair_scores_the_same_on_any_thread_count(precision):
    """Beam search hands the pass its own thread count (every core by default): a batch's
    levels split over the threads, a call under the threshold runs on the caller; the scores
    are the same bits either way."""
    from jtm_rs.model import scoring_pass

    model = _model()
    beh, rows, nodes = _inputs(model, pairs=5000)
    with torch.no_grad():
        share = model.user_share(beh)
        pass_ = scoring_pass(model)
    one = pass_.scores(share, rows, nodes, precision=precision, n_threads=1)
    for n_threads in (None, 2, 3):
        assert np.array_equal(pass_.scores(share, rows, nodes, precision=precision, n_threads=n_threads), one)
        small = pass_.scores(share, rows[:400], nodes[:400], precision=precision, n_threads=n_threads)
        assert np.array_equal(small, one[:400])


def test_autograd_autocast_and_other_models_keep_torchs_ops(monkeypatch):
    import jtm_rs.model

    model = _model()
    beh, rows, nodes = _inputs(model, pairs=300)
    with torch.no_grad():
        share = model.user_share(beh)
    calls = []
    real = jtm_rs.model.fused_scores

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(jtm_rs.model, "fused_scores", spy)
    with torch.no_grad():
        model.score_user_share(share, rows, nodes)
        assert len(calls) == 1
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model.score_user_share(share, rows, nodes)
    model.score_user_share(share, rows, nodes)  # autograd on: training's path
    attention = JTMModel(model.n_nodes, attention=True).eval()
    with torch.no_grad():
        attention.score_grid(beh, nodes[:280].view(40, 7))
    assert len(calls) == 1


def test_the_pass_refuses_bad_input_by_name():
    model = _model()
    params = [p.detach().numpy() for p in mlp_parameters(model.mlp)]
    n_layers = len(params) // 3
    weights, biases = params[0 : 2 * n_layers : 2], params[1 : 2 * n_layers : 2]
    slopes = [float(s.item()) for s in params[2 * n_layers :]]
    share = np.zeros((4, 128), np.float32)
    table = np.zeros((10, 24), np.float32)
    w_node = np.ascontiguousarray(model.mlp[0].weight.detach().numpy()[:, 240:])
    layers = dict(w_node=w_node, weights=weights, biases=biases, slopes=slopes)
    ok = dict(user_share=share, node_rows=table, rows=np.array([0, 3]), nodes=np.array([9, 0]))

    def scores(layer_change=(), **change):
        return ScoringLayers(**{**layers, **dict(layer_change)}).scores(**{**ok, **change})

    assert scores().shape == (2,)
    for change, message in [
        (dict(rows=np.array([0, 4])), "pair rows"),
        (dict(nodes=np.array([10, 0])), "pair nodes"),
        (dict(nodes=np.array([0])), "one of each per pair"),
        (dict(node_rows=np.zeros((10, 23), np.float32)), "node rows of width 23"),
        (dict(layer_change=dict(precision="float16")), "precision"),
        (dict(layer_change=dict(slopes=slopes[:-1])), "slopes"),
        (dict(layer_change=dict(biases=biases[:-1])), "biases"),
    ]:
        with pytest.raises(InvalidInputError, match=message):
            scores(**change)


def test_packed_layers_are_a_copy_scored_as_the_unpacked_pass():
    """The packed layers score as a fresh pass does, and keep the weights of their making."""
    model = _model()
    params = [p.detach().numpy().copy() for p in mlp_parameters(model.mlp)]
    n_layers = len(params) // 3
    weights, biases = params[0 : 2 * n_layers : 2], params[1 : 2 * n_layers : 2]
    slopes = [float(s.item()) for s in params[2 * n_layers :]]
    w_node = np.ascontiguousarray(model.mlp[0].weight.detach().numpy()[:, 240:])
    rng = np.random.default_rng(0)
    share = rng.standard_normal((5, 128)).astype(np.float32)
    table = rng.standard_normal((50, 24)).astype(np.float32)
    rows, nodes = rng.integers(0, 5, 3000), rng.integers(0, 50, 3000)
    for precision in ["float32", "bfloat16"]:
        packed = ScoringLayers(w_node, weights, biases, slopes, precision=precision)
        first = packed.scores(share, table, rows, nodes, n_threads=2)
        fresh = ScoringLayers(w_node, weights, biases, slopes, precision=precision).scores(share, table, rows, nodes,
                                                                                           n_threads=1)
        np.testing.assert_array_equal(first, fresh)
        weights[0] += 1.0  # the packed copy does not see it
        np.testing.assert_array_equal(packed.scores(share, table, rows, nodes), first)
        weights[0] -= 1.0


def test_auto_precision_follows_the_kernels():
    from jtm_rs.tree_policy import resolve_precision

    want = "bfloat16" if bfloat16_faster() else "float32"
    assert resolve_precision("auto", torch.device("cpu")) == want
    assert bfloat16_native() or not bfloat16_faster()  # faster only where native


def test_user_shares_at_levels_equal_torchs_ancestors_and_window_means():
    from jtm_rs import Tree
    from jtm_rs.geometry import TreeGeometry

    tree = Tree.random(np.arange(500), arity=2, seed=0)
    model = _model(n_nodes=tree.n_nodes)
    geometry = TreeGeometry.of(tree)
    g = torch.Generator().manual_seed(3)
    leaves = torch.from_numpy(tree.leaves(np.arange(500)))[torch.randint(0, 500, (30, 80), generator=g)]
    leaves[:, 50:] = -1  # short histories: the last windows empty or partly filled
    leaves[3] = -1  # no history at all
    levels = torch.randint(1, tree.leaf_level + 1, (30,), generator=g)
    with torch.no_grad():
        fused = model.user_share_at(leaves, levels, geometry)
        model.fused_scoring = False
        assert model.user_share_at(leaves, levels, geometry) is None
        torchs = model.user_share(geometry.ancestors(leaves, levels[:, None]))
    torch.testing.assert_close(fused, torchs, rtol=1e-5, atol=1e-5)
    model.fused_scoring = True
    with torch.no_grad():
        b16 = model.user_share_at(leaves, levels, geometry, precision="bfloat16")
    assert (b16 - fused).abs().max() < 0.05 * fused.abs().max()

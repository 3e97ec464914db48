import signal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

import jtm_rs
from jtm_rs import CallbackError, InvalidInputError, Tree, learn_tree


def planted_weights(target: Tree):
    """Weights pointing at `target`: a candidate scores the number of levels of the segment on
    which its path agrees with the path of the item's leaf in `target`."""

    def weights(items, parents, start, end):
        cands = target.descendants(parents, end)  # same node numbering in both trees
        w = np.zeros(cands.shape, dtype=np.float32)
        for level in range(start, end + 1):
            w += target.ancestors(cands, level) == target.item_ancestors(items, level)[:, None]
        return w

    return weights


@pytest.mark.parametrize("arity,d", [(2, 7), (2, 2), (3, 1), (4, 3)])
def test_recovers_a_planted_tree(arity, d):
    items = np.arange(1000, 1500)
    start = Tree.random(items, arity=arity, seed=1)
    planted = Tree.random(items, arity=arity, seed=2)
    learned = learn_tree(planted_weights(planted), d=d, tree=start, chunk_size=97, show_progress=False)
    assert learned == planted
    assert start == Tree.random(items, arity=arity, seed=1), "input tree unchanged"


def path_sum_weights(tree: Tree, n: int, rng) -> np.ndarray:
    """W[item, leaf] = sum over levels of log sigmoid(user . node) for a random 'model':
    the structure of JTM's weights (path sums of log-probabilities)."""
    dim, L = 8, tree.leaf_level
    leaves = np.arange(2**L - 1, 2 ** (L + 1) - 1)
    users = rng.normal(size=(n, dim))
    W = np.zeros((n, len(leaves)))
    for level in range(1, L + 1):
        anc = tree.ancestors(leaves, level)
        emb = rng.normal(size=(tree.n_nodes, dim))[anc]
        W += -np.log1p(np.exp(-(users @ emb.T)))
    return W


@pytest.mark.parametrize("n_items", [64, 50])
def test_one_segment_is_near_the_optimal_assignment(n_items):
    """With d covering the whole tree, tree learning is one assignment problem; compare with
    scipy's exact solver as (greedy - random) / (optimal - random)."""
    ratios = []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        items = np.arange(n_items)
        tree = Tree.random(items, seed=seed, leaf_level=6)
        W = path_sum_weights(tree, n_items, rng)
        learned = learn_tree(lambda it, p, s, e: W[it], d=6, tree=tree, show_progress=False)
        greedy = W[items, learned.leaves(items) - (2**6 - 1)].sum()
        r, c = linear_sum_assignment(W, maximize=True)
        optimal, random = W[r, c].sum(), W.mean() * n_items
        ratios.append((greedy - random) / (optimal - random))
    assert np.mean(ratios) >= 0.95, ratios
    assert min(ratios) >= 0.93, ratios


def test_items_without_signal_keep_their_place():
    tree = Tree.random(np.arange(300), arity=3, seed=9)
    learned = learn_tree(lambda it, p, s, e: np.zeros((len(it), 3 ** (e - s + 1))), d=2, tree=tree, show_progress=False)
    assert learned == tree


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 200), arity=st.integers(2, 4), d=st.integers(1, 8), seed=st.integers(0, 1000))
def test_any_weights_give_a_valid_tree(n, arity, d, seed):
    rng = np.random.default_rng(seed)
    tree = Tree.random(np.arange(n), arity=arity, seed=seed)
    learned = learn_tree(
        lambda it, p, s, e: rng.integers(0, 4, size=(len(it), arity ** (e - s + 1))).astype(np.float32),
        d=d,
        tree=tree,
        max_candidates=int(rng.integers(1, 10)),
        show_progress=False,
    )
    learned.validate()
    assert np.array_equal(learned.items, tree.items)
    assert learned.leaf_level == tree.leaf_level
    for level in range(learned.n_levels):
        live = learned.live_nodes(level)
        counts = np.bincount(np.searchsorted(live, learned.item_ancestors(learned.items, level)))
        assert counts.max() <= learned.capacity(level)


def test_deterministic_and_thread_count_independent():
    items = np.arange(3000)
    tree = Tree.random(items, seed=0)
    W = np.random.default_rng(0).normal(size=(3000, 2**7)).astype(np.float32)

    def weights(it, parents, s, e):
        return W[it, : 2 ** (e - s + 1)]

    a = learn_tree(weights, tree=tree, n_threads=1, show_progress=False)
    b = learn_tree(weights, tree=tree, n_threads=2, chunk_size=333, show_progress=False)
    assert a == b
    assert a != tree


def test_weights_fn_protocol_chunks_and_progress():
    tree = Tree.random(np.arange(500), seed=0)
    calls, progress = [], []

    def weights(items, parents, start, end):
        assert items.dtype == np.int64 and parents.dtype == np.int64
        assert np.all(tree.level_of(parents) == start - 1)
        calls.append((len(items), start, end))
        return np.zeros((len(items), 2 ** (end - start + 1)), dtype=np.float64)

    learn_tree(weights, d=4, tree=tree, chunk_size=64, show_progress=True, callback=lambda *a: progress.append(a))
    assert max(c[0] for c in calls) <= 64
    assert sorted({(s, e) for _, s, e in calls}) == [(1, 4), (5, 8), (9, 9)]
    assert sum(c[0] for c in calls) == 3 * 500
    assert progress[-1] == (2, 3, 500, 500)


def test_torch_weights_are_accepted():
    torch = pytest.importorskip("torch")
    tree = Tree.random(np.arange(100), seed=0)
    planted = Tree.random(np.arange(100), seed=1)
    w = planted_weights(planted)
    learned = learn_tree(lambda *a: torch.from_numpy(w(*a)).requires_grad_(), tree=tree, show_progress=False)
    assert learned == planted


@pytest.mark.parametrize(
    "bad,match",
    [
        (lambda n, c: np.zeros((n, c + 1)), "shape"),
        (lambda n, c: np.zeros((n, c), dtype=np.int64), "dtype"),
        (lambda n, c: np.full((n, c), np.nan), "non-finite"),
        (lambda n, c: np.full((n, c), np.inf, dtype=np.float32), "non-finite"),
        (lambda n, c: [[0.0] * c] * n, "numpy array"),
        (lambda n, c: None, "numpy array"),
    ],
)
def test_bad_weights_raise_and_leave_the_tree_unchanged(bad, match):
    tree = Tree.random(np.arange(100), seed=0)
    before = tree.to_bytes()
    with pytest.raises(CallbackError, match=match):
        learn_tree(lambda it, p, s, e: bad(len(it), 2 ** (e - s + 1)), tree=tree, show_progress=False)
    assert tree.to_bytes() == before


def test_weights_fn_exception_propagates():
    tree = Tree.random(np.arange(100), seed=0)

    def boom(*_):
        raise ZeroDivisionError("model exploded")

    with pytest.raises(ZeroDivisionError, match="model exploded"):
        learn_tree(boom, tree=tree, show_progress=False)


def test_ctrl_c_interrupts_learn_tree(sigint_raises):
    tree = Tree.random(np.arange(5000), seed=0)
    calls = []

    def weights(items, parents, s, e):
        calls.append(1)
        signal.raise_signal(signal.SIGINT)
        return np.zeros((len(items), 2 ** (e - s + 1)), dtype=np.float32)

    with pytest.raises(KeyboardInterrupt):
        learn_tree(weights, tree=tree, chunk_size=100, show_progress=False)
    assert len(calls) == 1


@pytest.mark.parametrize(
    "kwargs",
    [dict(d=0), dict(chunk_size=0), dict(max_candidates=0), dict(rebalance="best"), dict(n_threads=0)],
)
def test_bad_learn_tree_arguments(kwargs):
    tree = Tree.random(np.arange(10), seed=0)
    with pytest.raises(InvalidInputError):
        learn_tree(lambda it, p, s, e: np.zeros((len(it), 2 ** (e - s + 1))), tree=tree, show_progress=False, **kwargs)


def test_paper_rebalance_and_no_improvement_still_valid():
    tree = Tree.random(np.arange(200), seed=0)
    W = np.random.default_rng(1).normal(size=(200, 2**7))
    for rebalance in ("weight", "regret"):
        learned = learn_tree(
            lambda it, p, s, e: W[it, : 2 ** (e - s + 1)],
            tree=tree,
            rebalance=rebalance,
            improve_passes=0,
            show_progress=False,
        )
        learned.validate()
        assert jtm_rs.Tree.from_bytes(learned.to_bytes()) == learned

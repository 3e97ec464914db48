import signal

import numpy as np
import pytest

from jtm_rs import CallbackError, InvalidInputError, Tree, beam_search


def heap_table(tree: Tree, n_users: int, rng) -> np.ndarray:
    """Scores [user, node]: random at the leaves, each inner node the max of its children,
    so the max-heap property holds exactly. Dead nodes get -inf."""
    table = np.full((n_users, tree.n_nodes), -np.inf, dtype=np.float32)
    leaves = tree.leaves(tree.items)
    table[:, leaves] = rng.random((n_users, len(leaves)), dtype=np.float32)
    for level in range(tree.leaf_level - 1, -1, -1):
        for node in tree.live_nodes(level):
            table[:, node] = table[:, tree.children([node])[0]].max(axis=1)
    return table


@pytest.mark.parametrize("n,arity,k,m", [(1000, 2, 20, 10), (500, 3, 7, 7), (40, 2, 64, 40), (300, 4, 1, 1)])
def test_exact_under_max_heap_scores(rng, n, arity, k, m):
    tree = Tree.random(np.arange(n) * 5 + 3, arity=arity, seed=n)
    table = heap_table(tree, 8, rng)
    items, scores = beam_search(tree, lambda u, nodes, level: table[u, nodes], 8, k, m)
    assert items.shape == scores.shape == (8, m) and items.dtype == np.int64 and scores.dtype == np.float32
    leaves = tree.leaves(tree.items)
    for u in range(8):
        best = np.argsort(-table[u, leaves], kind="stable")[:m]
        assert np.array_equal(items[u], tree.items[best])
        assert np.allclose(scores[u], table[u, leaves][best])


def test_one_call_per_level_with_live_nodes_only(rng):
    tree = Tree.from_order(np.arange(37), leaf_level=7)
    seen = []

    def score(users, nodes, level):
        assert users.dtype == np.int64 and nodes.dtype == np.int64
        assert tree.is_live(nodes).all() and np.all(tree.level_of(nodes) == level)
        seen.append(level)
        return rng.random(len(nodes))  # float64 is accepted

    beam_search(tree, score, 5, k=4, m=3)
    assert seen == sorted(set(seen)) and seen[-1] == 7
    assert len(tree.live_nodes(seen[0])) > 4 >= len(tree.live_nodes(seen[0] - 1))


def test_batches_give_the_same_result(rng):
    tree = Tree.random(np.arange(2000), seed=1)
    table = heap_table(tree, 23, rng)
    score = lambda u, nodes, level: table[u, nodes]  # noqa: E731
    whole = beam_search(tree, score, 23, 30, 10)
    batched = beam_search(tree, score, 23, 30, 10, batch_size=5, n_threads=1)
    assert np.array_equal(whole[0], batched[0]) and np.array_equal(whole[1], batched[1])


def test_torch_model_scores():
    torch = pytest.importorskip("torch")
    tree = Tree.random(np.arange(500), seed=0)
    torch.manual_seed(0)
    users = torch.randn(6, 8)
    nodes = torch.nn.Embedding(tree.n_nodes, 8)

    @torch.no_grad()
    def score(u, n, level):
        return (users[torch.from_numpy(u)] * nodes(torch.from_numpy(n))).sum(-1)

    items, scores = beam_search(tree, score, 6, k=50, m=20)
    assert items.shape == (6, 20)
    assert np.all(np.diff(scores, axis=1) <= 0)
    assert all(len(set(row)) == 20 for row in items.tolist())
    assert np.isin(items, tree.items).all()


@pytest.mark.parametrize(
    "bad,match",
    [
        (lambda n: np.zeros(n + 1, dtype=np.float32), "shape"),
        (lambda n: np.zeros((n, 1), dtype=np.float32), "shape"),
        (lambda n: np.zeros(n, dtype=np.int32), "dtype"),
        (lambda n: np.full(n, np.nan, dtype=np.float32), "NaN"),
        (lambda n: [0.0] * n, "numpy array"),
        # Reliability finding 11: float64 beyond float32's range used to become +inf, order lost.
        (lambda n: np.arange(n, dtype=np.float64) * 1e38, "float32's range"),
    ],
)
def test_bad_scores(bad, match):
    tree = Tree.random(np.arange(100), seed=0)
    with pytest.raises(CallbackError, match=match):
        beam_search(tree, lambda u, nodes, level: bad(len(nodes)), 3, 5)


def test_score_fn_exception_propagates_and_ctrl_c_interrupts(sigint_raises):
    tree = Tree.random(np.arange(100), seed=0)

    def boom(*_):
        raise RuntimeError("cuda out of memory")

    with pytest.raises(RuntimeError, match="cuda out of memory"):
        beam_search(tree, boom, 3, 5)

    def interrupted(u, nodes, level):
        signal.raise_signal(signal.SIGINT)
        return np.zeros(len(nodes), dtype=np.float32)

    with pytest.raises(KeyboardInterrupt):
        beam_search(tree, interrupted, 3, 5)


def test_bad_search_arguments():
    tree = Tree.random(np.arange(10), seed=0)
    zero = lambda u, n, level: np.zeros(len(n), dtype=np.float32)  # noqa: E731
    with pytest.raises(InvalidInputError, match="exceeds the beam width"):
        beam_search(tree, zero, 1, k=3, m=4)
    with pytest.raises(InvalidInputError, match="exceeds the 10 items"):
        beam_search(tree, zero, 1, k=20, m=11)
    with pytest.raises(InvalidInputError):
        beam_search(tree, zero, 1, k=0)
    items, scores = beam_search(tree, zero, 0, k=3)
    assert items.shape == (0, 3)
    items, _ = beam_search(tree, zero, 2, k=20, m=10)  # k above the corpus: every item
    assert sorted(items[0].tolist()) == list(range(10))


@pytest.mark.parametrize("hierarchical,attention", [(True, False), (False, False), (True, True)])
def test_model_score_fn_equals_the_model_at_every_level(rng, hierarchical, attention):
    """The scorer of a JTMModel computes each user's first-layer share once per search (for all
    levels; the attention model cannot split and takes the per-level path): every level's
    scores equal the model's forward, over batches of users that replace each other."""
    torch = pytest.importorskip("torch")
    from jtm_rs.features import behaviours_at
    from jtm_rs.geometry import TreeGeometry
    from jtm_rs.model import JTMModel
    from jtm_rs.retrieval import model_score_fn

    tree = Tree.random(np.arange(3000), seed=2)
    torch.manual_seed(0)
    model = JTMModel(tree.n_nodes, attention=attention).eval()
    user_leaves = torch.from_numpy(tree.leaves(rng.choice(3000, size=(7, 30)).ravel()).reshape(7, 30))
    user_leaves[2, 5:] = -1
    geometry = TreeGeometry.of(tree)
    fast = model_score_fn(model, tree, user_leaves, hierarchical=hierarchical)
    seen = []

    def checked(users, nodes, level):
        got = fast(users, nodes, level)
        beh = behaviours_at(geometry, user_leaves[torch.from_numpy(users)], level, hierarchical)
        with torch.no_grad():
            want = model(beh, torch.from_numpy(nodes))
        assert torch.allclose(got, want, atol=1e-5)
        seen.append(level)
        return got

    items, _ = beam_search(tree, checked, 7, k=20, m=10, batch_size=3)
    assert items.shape == (7, 10) and len(seen) == 3 * (tree.leaf_level - seen[0] + 1)

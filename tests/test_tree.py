import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jtm_rs
from jtm_rs import CorruptTreeError, InvalidInputError, Tree, UnknownItemError


def brute_force_counts(tree: Tree) -> dict:
    """Items under every node, from the leaves up by parent arithmetic."""
    counts = {}
    for leaf in tree.leaves(tree.items):
        n = int(leaf)
        while True:
            counts[n] = counts.get(n, 0) + 1
            if n == 0:
                break
            n = (n - 1) // tree.arity
    return counts


def check_invariants(tree: Tree, items: np.ndarray) -> None:
    assert tree.n_items == len(items)
    assert np.array_equal(tree.items, np.sort(items))
    leaves = tree.leaves(items)
    assert len(set(leaves.tolist())) == len(items), "two items on one leaf"
    assert np.all(tree.level_of(leaves) == tree.leaf_level)
    assert np.array_equal(tree.items_at(leaves), items)
    counts = brute_force_counts(tree)
    for level in range(tree.n_levels):
        live = tree.live_nodes(level)
        assert sorted(n for n in counts if tree.level_of([n])[0] == level) == live.tolist()
        assert all(counts[n] <= tree.capacity(level) for n in live)
        assert np.all(tree.ancestors(leaves, level) == tree.item_ancestors(items, level))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 400),
    arity=st.integers(2, 5),
    extra=st.integers(0, 2),
    seed=st.integers(0, 2**32),
    kind=st.sampled_from(["random", "categories", "order", "leaves"]),
)
def test_constructors_hold_invariants(n, arity, extra, seed, kind):
    rng = np.random.default_rng(seed)
    items = rng.choice(10**12, size=n, replace=False) - 5 * 10**11
    level = max(1, int(np.ceil(np.log(n) / np.log(arity) - 1e-9))) + extra
    if kind == "random":
        tree = Tree.random(items, arity, level, seed)
    elif kind == "categories":
        tree = Tree.from_categories(items, rng.integers(0, 5, n), arity, level, seed)
    elif kind == "order":
        tree = Tree.from_order(items, arity, level)
    else:
        first = (arity**level - 1) // (arity - 1)
        leaves = first + rng.choice(arity**level, size=n, replace=False)
        tree = Tree.from_leaves(items, leaves, arity)
        assert np.array_equal(tree.leaves(items), leaves)
    assert tree.leaf_level == level
    check_invariants(tree, items)
    tree.validate()


def test_category_tree_keeps_categories_contiguous():
    items = np.arange(64)
    cats = items % 4
    tree = Tree.from_categories(items, cats, seed=1)
    order = tree.items_at(np.sort(tree.leaves(items)))
    assert np.all(np.diff(cats[order]) >= 0)


def test_accessors_follow_heap_numbering():
    tree = Tree.from_order(np.arange(9), arity=3)
    assert (tree.arity, tree.leaf_level, tree.n_levels, tree.n_nodes, len(tree)) == (3, 2, 3, 13, 9)
    assert tree.children([0, 2]).tolist() == [[1, 2, 3], [7, 8, 9]]
    assert tree.descendants([1, 2], 2).tolist() == [[4, 5, 6], [7, 8, 9]]
    assert tree.descendants([0], 0).tolist() == [[0]]
    assert tree.ancestors([12, 7], 1).tolist() == [3, 2]
    assert tree.level_of([0, 3, 4]).tolist() == [0, 1, 2]
    assert tree.is_live([0, 12]).tolist() == [True, True]
    assert tree.leaves(np.array([[0, 8]])).shape == (1, 2)


def test_empty_leaves_are_not_live():
    tree = Tree.from_order(np.arange(5), arity=2)  # 5 items on 8 leaves
    assert tree.leaf_level == 3
    assert len(tree.live_nodes(3)) == 5
    empty = sorted(set(range(7, 15)) - set(tree.live_nodes(3).tolist()))
    assert not tree.is_live(empty).any()
    assert tree.items_at(empty, default=-7).tolist() == [-7] * 3


def test_hierarchical_features_map_to_ancestors_and_keep_padding():
    tree = Tree.random(np.arange(20), seed=5)
    beh = np.array([[3, 7, -1, -1], [19, 0, 5, -1]])
    for level in range(tree.n_levels):
        f = tree.hierarchical_features(beh, level)
        assert f.shape == beh.shape
        mask = beh == -1
        assert np.all(f[mask] == -1)
        assert np.array_equal(f[~mask], tree.item_ancestors(beh[~mask], level))
    assert np.array_equal(tree.hierarchical_features(beh[:, :2], tree.leaf_level, padding=None), tree.leaves(beh[:, :2]))
    with pytest.raises(UnknownItemError):
        tree.hierarchical_features(np.array([[3, 99]]), 1)


def test_save_load_pickle_and_bytes(tmp_path, small_tree):
    path = tmp_path / "t.jtmtree"
    small_tree.save(path)
    assert Tree.load(path) == small_tree
    assert Tree.load(str(path)) == small_tree
    assert pickle.loads(pickle.dumps(small_tree)) == small_tree
    assert Tree.from_bytes(small_tree.to_bytes()) == small_tree
    assert small_tree != Tree.random(small_tree.items, seed=4)


def test_corrupt_and_truncated_files_are_refused(tmp_path, small_tree):
    data = small_tree.to_bytes()
    for bad in (data[:-1], data[:20], b"", b"not a tree at all, no", data[:40] + bytes([data[40] ^ 1]) + data[41:]):
        path = tmp_path / "bad"
        path.write_bytes(bad)
        with pytest.raises(CorruptTreeError):
            Tree.load(path)
    with pytest.raises(FileNotFoundError):
        Tree.load(tmp_path / "missing")


@pytest.mark.parametrize(
    "make",
    [
        lambda: Tree.random([], seed=0),
        lambda: Tree.random([1, 2], arity=1),
        lambda: Tree.random([1, 2, 3], leaf_level=1),
        lambda: Tree.from_order([1, 1]),
        lambda: Tree.from_leaves([1, 2], [1, 1]),
        lambda: Tree.from_leaves([1, 2], [-1, 2]),
        lambda: Tree.from_categories([1, 2], [1]),
        lambda: Tree.random([1.5, 2.0]),
    ],
)
def test_bad_construction_raises_value_errors(make):
    with pytest.raises((InvalidInputError, ValueError)) as info:
        make()
    assert str(info.value)


def test_bad_queries(small_tree):
    with pytest.raises(UnknownItemError, match="unknown item id 7"):
        small_tree.leaves([100, 7])
    with pytest.raises(InvalidInputError):
        small_tree.live_nodes(99)
    with pytest.raises(InvalidInputError):
        small_tree.ancestors([10**9], 1)
    with pytest.raises(InvalidInputError):
        small_tree.children([small_tree.live_nodes(small_tree.leaf_level)[0]])
    with pytest.raises(InvalidInputError):
        small_tree.descendants([0, 1], 3)
    with pytest.raises(InvalidInputError):
        small_tree.items_at([0])


def test_exception_hierarchy():
    assert issubclass(jtm_rs.UnknownItemError, jtm_rs.InvalidInputError)
    assert issubclass(jtm_rs.InvalidInputError, ValueError)
    assert issubclass(jtm_rs.CorruptTreeError, jtm_rs.JtmError)
    assert issubclass(jtm_rs.JtmInternalError, RuntimeError)


def test_hostile_sizes_raise_instead_of_aborting_or_hanging():
    """Issue "Reliability" findings 1, 4 and 5: each of these aborted, panicked or hung."""
    import struct
    import zlib

    from jtm_rs import CorruptTreeError, InvalidInputError

    body = b"JTMTREE\0" + struct.pack("<IQIQ", 1, 2, 2**32 - 1, 1) + struct.pack("<q", 0) + struct.pack("<Q", 1)
    with pytest.raises(CorruptTreeError, match="int64"):
        jtm_rs.Tree.from_bytes(body + struct.pack("<I", zlib.crc32(body)))
    with pytest.raises(InvalidInputError, match="node ids"):
        jtm_rs.Tree.from_leaves([0], [1], arity=2**62).children([0])
    with pytest.raises(InvalidInputError, match="node ids"):
        jtm_rs.Tree.from_order([0, 1], leaf_level=62).descendants([0], 62)
    wide = jtm_rs.Tree.from_order([0, 1], arity=2**40)  # hung: walked 2^40 empty children
    assert wide.leaf_level == 1 and sorted(wide.items.tolist()) == [0, 1]


def test_many_distinct_thread_counts_do_not_exhaust_threads():
    """Issue "Reliability" finding 9: every distinct n_threads kept a pool forever."""
    items = np.arange(64)
    emb = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    first = jtm_rs.Tree.from_embeddings(items, emb, arity=2, seed=1, n_threads=1)
    for n in range(1, 65):
        assert jtm_rs.Tree.from_embeddings(items, emb, arity=2, seed=1, n_threads=n) == first


def test_ids_outside_int64_and_2d_id_lists_are_refused():
    """Issue "Reliability" finding 10: these were silently wrong ids."""
    with pytest.raises(InvalidInputError, match="int64"):
        Tree.random(np.array([2**63, 1], dtype=np.uint64))
    tree = Tree.random(np.array([5, 1], dtype=np.uint64))  # uint64 within range is fine
    assert sorted(tree.items.tolist()) == [1, 5]
    with pytest.raises(InvalidInputError, match="int64"):
        tree.hierarchical_features(np.array([[2**64 - 1]], dtype=np.uint64), 1)
    with pytest.raises(InvalidInputError, match="1-D"):
        Tree.random(np.arange(4).reshape(2, 2))


@pytest.mark.parametrize(
    "call",
    [
        lambda t: t.beam_search(lambda u, n, l: np.zeros(len(n), np.float32), -1, 4),
        lambda t: t.beam_search(lambda u, n, l: np.zeros(len(n), np.float32), 2, -4),
        lambda t: t.beam_search(lambda u, n, l: np.zeros(len(n), np.float32), 2, 4, n_threads=-1),
        lambda t: Tree.random(t.items, seed=-1),
        lambda t: Tree.random(t.items, seed=2**64),
        lambda t: jtm_rs.learn_tree(lambda i, p, s, e: np.zeros((len(i), 2 ** (e - s + 1))), d=10**30, tree=t,
                                    show_progress=False, n_threads=-2),
        lambda t: jtm_rs.learn_tree(lambda i, p, s, e: np.zeros((len(i), 2 ** (e - s + 1))), tree=t,
                                    show_progress=False, chunk_size=0),
        lambda t: t.generate_samples(t.items[:2], [1] * t.n_levels, seed=-5),
    ],
)
def test_out_of_range_integer_arguments_raise_invalid_input(call):
    """Issue "Reliability" finding 12: these raised OverflowError (or panicked)."""
    tree = Tree.random(np.arange(20), seed=0)
    with pytest.raises(InvalidInputError):
        call(tree)


def _forked_job(queue):
    items = np.arange(256)
    emb = np.random.default_rng(1).normal(size=(256, 4)).astype(np.float32)
    a = Tree.from_embeddings(items, emb, arity=2, seed=1)  # rayon's global pool
    b = Tree.from_embeddings(items, emb, arity=2, seed=1, n_threads=2)  # a cached pool
    queue.put(a == b)


def test_a_forked_child_runs_parallel_calls():
    """Issue "Reliability" finding 6: a child forked after the parent used the Rust core's
    thread pools hung forever in its first parallel call."""
    import multiprocessing

    items = np.arange(256)
    emb = np.random.default_rng(1).normal(size=(256, 4)).astype(np.float32)
    Tree.from_embeddings(items, emb, arity=2, seed=1)
    Tree.from_embeddings(items, emb, arity=2, seed=1, n_threads=2)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_forked_job, args=(queue,))
    child.start()
    child.join(timeout=120)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung in a parallel call")
    assert child.exitcode == 0 and queue.get(timeout=5) is True


def test_contains_matches_isin_over_the_items():
    rng = np.random.default_rng(0)
    items = rng.choice(10**6, 5000, replace=False)
    tree = Tree.random(items, seed=0)
    probe = np.concatenate([rng.choice(items, 300), rng.integers(-5, 10**6, 300)]).reshape(20, 30)
    got = tree.contains(probe)
    assert got.shape == probe.shape and got.dtype == bool
    assert np.array_equal(got, np.isin(probe, items)) and got.any() and not got.all()


def test_kmeans_leaf_order_is_the_from_embeddings_order_and_checks_its_share():
    items = np.arange(500) * 3
    emb = np.random.default_rng(2).normal(size=(500, 4)).astype(np.float32)
    order, owner, level = Tree.kmeans_leaf_order(items, emb, arity=2, seed=1)
    assert order.dtype == np.int64 and owner.dtype == np.uint32 and not owner.any()
    assert Tree.from_order(order, arity=2, leaf_level=level) == Tree.from_embeddings(items, emb, arity=2, seed=1)
    with pytest.raises(InvalidInputError, match="part 2 of 2 parts"):
        Tree.kmeans_leaf_order(items, emb, part=2, parts=2)
    with pytest.raises(InvalidInputError, match="parts must be at least 1"):
        Tree.kmeans_leaf_order(items, emb, parts=0)

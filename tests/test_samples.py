import numpy as np
import pytest

import jtm_rs
from jtm_rs import InvalidInputError, Tree, UnknownItemError, generate_samples


def test_samples_have_one_positive_ancestor_and_live_distinct_negatives():
    tree = Tree.random(np.arange(300), seed=1)
    negatives = [0] + [3] * (tree.leaf_level - 1) + [20]
    targets = np.array([5, 17, 299, 5])
    s = generate_samples(tree, targets, negatives, seed=7)
    assert s.example.dtype == np.int64 and s.label.dtype == np.float32
    for e, t in enumerate(targets):
        rows = s.example == e
        for level in range(1, tree.n_levels):
            at = rows & (s.level == level)
            pos = s.node[at & (s.label == 1)]
            assert pos.tolist() == tree.item_ancestors([t], level).tolist()
            neg = s.node[at & (s.label == 0)]
            expected = min(negatives[level], len(tree.live_nodes(level)) - 1)
            assert len(neg) == expected == len(set(neg.tolist()))
            assert pos[0] not in neg
            assert tree.is_live(neg).all() and np.all(tree.level_of(neg) == level)


def test_samples_are_seeded_and_thread_independent():
    tree = Tree.random(np.arange(1000), seed=1)
    negs = [0] + [2] * tree.leaf_level
    targets = np.arange(1000)
    a = generate_samples(tree, targets, negs, seed=1, n_threads=1)
    b = generate_samples(tree, targets, negs, seed=1, n_threads=2)
    c = generate_samples(tree, targets, negs, seed=2)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert not np.array_equal(a.node, c.node)


def test_start_level_skips_upper_levels():
    tree = Tree.random(np.arange(64), seed=1)
    s = generate_samples(tree, [3], [1] * tree.n_levels, start_level=4)
    assert s.level.min() == 4


def test_bad_sample_arguments():
    tree = Tree.random(np.arange(64), seed=1)
    with pytest.raises(InvalidInputError, match="one count per level"):
        generate_samples(tree, [1], [1, 2])
    with pytest.raises(InvalidInputError, match="negative count"):
        generate_samples(tree, [1], [-1] * tree.n_levels)
    with pytest.raises(UnknownItemError):
        generate_samples(tree, [1000], [1] * tree.n_levels)
    with pytest.raises(InvalidInputError):
        generate_samples(tree, [1], [1] * tree.n_levels, start_level=99)


def test_chunks_with_their_first_stream_equal_the_whole():
    tree = Tree.random(np.arange(500), seed=2)
    negs = [0] + [3] * tree.leaf_level
    targets = np.arange(500)[::-1].copy()
    whole = generate_samples(tree, targets, negs, seed=4)
    parts = [generate_samples(tree, targets[i : i + 128], negs, seed=4, first_stream=i) for i in range(0, 500, 128)]
    for field in ("node", "level", "label"):
        assert np.array_equal(getattr(whole, field), np.concatenate([getattr(p, field) for p in parts]))


def test_an_epoch_trained_in_sample_chunks_is_the_epoch_trained_at_once(monkeypatch, training_setup):
    """train_epoch generates samples a chunk of batches at a time; the chunk size must not
    change what is trained."""
    import torch

    from jtm_rs import training
    from jtm_rs.config import JTMConfig
    from jtm_rs.tree_policy import default_model_factory, new_model

    tree, leaves, negs, examples = training_setup
    states = []
    for chunk in (1 << 15, 16):  # 16 examples: several chunks, each of whole batches
        monkeypatch.setattr(training, "SAMPLE_CHUNK_EXAMPLES", chunk)
        model = new_model(default_model_factory, tree, JTMConfig(), torch.device("cpu"), seed=0)
        opt = training.make_optimizer(model, 1e-2)
        loss = training.train_epoch(model, opt, tree, leaves, examples, negs, hierarchical=True, batch_size=256, seed=3)
        states.append((loss, model.state_dict()))
    (loss_a, a), (loss_b, b) = states
    assert loss_a == loss_b
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_behaviour_leaves_are_each_examples_window_most_recent_first(training_setup):
    """The Rust gather of the examples' behaviour leaves (CPU) against the windows' definition,
    for int32 and int64 positions."""
    import torch

    from jtm_rs._core import example_leaves

    tree, leaves, _, examples = training_setup
    w = leaves.windows
    want = np.full((len(examples), w.max_behaviours), -1, dtype=np.int64)
    all_leaves = tree.leaves(w.items)
    for r, e in enumerate(examples):
        behind = all_leaves[w.row_start[e] : w.pos[e]][::-1][: w.max_behaviours]
        want[r, : len(behind)] = behind
    got = leaves(torch.from_numpy(examples.astype(np.int64)))
    np.testing.assert_array_equal(got.numpy(), want)
    assert (want == -1).any() and (want >= 0).any()
    assert w.pos.dtype == np.int32  # the windows keep int32 places where they fit; int64 beyond
    wide = example_leaves(all_leaves, w.pos.astype(np.int64), w.row_start.astype(np.int64), examples.astype(np.int64),
                          w.max_behaviours)
    np.testing.assert_array_equal(wide, want)
    with pytest.raises(InvalidInputError, match="both int32 or both int64"):
        example_leaves(all_leaves, w.pos, w.row_start.astype(np.int64), examples.astype(np.int64), 3)
    with pytest.raises(InvalidInputError, match="outside"):
        leaves(torch.tensor([len(w)]))

"""Two-tower retrieval: the nearest-neighbour indexes against a plain top-k, SASRec's
sequences and causal encoder, its two losses, and an index that survives save and load."""

import numpy as np
import pytest
import torch

from jtm_rs import Interactions, synthetic
from jtm_rs.baselines import Popularity
from jtm_rs.data import PAD
from jtm_rs.exceptions import InvalidInputError
from jtm_rs.two_tower import ExactIndex, HNSWIndex, SASRec, SequenceEncoder, make_index
from jtm_rs.two_tower.sequences import oldest_first, training_sequences


def _plain_top_k(q, items, k):
    s = q @ items.T
    return np.argsort(-s, axis=1, kind="stable")[:, :k], s


def test_the_exact_index_merges_its_blocks_into_the_true_top_k(rng):
    items = rng.standard_normal((1000, 16)).astype(np.float32)
    q = rng.standard_normal((37, 16)).astype(np.float32)
    # Blocks smaller than k and than the catalogue, and query batches that do not divide it.
    index = ExactIndex(items, query_batch=10, item_block=7)
    D, I = index.search(q, 20)
    want, s = _plain_top_k(q, items, 20)
    assert I.shape == D.shape == (37, 20) and I.dtype == np.int64 and D.dtype == np.float32
    assert np.array_equal(I, want)
    assert np.allclose(D, np.take_along_axis(s, want, 1), atol=1e-5)
    assert index.search(q[:2], 5000)[1].shape == (2, 1000)  # k beyond the catalogue: every item


def test_hnsw_finds_nearly_the_exact_neighbours_and_survives_serialisation(rng):
    items = rng.standard_normal((3000, 16)).astype(np.float32)
    q = rng.standard_normal((50, 16)).astype(np.float32)
    exact = make_index("exact", items).search(q, 10)[1]
    hnsw = make_index("hnsw", items, m=16, ef_search=128)
    _, I = hnsw.search(q, 10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, exact)])
    assert overlap >= 0.9
    back = HNSWIndex(serialized=hnsw.state()["hnsw"], ef_search=128)
    assert np.array_equal(back.search(q, 10)[1], I)
    with pytest.raises(InvalidInputError, match="dimensions"):
        hnsw.search(q[:, :8], 10)
    with pytest.raises(InvalidInputError, match="unknown index"):
        make_index("ivf", items)
    with pytest.raises(InvalidInputError, match="NaN"):
        ExactIndex(np.full((2, 2), np.nan))


def test_training_sequences_make_every_behaviour_but_the_first_a_target_once():
    # User 0: 7 behaviours (cut into pieces at max_length 3), user 1: 2, user 2: 1 (no target).
    items = [10, 11, 12, 13, 14, 15, 16, 20, 21, 30]
    users = [0] * 7 + [1] * 2 + [2]
    train = Interactions(users, items, np.arange(len(items)))
    inputs, targets = training_sequences(train, max_length=3)
    assert inputs.shape[1] == targets.shape[1] == 3
    got = sorted(t for t in targets.ravel().tolist() if t != PAD)
    assert got == [11, 12, 13, 14, 15, 16, 21]
    # Within a piece, each target is the item right after its input, in the user's order.
    pairs = {(a, b) for a, b in zip(inputs.ravel(), targets.ravel()) if b != PAD}
    assert pairs == {(10, 11), (11, 12), (12, 13), (13, 14), (14, 15), (15, 16), (20, 21)}
    assert np.all((inputs == PAD) == (targets == PAD))


def test_oldest_first_reverses_the_most_recent_and_drops_unknown_items():
    feats = np.array([[3, 2, 1, PAD], [7, 99, 5, 4], [PAD, PAD, PAD, PAD]])
    seq = oldest_first(feats, max_length=2, n_items=10)
    # Row 0: the two most recent (3, 2), oldest first; row 1: 99 is unknown, so 7 and 5.
    assert seq.tolist() == [[2, 3], [5, 7], [PAD, PAD]]


def test_the_encoder_is_causal():
    torch.manual_seed(0)
    enc = SequenceEncoder(50, dim=16, blocks=2, heads=2, max_length=8, dropout=0.0).eval()
    seq = torch.tensor([[1, 2, 3, 4, 5, PAD]])
    later = seq.clone()
    later[0, 3:5] = torch.tensor([40, 41])
    with torch.no_grad():
        a, b = enc(seq), enc(later)
    assert torch.allclose(a[0, :3], b[0, :3], atol=1e-6)  # positions before the change
    assert not torch.allclose(a[0, 3], b[0, 3])
    # The user vector is the output at the last behaviour, whatever padding follows.
    with torch.no_grad():
        assert torch.allclose(enc.last(seq)[0], a[0, 4]) and torch.allclose(enc.last(seq[:, :5])[0], a[0, 4], atol=1e-6)


@pytest.fixture(scope="module")
def sequential_split():
    return synthetic.generate(300, 400, seed=7).interactions.filter_users(10).split(0.1, 0.1, seed=0)


@pytest.mark.parametrize("loss", ["full", "sampled"])
def test_sasrec_learns_the_sequences_beyond_popularity(loss, sequential_split):
    split = sequential_split
    ev = split.test.evaluation_users()
    pop = Popularity().fit(split).evaluate(ev, 20)["recall"]
    rec = SASRec(dim=32, dropout=0.2, loss=loss, negatives=64, max_epochs=10, patience=10, learning_rate=5e-3,
                 validation_m=20, seed=0, device="cpu", n_threads=1)
    rec.fit(split, show_progress=False)
    assert len(rec.history) == 10 and rec.history[-1].loss < rec.history[0].loss
    got = rec.evaluate(ev, 20)["recall"]
    assert got > 1.2 * pop, (got, pop)


def test_sasrec_retrieves_through_its_index_and_keeps_it_on_save(sequential_split, tmp_path):
    split = sequential_split
    rec = SASRec(dim=16, max_epochs=1, seed=0, device="cpu", n_threads=1).fit(split, show_progress=False)
    ev = split.test.evaluation_users()
    ids, scores = rec.retrieve(ev.features, 15)
    # Exact: the same as scoring every item with the two towers.
    users, items = rec.user_vectors(ev.features), rec.item_vectors()
    want, s = _plain_top_k(users, items, 15)
    assert np.array_equal(ids, rec.catalogue[want]) and np.allclose(scores, np.take_along_axis(s, want, 1), atol=1e-4)
    # One row per item of the data, however far its ids spread (the generator spreads them).
    every = np.unique(np.concatenate([p.item for p in (split.train, split.validation, split.test)]))
    assert np.array_equal(rec.catalogue, every) and len(items) == len(every) < every.max()
    assert rec.index.ntotal == len(every) and rec.known_items(np.array([every[3], every[3] + 1])).tolist() == [True, False]
    rec.build_index("hnsw", m=8, ef_search=64)
    approx, _ = rec.retrieve(ev.features, 15)
    assert np.mean([len(set(a) & set(b)) / 15 for a, b in zip(approx, ids)]) >= 0.9
    rec.save(tmp_path / "m")
    back = SASRec.load(tmp_path / "m")
    assert isinstance(back.index, HNSWIndex) and back.index_options == {"m": 8, "ef_search": 64}
    assert np.array_equal(back.retrieve(ev.features, 15)[0], approx)


def test_sasrec_refuses_bad_options():
    with pytest.raises(InvalidInputError, match="loss"):
        SASRec(loss="bpr")
    with pytest.raises(InvalidInputError, match="multiple of heads"):
        SASRec(dim=10, heads=3)
    with pytest.raises(InvalidInputError, match="dropout"):
        SASRec(dropout=1.0)
    with pytest.raises(InvalidInputError, match="unknown index"):
        SASRec(index="lsh")


def test_the_sasrec_initial_tree_groups_items_that_follow_each_other(sequential_split):
    """``initial_tree="sasrec"``: balanced k-means over SASRec's item vectors, over every item of
    the split; consecutive behaviours share a node 3 levels above the leaves far more often
    than in a random tree, and the tree is the same for the same seed."""
    from jtm_rs import JTMConfig, Tree
    from jtm_rs.tree_policy import initial_tree

    split = sequential_split
    parts = [split.train, split.validation, split.test]
    config = JTMConfig(initial_tree="sasrec", seed=0)
    tree = initial_tree(parts, config, n_threads=1)
    every = np.unique(np.concatenate([p.item for p in parts]))
    assert np.array_equal(tree.items, every)
    tree.validate()
    train = split.train
    # Consecutive behaviours of one user on two different items (a quarter repeat the item).
    pair = (train.user[1:] == train.user[:-1]) & (train.item[1:] != train.item[:-1])
    a, b = train.item[:-1][pair], train.item[1:][pair]

    def shared(t: Tree) -> float:
        level = t.leaf_level - 3
        return float(np.mean(t.item_ancestors(a, level) == t.item_ancestors(b, level)))

    random = Tree.random(every, seed=0)
    assert shared(tree) > 5 * shared(random), (shared(tree), shared(random))
    assert initial_tree(parts, config, n_threads=1) == tree
    with pytest.raises(InvalidInputError, match="initial_tree"):
        JTMConfig(initial_tree="sasrec-ish")

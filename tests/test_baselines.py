"""Popularity and Item-CF on hand-made examples, the k-means initial tree from Python, and
the data's own ids (strings, negatives, huge ints) through fit/recommend/save/load."""

import numpy as np
import pytest

from jtm_rs import JTM, Interactions, Tree, synthetic
from jtm_rs.baselines import ItemCF, Popularity, top_m
from jtm_rs.cooccurrence import cooccurrence
from jtm_rs.data import PAD, Split
from jtm_rs.exceptions import InvalidInputError, UnknownItemError


def _split(train: Interactions) -> Split:
    empty = train._with_rows(np.zeros(len(train), dtype=bool))
    return Split(train, empty, empty)


def test_popularity_ranks_by_training_count():
    train = Interactions([0, 0, 0, 1, 1, 2], [5, 3, 5, 5, 1, 3], np.arange(6))
    pop = Popularity().fit(_split(train))
    ids, scores = pop.retrieve(np.full((2, 3), PAD), 3)
    assert ids.tolist() == [[5, 3, 1]] * 2 and scores[0].tolist() == [3, 2, 1]


def test_cooccurrence_counts_pairs_within_the_window_of_one_user():
    d = Interactions([0, 0, 0, 1, 1], [0, 1, 2, 2, 0], np.arange(5))
    c = cooccurrence(d, 3, window=1).toarray()
    # user 0: (0,1), (1,2); user 1: (2,0). Never across users, never an item with itself.
    assert c.tolist() == [[0, 1, 1], [1, 0, 1], [1, 1, 0]]
    c2 = cooccurrence(d, 3, window=2).toarray()
    assert c2[0, 2] == 2  # (0,2) at distance 2 for user 0, distance 1 for user 1


def test_itemcf_scores_by_cosine_similarity_to_the_behaviours():
    # Items 0 and 1 always occur together; item 2 occurs with 0 once among many 0s.
    users, items = [], []
    for u in range(4):
        users += [u, u]
        items += [0, 1]
    users += [9, 9, 9]
    items += [0, 2, 3]
    train = Interactions(users, items, np.arange(len(users)))
    cf = ItemCF(window=1).fit(_split(train))
    # sim(0,1) = 4 / sqrt(5 * 4); sim(0,2) = 1 / sqrt(5 * 1); a user who has item 0 gets 1 first.
    ids, scores = cf.retrieve(np.array([[0, PAD]]), 2)
    assert ids[0, 0] == 1 and scores[0, 0] == pytest.approx(4 / np.sqrt(20), rel=1e-5)
    assert ids[0, 1] in (0, 2)
    # A user whose item 3 co-occurs only with 2 gets 2 first.
    ids, _ = cf.retrieve(np.array([[3, PAD]]), 1)
    assert ids.tolist() == [[2]]
    with pytest.raises(InvalidInputError):
        ItemCF(window=0)


def test_top_m_orders_best_first():
    ids, vals = top_m(np.array([[0.1, 0.9, 0.5, 0.7]]), 3)
    assert ids.tolist() == [[1, 3, 2]] and vals[0].tolist() == pytest.approx([0.9, 0.7, 0.5])


def test_kmeans_tree_is_balanced_and_deterministic():
    rng = np.random.default_rng(0)
    items = rng.permutation(1000) * 7 + 3
    emb = rng.standard_normal((1000, 8)).astype(np.float32)
    a = Tree.from_embeddings(items, emb, arity=3, seed=1)
    b = Tree.from_embeddings(items, emb, arity=3, seed=1, n_threads=1)
    assert np.array_equal(a.leaves(items), b.leaves(items))
    a.validate()
    # Balanced: at every level, live nodes hold item counts differing by at most one.
    leaves = a.leaves(items)
    for level in range(1, a.leaf_level):
        counts = np.unique(a.ancestors(leaves, level), return_counts=True)[1]
        assert counts.max() - counts.min() <= 1
    with pytest.raises(InvalidInputError, match="rows"):
        Tree.from_embeddings(items, emb[:10])
    with pytest.raises(InvalidInputError, match="NaN"):
        Tree.from_embeddings(items[:2], np.array([[0.0], [np.nan]], dtype=np.float32))


@pytest.mark.parametrize(
    "to_id",
    [lambda i: f"item-{i}", lambda i: -1 - int(i), lambda i: 2**62 + int(i) * 2**40],
    ids=["strings", "negative", "huge"],
)
def test_the_datas_ids_round_trip_through_fit_recommend_save_load(to_id, tmp_path):
    gen = synthetic.generate(128, 200, seed=2).interactions
    items = np.array([to_id(i) for i in gen.item])
    users = np.array([f"user {u}" for u in gen.user])
    data = Interactions.from_ids(users, items, gen.timestamp).filter_users(10)
    split = data.split(0.1, 0.1, seed=0)
    model = JTM(iterations=1, max_examples_per_epoch=2000, validation_users=20, validation_m=10, seed=0).fit(
        split, show_progress=False
    )
    known = set(np.asarray(data.item_ids.ids).tolist())
    history = data.item_ids.decode(data.item[data.user == data.user[0]]).tolist()
    ids, scores = model.recommend([history], 10)
    assert ids.shape == (1, 10) and set(ids[0].tolist()) <= known
    model.save(tmp_path / "m")
    back = JTM.load(tmp_path / "m")
    ids2, scores2 = back.recommend([history], 10)
    assert ids2.tolist() == ids.tolist() and np.allclose(scores, scores2)
    # The array layout with a pad value that is not an id of the data.
    arr = np.array([history[::-1][:69]], dtype=object)
    ids3, _ = back.recommend(arr, 10, pad=object())
    assert ids3.tolist() == ids.tolist()
    with pytest.raises(UnknownItemError):
        back.recommend([["never seen"] if isinstance(history[0], str) else [12345]], 10)
    assert back.recommend([["never seen"] if isinstance(history[0], str) else [12345]], 10, on_unknown="ignore")[0].shape == (1, 10)


def test_hsm_beam_search_is_exact_when_the_beam_holds_every_node():
    import torch

    from jtm_rs.baselines import HSM

    gen = synthetic.generate(64, 120, seed=5).interactions.filter_users(10)
    split = gen.split(0.1, 0.1, seed=0)
    hsm = HSM(max_epochs=1, seed=0, device="cpu").fit(split, show_progress=False)
    feats = split.test.evaluation_users().features[:4]
    tree = hsm.tree
    ids, scores = HSM.retrieve(hsm, feats, tree.n_items)
    # Brute force: the path log-probability of every item, from the same model.
    with torch.no_grad():
        u = hsm.model.user(torch.from_numpy(feats))
        items = tree.items
        leaves = torch.from_numpy(tree.leaves(items))
        total = torch.zeros(len(feats), len(items))
        b = tree.arity
        for level in range(1, tree.leaf_level + 1):
            node = hsm.geometry.ancestors(leaves, level)
            parent = (node - 1) // b
            sib = parent[:, None] * b + torch.arange(1, b + 1)
            logits = torch.einsum("uh,ich->uic", u, hsm.model.nodes(sib)).masked_fill(~hsm.live[sib], float("-inf"))
            logp = torch.log_softmax(logits, dim=-1)
            total += logp.gather(2, (node - sib[:, 0]).expand(len(feats), -1)[..., None]).squeeze(-1)
    best = np.argsort(-total.numpy(), axis=1, kind="stable")
    assert np.allclose(np.sort(scores, axis=1), np.sort(total.numpy(), axis=1), atol=1e-4)
    assert set(ids[0, :5].tolist()) == set(items[best[0, :5]].tolist())


def test_cooccurrence_embeddings_do_not_depend_on_how_far_ids_spread():
    """The SVD has one row per item, not per id up to the largest: spreading the ids out
    (as the generator and real catalogues do) changes nothing but the labels."""
    import dataclasses

    from jtm_rs.cooccurrence import cooccurrence_embeddings

    gen = synthetic.generate(200, 300, seed=4).interactions
    dense_items, dense = np.unique(gen.item, return_inverse=True)
    near = dataclasses.replace(gen, item=dense.astype(np.int64))
    far = dataclasses.replace(gen, item=dense.astype(np.int64) * 10**6)
    a = cooccurrence_embeddings(near, np.arange(len(dense_items)), seed=0)
    b = cooccurrence_embeddings(far, np.arange(len(dense_items)) * 10**6, seed=0)
    assert a.shape == b.shape == (len(dense_items), 24) and np.abs(a).max() > 0
    assert np.allclose(np.abs(a), np.abs(b), atol=1e-5)

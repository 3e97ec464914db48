"""The weights_fn of tree learning against direct model scoring."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import jtm_rs
from jtm_rs import synthetic
from jtm_rs.model import JTMModel
from jtm_rs.features import BehaviourLeaves
from jtm_rs.tree_weights import item_samples, model_weights_fn


def test_item_samples_caps_and_weights():
    targets = np.array([5, 7, 5, 5, 9, 7, 5])
    keys, indptr, rows, scale = item_samples(targets, max_per_item=2, seed=0)
    assert keys.tolist() == [5, 7, 9]
    assert np.diff(indptr).tolist() == [2, 2, 1]
    assert all(targets[rows[indptr[k] : indptr[k + 1]]].tolist() == [keys[k]] * (indptr[k + 1] - indptr[k]) for k in range(3))
    assert scale.tolist() == [2.0, 1.0, 1.0]  # item 5: 4 samples stand for 2 kept
    _, indptr, _, scale = item_samples(targets, None)
    assert np.diff(indptr).tolist() == [4, 2, 1] and scale.tolist() == [1.0, 1.0, 1.0]


def _sorted_samples(targets, max_per_item, seed):
    """The samples as a stable sort of the permuted targets gives them (the Rust pass's reference)."""
    perm = np.random.default_rng(seed).permutation(len(targets))
    order = perm[np.argsort(targets[perm], kind="stable")]
    keys, first, counts = np.unique(targets[order], return_index=True, return_counts=True)
    kept = counts if max_per_item is None else np.minimum(counts, max_per_item)
    if max_per_item is not None:
        order = order[np.arange(len(order)) - np.repeat(first, counts) < max_per_item]
    return keys, np.concatenate(([0], np.cumsum(kept))), order, counts / np.maximum(kept, 1)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("cap", [None, 1, 3])
def test_item_samples_are_a_stable_sort_of_the_permutation(dtype, cap):
    rng = np.random.default_rng(4)
    for targets in (rng.integers(0, 50, 3000), rng.integers(0, 1 << 30, 500), np.zeros(1, int)):
        targets = targets.astype(dtype)
        got, want = item_samples(targets, cap, seed=9), _sorted_samples(targets, cap, 9)
        for g, w in zip(got, want):
            assert np.array_equal(g, w)


def test_item_samples_refuse_negative_ids():
    with pytest.raises(jtm_rs.InvalidInputError, match="non-negative"):
        item_samples(np.array([3, -1, 2]), 2)


@pytest.mark.parametrize("hierarchical, arity, start", [(True, 2, 2), (False, 2, 1), (True, 3, 2)])
def test_weights_agree_with_direct_scoring(hierarchical, arity, start):
    data = synthetic.generate(80, 30, seed=1, min_length=3, mean_length=6).interactions
    tree = jtm_rs.Tree.random(data.items, arity=arity, seed=2)
    w = data.training_windows()
    torch.manual_seed(0)
    model = JTMModel(tree.n_nodes).eval()
    leaves = BehaviourLeaves(w, tree, torch.device("cpu"))
    fn = model_weights_fn(model, tree, leaves, hierarchical=hierarchical, max_samples_per_item=3, batch_pairs=64)
    end = tree.leaf_level
    items = np.concatenate([tree.items[:8], [tree.items[-1]]])
    parents = tree.item_ancestors(items, start - 1)
    got = fn(items, parents, start, end)
    keys, indptr, rows, scale = item_samples(w.targets, 3, 0)
    assert got.shape == (len(items), arity ** (end - start + 1))
    with torch.no_grad():
        for i, item in enumerate(items):
            k = np.searchsorted(keys, item)
            mine = rows[indptr[k] : indptr[k + 1]] if k < len(keys) and keys[k] == item else []
            cands = tree.descendants(parents[i : i + 1], end)[0]
            for c, cand in enumerate(cands):
                total = 0.0
                for r in mine:
                    beh_items = w.behaviours(np.array([r]))
                    for j in range(start, end + 1):
                        beh = tree.hierarchical_features(beh_items, j if hierarchical else end, padding=-1)
                        node = tree.ancestors(np.array([cand]), j)
                        total += float(F.logsigmoid(model(torch.from_numpy(beh), torch.from_numpy(node))))
                expect = total * (scale[k] if len(mine) else 0.0)
                assert got[i, c] == pytest.approx(expect, rel=1e-4, abs=1e-4), (item, c)


def test_stay_bonus_is_per_training_example_of_the_item():
    data = synthetic.generate(80, 30, seed=1, min_length=3, mean_length=6).interactions
    tree = jtm_rs.Tree.random(data.items, arity=2, seed=2)
    w = data.training_windows()
    model = JTMModel(tree.n_nodes).eval()
    leaves = BehaviourLeaves(w, tree, torch.device("cpu"))
    assert model_weights_fn(model, tree, leaves, max_samples_per_item=3).stay_bonus is None
    bonus = model_weights_fn(model, tree, leaves, max_samples_per_item=3, stay_bonus=2.0).stay_bonus
    counts = np.array([int((w.targets == i).sum()) for i in tree.items])
    assert np.allclose(bonus, 2.0 * counts) and (counts == 0).any() and (counts > 1).any()


def test_stay_bonus_lands_on_the_old_place_only():
    """Weights that send every item to its old ancestor's sibling at level L-1: with a bonus
    larger than that pull, items keep their level L-1 ancestors (the bonus lands on the old
    place); in the last segment, which gets no bonus, they follow the weights."""
    items = np.arange(80)
    tree = jtm_rs.Tree.random(items, arity=2, seed=2)
    L = tree.leaf_level

    def weights(its, parents, start, end):
        cands = tree.descendants(parents, end)
        if end < L:  # pull towards the sibling of the old ancestor at `end`
            target = tree.item_ancestors(its, end)
            target = np.where(target % 2 == 1, target + 1, target - 1)
        else:  # the last segment: pull towards the other child of the new parent
            target = tree.leaves(its)
            target = np.where(target % 2 == 1, target + 1, target - 1)
        return (cands == target[:, None]).astype(np.float64)

    d = L - 1
    moved = jtm_rs.learn_tree(weights, d, tree=tree, show_progress=False)
    stayed = jtm_rs.learn_tree(weights, d, tree=tree, stay_bonus=10.0, show_progress=False)
    before = tree.item_ancestors(items, L - 1)
    assert (moved.item_ancestors(items, L - 1) != before).all()
    assert (stayed.item_ancestors(items, L - 1) == before).all()
    # Per item, too: only the items given a bonus stay.
    some = np.where(items % 2 == 0, 10.0, 0.0)
    half = jtm_rs.learn_tree(weights, d, tree=tree, stay_bonus=some, show_progress=False)
    same = half.item_ancestors(items, L - 1) == before
    assert same[items % 2 == 0].all() and not same[items % 2 == 1].all()


def test_bfloat16_weights_approximate_float32():
    data = synthetic.generate(80, 30, seed=1, min_length=3, mean_length=6).interactions
    tree = jtm_rs.Tree.random(data.items, arity=2, seed=2)
    torch.manual_seed(0)
    model = JTMModel(tree.n_nodes).eval()
    with torch.no_grad():  # logits of a trained model's size, where bfloat16's rounding shows
        model.mlp[-1].weight.mul_(200.0)
    leaves = BehaviourLeaves(data.training_windows(), tree, torch.device("cpu"))
    items = tree.items[:10]
    parents = tree.item_ancestors(items, 1)
    exact = model_weights_fn(model, tree, leaves, max_samples_per_item=3)(items, parents, 2, tree.leaf_level)
    fast = model_weights_fn(model, tree, leaves, max_samples_per_item=3, precision="bfloat16")(items, parents, 2, tree.leaf_level)
    assert np.abs(exact).max() > 1.0 and not np.array_equal(exact, fast)  # really another arithmetic
    assert np.allclose(fast, exact, rtol=0.05, atol=0.05 * np.abs(exact).max())
    with pytest.raises(jtm_rs.InvalidInputError, match="precision"):
        model_weights_fn(model, tree, leaves, precision="float16")
    with pytest.raises(jtm_rs.InvalidInputError, match="weights_precision"):
        jtm_rs.JTMConfig(weights_precision="half")
    from jtm_rs.tree_policy import resolve_precision as _weights_precision

    assert _weights_precision("float32", torch.device("cpu")) == "float32"
    assert _weights_precision("auto", torch.device("cpu")) in ("float32", "bfloat16")


def _random_setup(n_items: int, n_users: int, seed: int):
    """Generated data, a random binary tree over its items and an untrained model: ``(tree,
    model, leaves of the training windows)``."""
    data = synthetic.generate(n_items, n_users, seed=seed).interactions
    tree = jtm_rs.Tree.random(data.items, arity=2, seed=seed + 1)
    torch.manual_seed(0)
    model = JTMModel(tree.n_nodes).eval()
    return tree, model, BehaviourLeaves(data.training_windows(), tree, torch.device("cpu"))


def test_weights_with_a_thread_tuner_equal_those_without():
    """The tuner only changes torch's thread count between blocks of scoring; it restores it."""
    from jtm_rs.threads import ThreadTuner

    tree, model, leaves = _random_setup(300, 200, seed=1)
    items = tree.items
    parents = tree.item_ancestors(items, 1)
    plain = model_weights_fn(model, tree, leaves)(items, parents, 2, 6)
    before = torch.get_num_threads()
    tuner = ThreadTuner(2, rounds=1)
    tuned = model_weights_fn(model, tree, leaves, threads=tuner, batch_pairs=4096)(items, parents, 2, 6)
    tuner.finish()
    assert tuner.chosen in (1, 2) and torch.get_num_threads() == before
    assert np.allclose(tuned, plain, rtol=1e-5, atol=1e-4)


def test_only_scores_the_items_given_and_leaves_the_others_zero():
    tree, model, leaves = _random_setup(200, 80, seed=3)
    items = tree.items
    parents = tree.item_ancestors(items, 1)
    chosen = items[::7]
    full = model_weights_fn(model, tree, leaves)(items, parents, 2, 5)
    part = model_weights_fn(model, tree, leaves, only=chosen, stay_bonus=0.5)
    w = part(items, parents, 2, 5)
    sel = np.isin(items, chosen)
    assert np.abs(full[sel]).min() > 0 and np.allclose(w[sel], full[sel], rtol=1e-6, atol=1e-6)
    assert not w[~sel].any()
    assert (part.stay_bonus[~sel] == 0).all() and (part.stay_bonus[sel] > 0).all()

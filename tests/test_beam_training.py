"""Beam-aware training (OTM): the sampler's candidates are a beam search's, and the estimated
optimal pseudo targets follow the model's greedy descent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jtm_rs import JTM, JTMConfig, Tree, synthetic
from jtm_rs.beam_training import BeamSampler, optimal_pseudo_targets, sibling_best
from jtm_rs.config import variant_name
from jtm_rs.exceptions import InvalidInputError
from jtm_rs.geometry import TreeGeometry
from jtm_rs.retrieval import model_score_fn


@pytest.fixture(scope="module")
def fitted():
    split = synthetic.generate(600, 400, seed=3).interactions.filter_users(10).split(0.1, 0.2, seed=0)
    jtm = JTM(iterations=0, max_examples_per_epoch=3000, device="cpu", seed=0, n_threads=1).fit(split, show_progress=False)
    return jtm, split


def _python_beam(tree: Tree, score, n_users: int, k: int):
    """A plain beam search, written out here: per user, the first level with more than k live
    nodes whole, then the live children of the k best; returns every (user, node) scored."""
    live = {lvl: set(tree.live_nodes(lvl).tolist()) for lvl in range(tree.leaf_level + 1)}
    start = next(lvl for lvl in range(tree.leaf_level + 1) if len(live[lvl]) > k)
    pairs = set()
    for u in range(n_users):
        nodes = sorted(live[start])
        for level in range(start, tree.leaf_level + 1):
            if level > start:
                nodes = sorted(c for b in beam for c in range(b * tree.arity + 1, b * tree.arity + tree.arity + 1)
                               if c in live[level])
            pairs.update((u, n) for n in nodes)
            s = np.asarray(score(np.full(len(nodes), u, dtype=np.int64), np.array(nodes, dtype=np.int64), level))
            order = sorted(range(len(nodes)), key=lambda i: (-s[i], nodes[i]))
            beam = [nodes[i] for i in order[:k]]
    return pairs


@pytest.mark.parametrize("k", [1, 3, 8])
def test_the_samplers_candidates_are_a_beam_searchs(fitted, k):
    jtm, split = fitted
    windows = split.train.training_windows(jtm.config.max_behaviours)
    from jtm_rs.features import BehaviourLeaves

    behaviour_leaves = BehaviourLeaves(windows, jtm.tree, torch.device("cpu"))(torch.arange(0, 40, 3))
    sampler = BeamSampler(jtm.tree, TreeGeometry.of(jtm.tree), k, hierarchical=True)
    example, node = sampler.candidates(jtm.model, behaviour_leaves)
    got = set(zip(example.tolist(), node.tolist()))
    score = model_score_fn(jtm.model, jtm.tree, behaviour_leaves, hierarchical=True)
    assert got == _python_beam(jtm.tree, score, len(behaviour_leaves), k)
    assert len(got) == len(example)  # each pair once: one search, each level once


def test_optimal_pseudo_targets_follow_the_greedy_descent():
    # Levels 1..4. Example 0: the ancestor loses to a sibling at level 2 only; example 1 wins
    # everywhere; example 2 loses at the leaves; example 3 has no scored sibling at level 3.
    path = torch.tensor([[0.5, 0.2, 0.9, 0.4], [1.0, 1.0, 1.0, 1.0], [0.3, 0.3, 0.3, 0.1], [0.0, 0.5, 0.0, 0.7]])
    best = torch.tensor([[0.1, 0.3, 0.1, 0.2], [0.0, 0.0, 0.0, 0.0], [0.2, 0.2, 0.2, 0.5],
                         [-1.0, 0.9, float("-inf"), 0.1]])
    z = optimal_pseudo_targets(path, best)
    assert z.tolist() == [[0, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1], [0, 1, 1, 1]]


def test_pseudo_targets_on_a_hand_made_tree():
    """Items 0..7 on the leaves of a 3-level binary tree, in order (leaf of item i: node 7 + i).
    The target is item 5, leaf 12, with ancestors 2 (level 1) and 5 (level 2); their siblings
    are 1, 6 and 11. Scores are a table by node."""
    tree = Tree.from_order(np.arange(8), arity=2)
    g = TreeGeometry.of(tree)
    assert tree.leaves(np.array([5])).tolist() == [12]
    sampler = BeamSampler(tree, g, 0, hierarchical=True, optimal_targets=True)
    path = torch.tensor([[2, 5, 12]])
    example, level, node = sampler.samples(None, torch.zeros(1, 1, dtype=torch.int64), path)
    assert node.tolist() == [1, 6, 11] and level.tolist() == [1, 2, 3] and example.tolist() == [0, 0, 0]

    def labels(table):
        scores = torch.tensor(table, dtype=torch.float32)
        best = sibling_best(example, level, node, scores[node], path, g)
        return optimal_pseudo_targets(scores[path], best)[0].tolist()

    table = [0.0] * 15
    table[2], table[1] = 0.8, 0.1  # level 1: the ancestor wins
    table[5], table[6] = 0.3, 0.7  # level 2: the sibling wins, so greedy descent from 2 misses
    table[12], table[11] = 0.9, 0.2  # leaves: the target wins, so from 5 it reaches it
    assert labels(table) == [0, 1, 1]
    table[5] = 0.75
    assert labels(table) == [1, 1, 1]
    table[11] = 0.95
    assert labels(table) == [0, 0, 1]  # the leaf's own label is always 1


def test_a_fit_with_beam_aware_training_trains_and_is_named(fitted):
    _, split = fitted
    jtm = JTM(iterations=1, max_examples_per_epoch=1500, beam_samples=4, pseudo_targets="optimal", device="cpu",
              seed=0, n_threads=1, validation_users=50, validation_m=20).fit(split, show_progress=False)
    assert jtm.name == "jtm-otm"
    assert all(np.isfinite(r.train_loss) for r in jtm.history) and len(jtm.history) == 2
    assert jtm.evaluate(split.test, 20)["recall"] > 0.05  # far above chance (20 of 400 items, ~0.05 x hits)
    assert variant_name(JTMConfig(beam_samples=4)) == "jtm"  # the named row is both parts together
    several = JTM(iterations=0, max_examples_per_epoch=800, beam_samples=2, beam_targets=5, device="cpu", seed=0,
                  n_threads=1, validation_users=50, validation_m=20).fit(split, show_progress=False)
    assert np.isfinite(several.history[0].train_loss)


def test_the_options_are_checked():
    with pytest.raises(InvalidInputError, match="beam_samples"):
        JTMConfig(beam_samples=-1)
    with pytest.raises(InvalidInputError, match="beam_weight"):
        JTMConfig(beam_weight=0.0)
    with pytest.raises(InvalidInputError, match="pseudo_targets"):
        JTMConfig(pseudo_targets="soft")
    with pytest.raises(InvalidInputError, match="beam_targets"):
        JTMConfig(beam_targets=0)


def test_the_users_next_items_label_the_added_samples():
    """On the hand-made tree (leaf of item i: node 7 + i): the target is item 5 (leaf 12) and
    the user goes on to item 2 (leaf 9; ancestors 1, 4). The added samples are the siblings
    1, 6, 11: node 1 is item 2's ancestor, so it is labelled 1, the others 0; without the
    items ahead (one target), all 0."""
    tree = Tree.from_order(np.arange(8), arity=2)
    g = TreeGeometry.of(tree)
    block_node = torch.tensor([[2, 1, 5, 3, 12, 8]])
    positives = torch.tensor([0, 2, 4])
    sampler = BeamSampler(tree, g, 0, hierarchical=True, targets=2)
    beh = torch.zeros(1, 1, dtype=torch.int64)
    batch = sampler.extend(None, beh, block_node, positives, torch.tensor([[12, 9]]))
    assert batch.node.tolist() == [1, 6, 11] and batch.label.tolist() == [1.0, 0.0, 0.0]
    padded = sampler.extend(None, beh, block_node, positives, torch.tensor([[12, -1]]))
    assert padded.label.tolist() == [0.0, 0.0, 0.0]
    assert sampler.extend(None, beh, block_node, positives).label.tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(InvalidInputError, match="targets"):
        BeamSampler(tree, g, 0, hierarchical=True, targets=0)


def test_the_leaves_ahead_are_the_windows_items_ahead(fitted):
    from jtm_rs.features import BehaviourLeaves

    jtm, split = fitted
    windows = split.train.training_windows(jtm.config.max_behaviours)
    rows = np.arange(0, len(windows), 7)
    got = BehaviourLeaves(windows, jtm.tree, torch.device("cpu")).targets_ahead(torch.from_numpy(rows), 5).numpy()
    pos = windows.targets_ahead(rows, 5)
    expected = np.where(pos >= 0, jtm.tree.leaves(windows.items[np.maximum(pos, 0)]), -1)
    assert np.array_equal(got, expected) and (got[:, 0] >= 0).all() and (got[:, -1] < 0).any()


def test_the_loss_weighs_the_added_samples():
    """Block pairs weigh 1, added pairs ``weight``, in one weighted mean; with optimal targets
    the ancestors' labels come from the same logits (here the level-2 ancestor loses)."""
    tree = Tree.from_order(np.arange(8), arity=2)
    g = TreeGeometry.of(tree)
    path = torch.tensor([[2, 5, 12]])
    # One example's uniform block: the three ancestors (label 1) and one negative per level.
    block_node = torch.tensor([[2, 1, 5, 3, 12, 8]])
    block_label = torch.tensor([[1.0, 0.0, 1.0, 0.0, 1.0, 0.0]])
    positives = torch.tensor([0, 2, 4])
    for optimal in (False, True):
        sampler = BeamSampler(tree, g, 0, hierarchical=True, optimal_targets=optimal, weight=0.25)
        batch = sampler.extend(None, torch.zeros(1, 1, dtype=torch.int64), block_node, positives)
        assert torch.equal(batch.path, path) and batch.node.tolist() == [1, 6, 11]
        scores = torch.zeros(15)
        scores[[2, 1, 5, 3, 12, 8, 6, 11]] = torch.tensor([0.8, 0.1, 0.3, -1.0, 0.9, -2.0, 0.7, 0.2])
        logits = torch.cat([scores[block_node[0]], scores[batch.node]])
        labels = block_label.clone()
        if optimal:
            labels[0, 0] = 0.0  # greedy descent from node 2 takes node 6, not 5
        per_pair = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, torch.cat([labels[0], torch.zeros(3)]), reduction="none")
        expected = (per_pair[:6].sum() + 0.25 * per_pair[6:].sum()) / (6 + 0.25 * 3)
        assert sampler.loss(batch, block_label, positives, logits) == pytest.approx(float(expected), rel=1e-6)

"""The training losses: paper eq. 2's binary cross-entropy and the per-level softmax."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jtm_rs import JTMConfig, Tree, training
from jtm_rs.exceptions import InvalidInputError
from jtm_rs.samples import generate_samples
from jtm_rs.tree_policy import default_model_factory, new_model


def test_level_groups_are_the_blocks_columns_by_level():
    tree = Tree.random(np.arange(300), seed=0)
    negs = training.default_negatives(tree.leaf_level, 20)
    s = generate_samples(tree, np.array([7]), negs, start_level=1, seed=0)
    groups = training.level_groups(s.level).numpy()
    assert groups.shape[0] == tree.leaf_level
    for row, level in enumerate(range(1, tree.leaf_level + 1)):
        cols = groups[row][groups[row] >= 0]
        assert np.array_equal(cols, np.flatnonzero(s.level == level))
        assert s.label[cols[0]] == 1 and (s.label[cols[1:]] == 0).all()  # the ancestor first


def test_the_softmax_loss_is_each_levels_cross_entropy():
    level = np.array([1, 1, 2, 2, 2, 3])
    groups = training.level_groups(level)
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0, 0.5, 3.0], [0.0, 1.0, 0.0, 0.0, 2.0, -4.0]])
    expected = np.mean([
        float(F.cross_entropy(logits[e, cols][None], torch.tensor([0])))
        for e in range(2) for cols in ([0, 1], [2, 3, 4], [5])
    ])
    assert float(training.level_softmax_loss(logits, groups)) == pytest.approx(expected, rel=1e-6)


def test_an_epoch_with_the_softmax_loss_trains(training_setup):
    tree, leaves, negs, examples = training_setup
    model = new_model(default_model_factory, tree, JTMConfig(), torch.device("cpu"), seed=0)
    opt = training.make_optimizer(model, 1e-2)
    losses = [training.train_epoch(model, opt, tree, leaves, examples, negs, hierarchical=True, batch_size=512,
                                   seed=3, loss="softmax") for _ in range(3)]
    # Chance: the mean over levels of log(samples at the level).
    block = generate_samples(tree, tree.items[:1], negs, start_level=1, seed=0).level
    chance = np.mean(np.log(np.bincount(block)[1:]))
    assert losses[0] < chance and losses[2] < losses[0]
    with pytest.raises(InvalidInputError, match="loss"):
        training.train_epoch(model, opt, tree, leaves, examples, negs, hierarchical=True, batch_size=512, seed=3,
                             loss="hinge")


def test_the_softmax_loss_is_a_checked_option():
    assert JTMConfig(loss="softmax").loss == "softmax"
    with pytest.raises(InvalidInputError, match="loss"):
        JTMConfig(loss="hinge")
    with pytest.raises(InvalidInputError, match="beam-aware"):
        JTMConfig(loss="softmax", beam_samples=4)


def test_training_on_the_leaves_alone_moves_no_inner_node(training_setup):
    """``levels_trained="leaves"`` (the paper's DNN): samples from ``start_level = leaf_level``
    only, every negative an item, so the inner nodes' embeddings never move."""
    tree, leaves, negs, examples = training_setup
    L = tree.leaf_level
    inner = torch.from_numpy(tree.level_of(np.arange(tree.n_nodes)) < L)
    for start_level, inner_moves in ((L, False), (1, True)):
        model = new_model(default_model_factory, tree, JTMConfig(), torch.device("cpu"), seed=0)
        before = model.embedding.weight.detach().clone()
        opt = training.make_optimizer(model, 1e-2)
        item_negs = [0] * L + [sum(negs)]
        training.train_epoch(model, opt, tree, leaves, examples, item_negs if start_level == L else negs,
                             hierarchical=False, batch_size=512, seed=3, start_level=start_level)
        moved = (model.embedding.weight.detach()[: tree.n_nodes] != before[: tree.n_nodes]).any(dim=1)
        assert bool(moved[~inner].any())
        assert bool(moved[inner].any()) == inner_moves


def test_leaves_alone_is_a_checked_option():
    assert JTMConfig(levels_trained="leaves", tree_learning="none").levels_trained == "leaves"
    with pytest.raises(InvalidInputError, match="tree_learning='none'"):
        JTMConfig(levels_trained="leaves")
    with pytest.raises(InvalidInputError, match="levels_trained"):
        JTMConfig(levels_trained="roots")


def test_a_fit_on_the_leaves_alone_leaves_the_inner_nodes_as_initialised():
    from jtm_rs import JTM, synthetic

    data = synthetic.generate(300, 120, seed=2).interactions
    jtm = JTM(levels_trained="leaves", tree_learning="none", initial_tree="random", iterations=1,
              max_examples_per_epoch=600, n_threads=1).fit(data.split(0.1, 0.1, seed=0), show_progress=False)
    start = new_model(jtm.model_factory, jtm.tree, jtm.config, torch.device("cpu"), seed=jtm.config.seed)
    inner = torch.from_numpy(jtm.tree.level_of(np.arange(jtm.tree.n_nodes)) < jtm.tree.leaf_level)
    now, then = jtm.model.embedding.weight.detach()[: jtm.tree.n_nodes], start.embedding.weight.detach()[: jtm.tree.n_nodes]
    assert torch.equal(now[inner], then[inner])
    assert not torch.equal(now[~inner], then[~inner])

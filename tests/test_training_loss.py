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

"""What trains in an update: ``update_training="new-paths"`` moves only the node rows on the
paths to the new behaviours' items (the MLP and every other row held), and
``update_leaf_passes`` then trains the new items' leaf rows alone."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from jtm_rs import JTM, Interactions, JTMConfig, synthetic
from jtm_rs.exceptions import InvalidInputError
from jtm_rs.experiments.new_items import late_items


@pytest.fixture(scope="module")
def first_fit():
    """A JTM fitted without the 15 % of items whose first behaviour comes latest in users'
    sequences (the new-item protocol's), the training behaviours on those items, and the
    training behaviours it was fitted on (the replay)."""
    raw = synthetic.generate(500, 400, seed=5).interactions
    is_new = np.isin(raw.item, late_items(raw, 0.15))
    old = Interactions.from_ids(raw.user[~is_new], raw.item[~is_new], raw.timestamp[~is_new]).filter_users(10)
    new = Interactions.from_ids(raw.user[is_new], raw.item[is_new], raw.timestamp[is_new])
    split = old.split(0.1, 0.1, seed=0)
    jtm = JTM(iterations=1, max_examples_per_epoch=10000, n_threads=1, seed=0).fit(split, show_progress=False)
    return jtm, new, split.train


def _updated(jtm, new, replay, **fields):
    model = copy.deepcopy(jtm)
    model.config = dataclasses.replace(model.config, **fields)
    model.update(new, replay=replay, show_progress=False)
    return model


def test_new_paths_training_moves_only_the_rows_on_the_new_items_paths(first_fit):
    jtm, new, replay = first_fit
    before = {k: v.clone() for k, v in jtm.model.state_dict().items()}
    n_old = jtm.tree.n_nodes
    model = _updated(jtm, new, replay, update_training="new-paths")
    after = model.model.state_dict()
    for key, value in before.items():
        if key != "embedding.weight":
            assert torch.equal(value, after[key]), key  # the MLP as the fit left it
    tree = model.tree
    leaves = tree.leaves(np.setdiff1d(tree.items, jtm.tree.items))  # the new items' (no old one has behaviours)
    on_paths = np.unique(np.concatenate([tree.ancestors(leaves, lv) for lv in range(1, tree.leaf_level + 1)]))
    old_table, table = before["embedding.weight"][:n_old], after["embedding.weight"][:n_old]
    assert tree.n_nodes == n_old  # the tree did not grow: every node keeps its id and row
    off = np.setdiff1d(np.arange(2**tree.leaf_level - 1), on_paths)
    assert torch.equal(table[off], old_table[off])  # every inner row off those paths
    old_items = jtm.tree.items  # (tree learning may move them within their subtrees: rows go along)
    assert torch.equal(table[tree.leaves(old_items)], old_table[jtm.tree.leaves(old_items)])
    inner = on_paths[(on_paths < n_old) & (on_paths > 0)]
    assert (table[inner] != old_table[inner]).any(1).float().mean() > 0.9  # the paths trained
    assert all(p.requires_grad for p in model.model.parameters())


def test_leaf_passes_train_only_the_new_items_leaf_rows(first_fit):
    jtm, new, replay = first_fit
    plain = _updated(jtm, new, replay, update_training="new-paths")
    more = _updated(jtm, new, replay, update_training="new-paths", update_leaf_passes=2)
    np.testing.assert_array_equal(plain.tree.items, more.tree.items)
    np.testing.assert_array_equal(plain.tree.leaves(plain.tree.items), more.tree.leaves(more.tree.items))
    a, b = plain.model.state_dict(), more.model.state_dict()
    for key in a:
        if key != "embedding.weight":
            assert torch.equal(a[key], b[key]), key
    fresh = np.setdiff1d(more.tree.items, jtm.tree.items)
    leaves = torch.from_numpy(more.tree.leaves(fresh))
    changed = (a["embedding.weight"] != b["embedding.weight"]).any(1)
    assert changed[leaves].float().mean() > 0.9
    changed[leaves] = False
    assert not changed.any()  # nothing but the new leaves
    ids, _ = more.retrieve(fresh[:5, None], 20)
    assert np.isin(ids, fresh).any()  # the new items are still found


def test_leaf_passes_must_not_be_negative():
    with pytest.raises(InvalidInputError, match="update_leaf_passes"):
        JTMConfig(update_leaf_passes=-1)


def test_the_sequence_model_updates_by_its_paths_too():
    """The sequence model reads behaviours and nodes from its encoder's one table: the default
    update trains rows of it and holds the encoder's blocks and the MLP."""
    raw = synthetic.generate(300, 300, seed=6).interactions
    late = np.unique(raw.item)[-30:]
    is_new = np.isin(raw.item, late)
    old = Interactions.from_ids(raw.user[~is_new], raw.item[~is_new], raw.timestamp[~is_new]).filter_users(10)
    new = Interactions.from_ids(raw.user[is_new], raw.item[is_new], raw.timestamp[is_new])
    split = old.split(0.1, 0.1, seed=0)
    jtm = JTM(model="sequence", sequence_dim=16, iterations=0, max_examples_per_epoch=1500, validation_users=20,
              n_threads=1, seed=0).fit(split, show_progress=False)
    before = {k: v.clone() for k, v in jtm.model.state_dict().items()}
    old_tree = jtm.tree
    jtm.update(new, replay=split.train, show_progress=False)
    after = jtm.model.state_dict()
    table = "encoder.item.weight"
    assert after[table].shape == before[table].shape  # the tree did not grow
    for key, value in before.items():
        if key != table:
            assert torch.equal(value, after[key]), key  # blocks, positions, attention read and MLP held
    items = old_tree.items
    assert torch.equal(after[table][jtm.tree.leaves(items)], before[table][old_tree.leaves(items)])
    assert not torch.equal(after[table], before[table])  # the paths to the new items learned
    fresh = np.setdiff1d(jtm.tree.items, items)
    ids, _ = jtm.retrieve(fresh[:5, None], 20)
    assert np.isin(ids, fresh).any()


def test_auto_trains_the_new_paths_for_new_items_and_the_model_for_known_ones(first_fit):
    """``update_training="auto"``: behaviours mostly on new items train the new paths (2 passes
    at 8e-3, replay 10, tree learning "new"); behaviours on known items train the whole model (1
    pass at 4e-3, replay 1, tree learning "new-only"), MLP included; fields the configuration
    sets win over the mode's."""
    jtm, new, replay = first_fit
    assert jtm.config.update_training == "auto" and jtm.config.update_replay is None
    items = copy.deepcopy(jtm)
    record = items.update(new, replay=replay, show_progress=False)
    assert (record.training, record.epochs, record.learning_rate, record.replay) == ("new-paths", 2, 8e-3, 10.0)
    assert record.tree_learning == "new"
    known = Interactions.from_ids(replay.user[-300:], jtm.item_ids.decode(replay.item[-300:]),
                                  replay.timestamp[-300:] + 10**6)  # later behaviours on known items
    model = copy.deepcopy(jtm)
    record = model.update(known, replay=replay, show_progress=False)
    assert (record.training, record.epochs, record.learning_rate, record.replay) == ("model", 1, 4e-3, 1.0)
    assert record.tree_learning == "new-only"
    assert 0 < record.replayed_examples <= record.new_behaviours  # one old example per new one
    mlp = [k for k in jtm.model.state_dict() if k.startswith("mlp.")]
    assert any(not torch.equal(jtm.model.state_dict()[k], model.model.state_dict()[k]) for k in mlp)
    set_ = copy.deepcopy(jtm)
    set_.config = dataclasses.replace(jtm.config, update_epochs=3, update_replay=0.5)
    record = set_.update(known, replay=replay, show_progress=False)
    assert (record.training, record.epochs, record.learning_rate, record.replay) == ("model", 3, 4e-3, 0.5)

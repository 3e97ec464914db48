"""The model lives on: appended ids, placing new items in a fitted tree, the node table that
grows with it, and JTM.update end to end (new items retrievable, known ids unchanged, retired
items gone, old saves intact, refused inputs change nothing)."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from jtm_rs import JTM, Interactions, Tree, synthetic
from jtm_rs.exceptions import InvalidInputError, UnknownItemError
from jtm_rs.ids import IdMap
from jtm_rs.lifecycle.placement import deepen, free_leaves, grow_node_table, place_near


def test_an_extended_map_keeps_the_known_ids_and_appends_the_rest(tmp_path):
    base, _ = IdMap.fit([30, 10, 20])
    grown, internal = base.extend([20, 5, 40, 5, 10])
    assert internal.tolist() == [1, 3, 4, 3, 0]  # 10, 20, 30 keep 0, 1, 2; 5 then 40 appended
    assert grown.ids.tolist() == [10, 20, 30, 5, 40]
    assert grown.decode(np.array([3, 4, -1])).tolist() == [5, 40, -1]
    assert grown.contains([5, 6, 40]).tolist() == [True, False, True]
    with pytest.raises(UnknownItemError):
        grown.encode([6])
    grown.save(tmp_path / "ids.npz")
    back = IdMap.load(tmp_path / "ids.npz")
    assert back == grown and back.encode([40, 10]).tolist() == [4, 0]
    assert base.extend([10, 30])[0] is base  # nothing new: the same map
    with pytest.raises(InvalidInputError, match="strings"):
        base.extend(np.array(["a"]))
    with pytest.raises(InvalidInputError, match="distinct"):
        IdMap(np.array([3, 1, 3]))


def test_free_leaves_deepen_and_placement_near_a_neighbour():
    tree = Tree.from_leaves([7, 8, 9], [7, 8, 11], arity=2, leaf_level=3)  # leaves 7..14
    assert free_leaves(tree).tolist() == [9, 10, 12, 13, 14]
    deeper = deepen(tree)
    assert deeper.leaf_level == 4 and deeper.leaves(np.array([7, 8, 9])).tolist() == [15, 17, 23]
    # Every old leaf is now the parent of its item's leaf: the old node ids keep their meaning.
    assert deeper.ancestors(deeper.leaves(np.array([7, 8, 9])), 3).tolist() == [7, 8, 11]
    # Item 100 co-occurs with the item on leaf 11: leaf 12 is free under 11's parent (5).
    # Item 101 near leaf 7: 7's sibling 8 is taken, so the nearest free is under node 1: 9 or 10.
    # Item 102 has no neighbour: any free leaf left.
    free = free_leaves(tree)
    got = place_near(tree, np.array([100, 101, 102]), np.array([11, 7, -1]), free)
    assert got[0] == 12 and got[1] == 9 and got[2] in (10, 13, 14)
    assert len(set(got.tolist())) == 3
    with pytest.raises(ValueError):
        place_near(tree, np.arange(6), np.full(6, -1), free)


def test_the_node_table_grows_from_the_neighbourhood():
    from jtm_rs import JTMConfig
    from jtm_rs.tree_policy import default_model_factory, new_model

    cfg = JTMConfig(embedding_dim=4, hidden=(8,))
    tree = Tree.from_leaves([1, 2, 3], [3, 4, 5], arity=2, leaf_level=2)  # leaves 3..6, 6 free
    model = new_model(default_model_factory, tree, cfg, torch.device("cpu"), seed=0)
    old = model.embedding.weight.detach().clone()
    deeper = deepen(tree)  # items on 7, 9, 11; leaf level 3
    placed = Tree.from_leaves([1, 2, 3, 4], [7, 9, 11, 8], arity=2, leaf_level=3)
    grown = grow_node_table(model, default_model_factory, placed, cfg, torch.device("cpu"), np.array([8]))
    w = grown.embedding.weight.detach()
    assert w.shape[0] == deeper.n_nodes + 1 and torch.equal(w[:7], old[:7])
    assert torch.equal(w[-1], old[-1])  # the padding row
    assert torch.equal(w[9], old[4]) and torch.equal(w[11], old[5])  # moved items: their old leaf's row
    assert torch.equal(w[8], w[7])  # a new item beside an old one: its sibling's row
    like = grow_node_table(model, default_model_factory, placed, cfg, torch.device("cpu"), np.array([8]),
                           like=np.array([11])).embedding.weight.detach()
    assert torch.equal(like[8], w[11])  # ... or the row of the known item it co-occurs with
    for (k, a), b in zip(model.state_dict().items(), grown.state_dict().values()):
        if k != "embedding.weight":
            assert torch.equal(a, b)


def _late_items(data: Interactions, share: float) -> np.ndarray:
    """The items whose first behaviour comes latest: the new items of the update."""
    order = np.argsort(data.timestamp, kind="stable")
    items, first = np.unique(data.item[order], return_index=True)
    return items[np.argsort(first)][-int(share * len(items)):]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A JTM fitted without the 15 % newest items (saved), the behaviours on those items, and
    the whole data in the same ids."""
    raw = synthetic.generate(600, 500, seed=3).interactions
    late = _late_items(raw, 0.15)
    is_new = np.isin(raw.item, late)
    ids = raw.item * 7 + 1000  # the data's own ids, sparse
    old = Interactions.from_ids(raw.user[~is_new], ids[~is_new], raw.timestamp[~is_new]).filter_users(10)
    new = Interactions.from_ids(raw.user[is_new], ids[is_new], raw.timestamp[is_new])
    split = old.split(0.1, 0.1, seed=0)
    jtm = JTM(iterations=1, max_examples_per_epoch=20000, n_threads=1, seed=0).fit(split, show_progress=False)
    path = tmp_path_factory.mktemp("lifecycle") / "before"
    jtm.save(path)
    return path, split, new, np.unique(ids[is_new]), Interactions.from_ids(raw.user, ids, raw.timestamp)


def test_update_places_new_items_where_they_are_retrieved_and_keeps_known_ids(fitted, tmp_path):
    path, split, new, new_ids, whole = fitted
    jtm = JTM.load(path, n_threads=1)
    known = jtm.item_ids.ids.copy()
    internal_before = jtm.item_ids.encode(known)
    h = [whole.item_ids.decode(whole.item[whole.user == u]) for u in np.unique(whole.user)[:200]]
    stale = np.isin(jtm.recommend(h, M=50, on_unknown="ignore")[0], new_ids).mean()
    assert stale == 0  # the first fit cannot retrieve what it never saw
    record = jtm.update(new, replay=split.train, show_progress=False)
    assert record.new_items == len(new_ids) and record.new_behaviours == len(new) and record.replayed_examples > 0
    assert np.array_equal(jtm.item_ids.encode(known), internal_before)  # known ids keep their internal ids
    assert np.array_equal(np.sort(jtm.tree.items), np.arange(len(known) + len(new_ids)))
    jtm.tree.validate()
    got = jtm.recommend(h, M=50)[0]
    assert np.isin(got, new_ids).mean() > 0.02  # new items come back from the beam now
    # The save written before the update still loads and serves the old model.
    before = JTM.load(path, n_threads=1)
    assert before.tree.n_items == len(known)
    assert np.isin(before.recommend(h, M=50, on_unknown="ignore")[0], new_ids).mean() == 0
    jtm.save(tmp_path / "after")
    back = JTM.load(tmp_path / "after", n_threads=1)
    assert np.array_equal(back.recommend(h, M=50)[0], got)


def test_update_retires_items_and_nothing_new_changes_nothing(fitted, tmp_path):
    path, split, new, _, _ = fitted
    jtm = JTM.load(path, n_threads=1)
    weights = [p.detach().clone() for p in jtm.model.parameters()]
    tree = jtm.tree
    record = jtm.update(split.train.select_users(np.zeros(0, np.int64)), show_progress=False)
    assert record.new_items == 0 and jtm.tree is tree
    assert all(torch.equal(a, b) for a, b in zip(weights, jtm.model.parameters()))
    ev = split.test.evaluation_users()
    top = jtm.item_ids.decode(jtm.retrieve(ev.features, 30)[0])
    retire = np.unique(top[:, :3])
    jtm.update(new.select_users(np.zeros(0, np.int64)), replay=split.train, retire=retire, show_progress=False)
    assert not jtm.tree.contains(jtm.item_ids.encode(retire)).any()
    histories = [jtm.item_ids.decode(row[row >= 0][::-1]) for row in ev.features[:50]]
    got = jtm.recommend(histories, M=100)[0]  # retired items in the histories are known features
    assert not np.isin(got, retire).any()
    # A retired item still counts as a behaviour: through the leaf it last held.
    alone = jtm.recommend([[retire[0]]], M=20)[0]
    assert not np.array_equal(alone, jtm.recommend([[]], M=20)[0])  # not the same as no behaviour
    other = jtm.recommend([[jtm.item_ids.decode(jtm.tree.items[:1])[0]]], M=20)[0]
    assert not np.array_equal(alone, other)
    assert np.array_equal(jtm.retired.items, np.sort(jtm.item_ids.encode(retire)))
    jtm.save(tmp_path / "retired")
    back = JTM.load(tmp_path / "retired", n_threads=1)
    assert np.array_equal(back.recommend(histories, M=100)[0], got)
    # Replayed behaviours on retired items do not bring them back.
    jtm.update(split.train.select_items(jtm.item_ids.encode(retire)), replay=split.train, show_progress=False)
    assert not jtm.tree.contains(jtm.item_ids.encode(retire)).any()


def test_refused_updates_change_nothing(fitted):
    path, split, new, _, _ = fitted
    jtm = JTM.load(path, n_threads=1)
    tree, ids = jtm.tree, jtm.item_ids
    strings = Interactions.from_ids(new.user, np.array([f"s{i}" for i in new.item]), new.timestamp)
    with pytest.raises(InvalidInputError, match="strings"):
        jtm.update(strings, show_progress=False)
    plain = Interactions(new.user, new.item, new.timestamp)
    with pytest.raises(InvalidInputError, match="no id map"):
        jtm.update(plain, show_progress=False)
    with pytest.raises(UnknownItemError):
        jtm.update(new, retire=[-5], show_progress=False)
    assert jtm.tree is tree and jtm.item_ids is ids


def test_the_new_items_protocol_writes_stale_updated_and_refit_rows(tmp_path):
    from jtm_rs.experiments import Budget, Experiment
    from jtm_rs.experiments.new_items import late_items

    data = synthetic.generate(400, 300, seed=4).interactions.filter_users(10)
    late = late_items(data, 0.15)
    assert len(late) == round(0.15 * data.n_items)
    # The late items' earliest relative positions are later than any other item's.
    starts = data.user_starts()
    rel = (np.arange(len(data)) - np.repeat(starts[:-1], np.diff(starts))) / np.repeat(np.diff(starts), np.diff(starts))
    earliest = {i: rel[data.item == i].min() for i in data.items}
    assert min(earliest[i] for i in late) >= max(earliest[i] for i in data.items if i not in set(late.tolist()))
    exp = Experiment(data, tmp_path, methods=["jtm"], seeds=[0], protocol="new-items", data_name="gen",
                     budget=Budget(iterations=1, max_examples_per_epoch=5000, n_threads=1))
    exp.run()
    import json

    rows = json.loads((tmp_path / "results" / "new-items-seed0.json").read_text())["rows"]
    assert rows["stale"]["new_items"]["recall"] == 0 and rows["stale"]["new_items"]["n_users"] > 0
    assert rows["updated"]["new_items"]["recall"] > 0.1 and rows["refit"]["new_items"]["recall"] > 0.1
    table = (tmp_path / "table.md").read_text()
    assert all(f"| {r} |" in table for r in ("stale", "updated", "refit"))
    with pytest.raises(InvalidInputError, match="protocol"):
        Experiment(data, tmp_path, protocol="time-travel")


def test_the_update_command_saves_elsewhere_and_leaves_the_model_as_it_was(tmp_path, capsys):
    from jtm_rs import cli

    raw = synthetic.generate(300, 250, seed=6).interactions
    late = _late_items(raw, 0.15)
    is_new = np.isin(raw.item, late)
    old, new = (Interactions.from_ids(raw.user[m], raw.item[m] * 3 + 7, raw.timestamp[m]) for m in (~is_new, is_new))
    old.to_csv(tmp_path / "old.csv")
    new.to_csv(tmp_path / "new.csv")
    run, run2 = tmp_path / "run", tmp_path / "run2"
    budget = ["--iterations", "1", "--max-examples-per-epoch", "3000", "--threads", "1", "--quiet"]
    assert cli.main(["train", str(tmp_path / "old.csv"), "--out", str(run), *budget]) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    retire = str(int(JTM.load(run).item_ids.ids[0]))
    args = ["update", str(tmp_path / "new.csv"), "--model", str(run), "--replay", str(tmp_path / "old.csv"),
            "--retire", retire, "--update-replay", "2", "--threads", "1", "--quiet"]
    assert cli.main([*args, "--out", str(run)]) == 2  # refused: the saved model stays as it was
    assert cli.main([*args, "--out", str(run2)]) == 0
    assert f"{len(late)} new item(s), 1 retired" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    updated = JTM.load(run2)
    assert updated.config.update_replay == 2 and (run2 / "split.json").exists()
    assert updated.tree.n_items == JTM.load(run).tree.n_items + len(late) - 1
    assert not updated.tree.contains(updated.item_ids.encode([int(retire)])).any() and len(updated.retired) == 1
    assert cli.main(["evaluate", str(tmp_path / "old.csv"), "--model", str(run2), "--m", "10", "--quiet"]) == 0


def test_an_update_started_again_from_the_save_equals_a_straight_one(fitted):
    """An update runs in memory and the save is written at the end, atomically: a killed update
    leaves the old save, and running it again from there gives the same model."""
    path, split, new, _, _ = fitted
    a, b = JTM.load(path, n_threads=1), JTM.load(path, n_threads=1)
    for jtm in (a, b):
        jtm.update(new, replay=split.train, show_progress=False)
    assert a.tree == b.tree and np.array_equal(a.item_ids.ids, b.item_ids.ids)
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


def test_a_cold_item_goes_next_to_its_category():
    """Items 1-4 on leaves 7, 8, 11, 12 of a 3-level tree; item 50 has no neighbour in any
    sequence but shares category 2 with items 3 (2 rows) and 4 (1 row): its place is 3's leaf
    11, whose sibling 12 is taken, so the next free leaf under their grandparent (13)."""
    from jtm_rs.lifecycle.placement import category_leaves

    tree = Tree.from_leaves([1, 2, 3, 4], [7, 8, 11, 12], arity=2, leaf_level=3)
    item = np.array([1, 3, 3, 4, 50, 2])
    category = np.array([1, 2, 2, 2, 2, 1])
    assert category_leaves(tree, item, category, np.array([50, 60])).tolist() == [11, -1]
    leaf = place_near(tree, np.array([50]), np.array([11]), free_leaves(tree))
    assert leaf.tolist() == [13]  # 11's sibling 12 is taken: the next free leaf under node 2


def test_update_places_a_cold_item_by_its_category(fitted):
    import dataclasses

    path, split, _, _, _ = fitted
    jtm = JTM.load(path, n_threads=1)
    jtm.config = dataclasses.replace(jtm.config, update_tree_learning="none")
    known = jtm.item_ids.ids[jtm.tree.items[:2]]
    # User 1 acts on a known item (category 5); user 2 once on a new item of category 5, so the
    # new item has no neighbour in any sequence.
    new = Interactions.from_ids([1, 1, 2], [known[0], known[1], 999_999], [0, 1, 2], categories=[5, 6, 5])
    before = jtm.tree if len(free_leaves(jtm.tree)) else deepen(jtm.tree)
    neighbour = before.leaves(jtm.item_ids.encode(known[:1]))
    want = place_near(before, np.array([0]), neighbour, free_leaves(before))
    record = jtm.update(new, show_progress=False)
    assert record.new_items == 1 and record.cold_items == 1
    assert jtm.tree.leaves(jtm.item_ids.encode([999_999])).tolist() == want.tolist()


def test_tree_learning_over_new_items_only_holds_the_others_in_their_subtrees(fitted):
    """``update_tree_learning="new"`` keeps every known item under its ancestor at the top of
    the last segment, ``"new-only"`` at its very leaf (its node at the old leaf level: a level
    the tree grows goes below it); ``"whole"`` moves some."""
    import dataclasses

    path, split, new, new_ids, _ = fitted
    moved = {}
    for mode, first in (("new", False), ("new-first", True), ("new-only", True), ("whole", False)):
        jtm = JTM.load(path, n_threads=1)
        jtm.config = dataclasses.replace(jtm.config, update_tree_learning=mode.replace("new-first", "new"),
                                         update_tree_learning_first=first)
        before = jtm.tree
        record = jtm.update(new, replay=split.train, show_progress=False)
        assert record.seconds["learn_tree"] > 0 and record.items_moved > 0
        old = before.items
        level = jtm.tree.leaf_level - jtm.config.d  # "new" may re-sort items below the last segment's top
        moved[mode] = int((jtm.tree.item_ancestors(old, level) != before.item_ancestors(old, level)).sum())
        moved[mode + " leaf"] = int((jtm.tree.item_ancestors(old, before.leaf_level) != before.leaves(old)).sum())
        assert jtm.tree.contains(jtm.item_ids.encode(new_ids)).all()
    assert moved["new"] == 0 and moved["new-first"] == 0 and moved["whole"] > 0, moved
    assert moved["new-only leaf"] == 0 and moved["new leaf"] > 0, moved


def test_the_time_protocol_evaluates_the_last_tenth_on_what_came_before(tmp_path):
    import json

    from jtm_rs.experiments import Budget, Experiment
    from jtm_rs.experiments.time_split import evaluated_users, time_cuts

    data = synthetic.generate(300, 1500, seed=1).interactions.filter_users(10)
    t1, t2 = time_cuts(data)
    assert np.mean(data.timestamp < t1) == pytest.approx(0.8, abs=0.01)
    ev = evaluated_users(data, t2)
    assert len(ev) > 0
    u = int(ev.users[0])  # the k-th user of the data
    lo, hi = data.user_starts()[u : u + 2]
    ts, items = data.timestamp[lo:hi], data.item[lo:hi]
    assert set(ev.truth(0).tolist()) == set(items[ts >= t2].tolist())
    before = items[ts < t2][::-1][:69]
    assert ev.features[0][: len(before)].tolist() == before.tolist()
    Experiment(data, tmp_path, methods=["jtm"], seeds=[0], protocol="time", data_name="gen",
               budget=Budget(iterations=1, max_examples_per_epoch=3000, n_threads=1)).run()
    rows = json.loads((tmp_path / "results" / "time-seed0.json").read_text())["rows"]
    assert set(rows) == {"stale", "updated", "refit"} and all(0 < r["recall"] <= 1 for r in rows.values())


def test_training_only_the_new_leaves_holds_every_other_parameter(fitted):
    """``update_training="new-leaves"``: the MLP and every old row stay as the fit left them;
    the new items' leaf rows move, and each keeps its row when tree learning moves its item."""
    import dataclasses

    path, split, new, new_ids, _ = fitted
    jtm = JTM.load(path, n_threads=1)
    jtm.config = dataclasses.replace(jtm.config, update_training="new-leaves")
    before = {k: v.clone() for k, v in jtm.model.state_dict().items()}
    old_tree = jtm.tree
    jtm.update(new, replay=split.train, show_progress=False)
    after = jtm.model.state_dict()
    for key, value in before.items():
        if key != "embedding.weight":
            assert torch.equal(value, after[key]), key
    table, old_table = after["embedding.weight"], before["embedding.weight"]
    n = old_tree.n_nodes
    assert torch.equal(table[:n], old_table[:n])  # every node the fit had, inner or leaf
    # A new leaf starts as its neighbourhood (here its parent's row: the tree grew a level, and
    # its sibling is an old item's leaf copied from that parent) and trains away from it.
    new_leaves = torch.from_numpy(jtm.tree.leaves(jtm.item_ids.encode(new_ids)))
    assert (table[new_leaves] != table[(new_leaves - 1) // 2]).any(1).float().mean() > 0.9
    assert all(p.requires_grad for p in jtm.model.parameters())  # held only while the update trained


def test_a_moved_item_takes_its_leaf_row_along():
    from jtm_rs import JTMConfig
    from jtm_rs.lifecycle.node_table import follow_items, only_rows
    from jtm_rs.tree_policy import default_model_factory, new_model

    cfg = JTMConfig(embedding_dim=4, hidden=(8,))
    tree = Tree.from_leaves([1, 2, 3], [3, 4, 5], arity=2, leaf_level=2)
    moved = Tree.from_leaves([1, 2, 3], [3, 6, 5], arity=2, leaf_level=2)  # item 2: leaf 4 -> 6
    model = new_model(default_model_factory, tree, cfg, torch.device("cpu"), seed=0)
    w = model.embedding.weight.detach().clone()
    assert follow_items(model, tree, moved) == 1
    got = model.embedding.weight.detach()
    assert torch.equal(got[6], w[4]) and torch.equal(got[[0, 1, 2, 3, 4, 5]], w[[0, 1, 2, 3, 4, 5]])
    with only_rows(model, tree.n_nodes, np.array([6])):
        loss = model(torch.tensor([[3, 4, 5]]), torch.tensor([6])).sum()
        loss.backward()
        assert model.mlp[0].weight.grad is None
    grad = model.embedding.weight.grad
    grad = grad.to_dense() if grad.is_sparse else grad
    assert grad[6].abs().sum() > 0 and grad[[3, 4, 5]].abs().sum() == 0


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_killed_update_command_leaves_the_model_and_runs_again_to_the_straight_result(tmp_path):
    """``jtm-rs update`` killed half-way through: ``--model`` is as it was and loads, and the
    same command run again (an update resumes by running again: it is deterministic, and far
    shorter than a fit) gives the model a straight run gives."""
    from jtm_rs import cli

    raw = synthetic.generate(300, 400, seed=8).interactions
    is_new = np.isin(raw.item, _late_items(raw, 0.15))
    for name, m in (("old", ~is_new), ("new", is_new)):
        Interactions.from_ids(raw.user[m], raw.item[m], raw.timestamp[m]).to_csv(tmp_path / f"{name}.csv")
    run = tmp_path / "run"
    assert cli.main(["train", str(tmp_path / "old.csv"), "--out", str(run), "--iterations", "1",
                     "--max-examples-per-epoch", "3000", "--threads", "1", "--quiet"]) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}

    def update(out):
        return subprocess.Popen([sys.executable, "-m", "jtm_rs.cli", "update", str(tmp_path / "new.csv"), "--model",
                                 str(run), "--out", str(out), "--replay", str(tmp_path / "old.csv"), "--update-epochs",
                                 "6", "--threads", "1", "--quiet", "--device", "cpu"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={**os.environ, "PYTHONWARNINGS": "ignore"})

    t = time.monotonic()
    straight = update(tmp_path / "straight")
    assert straight.wait() == 0, straight.stderr.read().decode()
    took = time.monotonic() - t
    killed = update(tmp_path / "killed")
    time.sleep(took / 2)
    assert killed.poll() is None, "the update finished before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    JTM.load(run)
    again = update(tmp_path / "killed")
    assert again.wait() == 0, again.stderr.read().decode()
    a, b = JTM.load(tmp_path / "killed"), JTM.load(tmp_path / "straight")
    assert a.tree == b.tree and np.array_equal(a.item_ids.ids, b.item_ids.ids)
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))

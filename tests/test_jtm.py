"""The JTM learner end to end: fit, recommend, evaluate, save/load, bad input, the CLI."""

import json

import numpy as np
import pytest
import torch

import jtm_rs
from jtm_rs import JTM, Interactions, InvalidInputError, UnknownItemError, synthetic
from jtm_rs import cli

M = 20


@pytest.fixture(scope="module")
def generated():
    gen = synthetic.generate(1024, 1500, seed=3)
    return gen, gen.interactions.filter_users(10).split(0.1, 0.15, seed=0)


@pytest.fixture(scope="module")
def fitted(generated):
    _, split = generated
    records = []
    model = JTM(
        iterations=1,
        max_examples_per_epoch=12_000,
        validation_m=M,
        validation_users=200,
        device="cpu",
        seed=0,
    ).fit(split, show_progress=False, callback=records.append)
    return model, records


def test_fit_records_every_round(fitted):
    model, records = fitted
    assert [r.iteration for r in model.history] == [0, 1] and records == model.history
    r0, r1 = model.history
    assert r0.objective_after_tree_learning is not None and r1.objective_after_tree_learning is None
    assert set(r0.seconds) == {"behaviour_leaves", "train", "validate", "learn_tree"}
    assert 0 <= r0.seconds["behaviour_leaves"] <= r0.seconds["train"]  # "train" counts the leaves too
    assert np.isfinite([r0.objective, r1.objective, r0.train_loss]).all()
    assert 0 <= r1.validation["recall"] <= 1 and r1.validation["n_users"] > 0
    model.tree.validate()


def test_tree_learning_lowers_the_objective(fitted):
    # Algorithm 2 maximises eq. 2's log-likelihood with the model fixed, so the objective (its
    # negative, on the fixed sample) must fall at the first tree learning. With d = 7 and the
    # 32-candidate cap it rose on real data (README, "Levels per segment").
    model, _ = fitted
    r0 = model.history[0]
    assert model.config.d == 4
    assert r0.objective_after_tree_learning < r0.objective, r0


def test_recall_well_above_random(fitted, generated):
    model, _ = fitted
    _, split = generated
    r = model.evaluate(split.test, M)
    # A random M-subset recalls about M / n_items of the truth.
    random_recall = M / model.tree.n_items
    assert r["recall"] > 5 * random_recall, r
    assert r["n_users"] == split.test.n_users


def test_recommend_shapes_and_brute_force(fitted, generated):
    model, _ = fitted
    _, split = generated
    ev = split.test.evaluation_users()
    ids, scores = model.recommend(ev.features[:5], M)
    assert ids.shape == scores.shape == (5, M)
    assert all(len(set(row)) == M for row in ids)
    assert np.isin(ids, model.tree.items).all()
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    bf_ids, bf_scores = model.recommend(ev.features[:5], M, method="brute_force")
    # Brute force is the exact top-M of the leaf scores; the beam's leaves can only score lower.
    assert np.all(bf_scores[:, 0] >= scores[:, 0] - 1e-5)
    assert np.all(bf_scores[:, -1] >= scores[:, -1] - 1e-5)
    wide, _ = model.recommend(ev.features[:5], M, beam_size=model.tree.n_items)
    assert np.array_equal(np.sort(wide, 1), np.sort(bf_ids, 1))  # a beam as wide as the corpus is exact


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_brute_force_in_blocks_of_leaves_equals_it_whole(fitted, generated, precision):
    """Past ``batch_pairs`` items brute force scores a user's leaves in blocks (memory at
    millions of items): the same items and scores as one call over all of them."""
    from jtm_rs.retrieval import brute_force

    model, _ = fitted
    _, split = generated
    leaves = model.user_leaves(split.test.evaluation_users().features[:4], "ignore")
    with torch.no_grad():
        whole = brute_force(model.model, model.tree, leaves, M, hierarchical=True, precision=precision)
        blocks = brute_force(model.model, model.tree, leaves, M, hierarchical=True, precision=precision,
                             batch_pairs=100)
    assert np.array_equal(whole[0], blocks[0]) and np.array_equal(whole[1], blocks[1])


def test_bfloat16_retrieval_keeps_most_of_float32s_answer(fitted, generated):
    """``retrieval_precision="bfloat16"`` really scores in another arithmetic (the scores
    differ), and keeps the ranking: most of float32's top M, beam and brute force alike."""
    import dataclasses

    model, _ = fitted
    _, split = generated
    ev = split.test.evaluation_users()
    saved = model.config
    try:
        model.config = dataclasses.replace(saved, retrieval_precision="float32")
        fp32 = {m: model.retrieve(ev.features[:50], M, method=m) for m in ("beam", "brute_force")}
        model.config = dataclasses.replace(saved, retrieval_precision="bfloat16")
        bf16 = {m: model.retrieve(ev.features[:50], M, method=m) for m in ("beam", "brute_force")}
    finally:
        model.config = saved
    for m in fp32:
        (a, sa), (b, sb) = fp32[m], bf16[m]
        assert not np.array_equal(sa, sb)
        if m == "brute_force":  # the same exact top M, each score moved by bfloat16's rounding only
            assert np.allclose(sa, sb, atol=0.02 * np.abs(sa).max())
        kept = np.mean([len(np.intersect1d(x, y)) / M for x, y in zip(a, b)])
        assert kept > 0.8, (m, kept)
    with pytest.raises(InvalidInputError, match="retrieval_precision"):
        jtm_rs.JTMConfig(retrieval_precision="half")
    from jtm_rs.retrieval import model_search

    with pytest.raises(InvalidInputError, match="precision"):
        model_search(model.model, model.tree, model.user_leaves(ev.features[:2]), M, M, method="beam",
                     hierarchical=True, precision="float16")


def test_save_load_round_trip_gives_identical_recommendations(fitted, generated, tmp_path):
    model, _ = fitted
    _, split = generated
    feats = split.test.evaluation_users().features[:30]
    model.save(tmp_path / "run")
    back = JTM.load(tmp_path / "run", device="cpu")
    assert back.tree == model.tree and back.config == model.config
    assert [r.objective for r in back.history] == [r.objective for r in model.history]
    a, sa = model.recommend(feats, M)
    b, sb = back.recommend(feats, M)
    assert np.array_equal(a, b) and np.array_equal(sa, sb)


def test_bad_input_at_recommend(fitted, generated):
    model, _ = fitted
    _, split = generated
    feats = split.test.evaluation_users().features[:3].copy()
    with pytest.raises(InvalidInputError, match="corpus size"):
        model.recommend(feats, model.tree.n_items + 1)
    with pytest.raises(InvalidInputError, match="beam_size"):
        model.recommend(feats, 10, beam_size=5)
    with pytest.raises(InvalidInputError, match="2-D"):
        model.recommend(feats[0], 10)
    feats[0, 0] = -777  # not padding, not an item
    with pytest.raises(UnknownItemError, match="-777"):
        model.recommend(feats, 10)
    ids, _ = model.recommend(feats, 10, on_unknown="ignore")
    clean = feats.copy()
    clean[0, 0] = -1
    assert np.array_equal(ids, model.recommend(clean, 10)[0])
    with pytest.raises(InvalidInputError, match="not fitted"):
        JTM().recommend(feats, 10)


def test_bad_input_at_fit():
    empty = Interactions(np.zeros(0, int), np.zeros(0, int), np.zeros(0))
    with pytest.raises(InvalidInputError, match="no training examples"):
        JTM(device="cpu").fit(empty, show_progress=False)
    # Users with a single behaviour give no training window.
    single = Interactions(np.arange(5), np.arange(5), np.zeros(5))
    with pytest.raises(InvalidInputError, match="no training examples"):
        JTM(device="cpu").fit(single, show_progress=False)
    data = Interactions(np.zeros(4, int), np.arange(4), np.arange(4))
    with pytest.raises(UnknownItemError, match="lacks"):
        JTM(device="cpu").fit(data, tree=jtm_rs.Tree.random([0, 1, 2]), show_progress=False)
    with pytest.raises(InvalidInputError, match="on_tree_change"):
        JTM(on_tree_change="reset")


def test_every_tree_change_mode_and_callback_stop(generated):
    _, split = generated
    seen = []
    for mode in ("fresh", "warm", "carry", "keep", "auto"):
        m = JTM(iterations=2, max_examples_per_epoch=2000, on_tree_change=mode, validation_users=50, device="cpu")
        m.fit(split, show_progress=False, callback=lambda r: seen.append(r.iteration) or r.iteration < 1)
        assert len(m.history) == 2  # stopped by the callback after round 1's training
    assert seen == [0, 1] * 5


def test_attention_and_jtm_j_variants_run(generated):
    _, split = generated
    for kw in ({"attention": True}, {"hierarchical": False}):
        # Attention has no shared-user fast path: keep tree learning small (d=2, 1 sample per item).
        m = JTM(iterations=1, max_examples_per_epoch=1000, validation_users=20, device="cpu", d=2, max_samples_per_item=1, **kw)
        m.fit(split, show_progress=False)
        assert m.recommend(split.test.evaluation_users().features[:2], 5)[0].shape == (2, 5)


def test_planted_tree_fixture_and_generator_are_seeded(generated):
    gen, _ = generated
    again = synthetic.generate(1024, 1500, seed=3)
    assert np.array_equal(again.interactions.item, gen.interactions.item)
    planted = gen.planted_tree()
    assert np.array_equal(np.sort(gen.planted_order), planted.items)
    # Categories follow the planted tree approximately: most items of a category share an ancestor.
    ic = gen.interactions.item_categories()
    anc = planted.item_ancestors(ic["items"], gen.category_level)
    agree = np.mean([np.bincount(np.unique(anc[ic["categories"] == c], return_inverse=True)[1]).max()
                     / np.sum(ic["categories"] == c) for c in np.unique(ic["categories"])])
    assert 0.6 < agree < 0.99


def test_cli_generate_train_evaluate_learn_tree(tmp_path, capsys):
    data = tmp_path / "d.csv"
    assert cli.main(["generate", str(data), "--items", "300", "--users", "300"]) == 0
    run = tmp_path / "run"
    args = ["--iterations", "1", "--examples-per-epoch", "2000", "--m", "10", "--quiet", "--device", "cpu"]
    assert cli.main(["train", str(data), "--out", str(run), *args]) == 0
    assert (run / "manifest.json").exists() and (run / "split.json").exists()
    assert len(list(run.glob("model-*.pt"))) == 1  # checkpoints replaced each other
    assert cli.main(["evaluate", str(data), "--model", str(run), "--m", "10", "--brute-force"]) == 0
    out = capsys.readouterr().out
    assert "beam: Precision@10" in out and "brute_force: Precision@10" in out
    assert cli.main(["learn-tree", str(data), "--model", str(run), "--out", str(tmp_path / "t.jtm"), "--quiet"]) == 0
    assert jtm_rs.Tree.load(tmp_path / "t.jtm").n_items == JTM.load(run).tree.n_items
    assert cli.main(["evaluate", str(tmp_path / "missing.csv"), "--model", str(run)]) == 2
    assert "error" in capsys.readouterr().err
    # A run's split is on disk from the start; without it, evaluate says what it falls back to.
    (run / "split.json").unlink()
    with pytest.warns(UserWarning, match="no split.json"):
        cli.main(["evaluate", str(data), "--model", str(run), "--m", "10"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fit_and_recommend_on_cuda(generated):
    _, split = generated
    m = JTM(iterations=1, max_examples_per_epoch=4000, validation_users=50, device="cuda").fit(split, show_progress=False)
    r = m.evaluate(split.test, M)
    assert r["recall"] > 5 * M / m.tree.n_items


def test_cli_speaks_the_datas_string_ids(tmp_path, capsys):
    gen = synthetic.generate(200, 200, seed=4).interactions
    p = tmp_path / "s.csv"
    rows = [f"u{u:04d},ASIN{i:06d}X,2024-01-01T00:{t // 60 % 60:02d}:{t % 60:02d}"
            for u, i, t in zip(gen.user, gen.item, np.arange(len(gen.user)))]
    p.write_text("user,item,timestamp\n" + "\n".join(rows) + "\n")
    run = tmp_path / "run"
    args = ["--iterations", "0", "--examples-per-epoch", "1000", "--m", "10", "--quiet", "--device", "cpu"]
    assert cli.main(["train", str(p), "--out", str(run), *args]) == 0
    assert len(list(run.glob("item_ids-*.npz"))) == 1
    user = f"u{gen.user[0]:04d}"
    assert cli.main(["recommend", str(p), "--model", str(run), "--users", user, "--m", "5"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    name, items = line.split("\t")
    assert name == user and len(items.split()) == 5
    assert all(tok.startswith("ASIN") and tok.split(":")[0].endswith("X") for tok in items.split())
    assert cli.main(["recommend", str(p), "--model", str(run), "--users", user, "--m", "5", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert doc["user"] == user and [f"{i}:{s:.3f}" for i, s in zip(doc["items"], doc["scores"])] == items.split()
    assert len(doc["model"]) == 16
    assert cli.main(["recommend", str(p), "--model", str(run), "--users", "nobody"]) == 2
    assert "unknown user" in capsys.readouterr().err


def test_torch_threads_default_to_one_inside_fit_and_are_restored(generated, monkeypatch):
    _, split = generated
    before = torch.get_num_threads()
    inside = []
    m = JTM(iterations=0, max_examples_per_epoch=200, validation_users=10, device="cpu")
    m.fit(split, show_progress=False, callback=lambda r: inside.append(torch.get_num_threads()))
    assert inside == [1] and torch.get_num_threads() == before
    monkeypatch.setenv("JTM_TORCH_THREADS", "2")
    m.fit(split, show_progress=False, callback=lambda r: inside.append(torch.get_num_threads()))
    JTM(iterations=0, max_examples_per_epoch=200, validation_users=10, device="cpu", n_threads=3).fit(
        split, show_progress=False, callback=lambda r: inside.append(torch.get_num_threads()))
    assert inside == [1, 2, 3] and torch.get_num_threads() == before


def test_objective_by_level_sums_to_the_recorded_objective(generated):
    _, split = generated
    m = JTM(iterations=1, max_examples_per_epoch=1000, validation_users=20, device="cpu", objective_examples=300)
    m.fit(split, show_progress=False)
    first = m.history[0]
    assert len(first.objective_by_level) == m.tree.leaf_level
    assert all(v > 0 for v in first.objective_by_level)
    assert np.isclose(sum(first.objective_by_level), first.objective)
    assert np.isclose(sum(first.objective_by_level_after_tree_learning), first.objective_after_tree_learning)
    assert m.history[-1].objective_by_level_after_tree_learning == []


def test_damaged_parts_of_a_saved_model_are_named(generated, tmp_path):
    """Issue "Reliability" findings 2 and 12: a damaged part raised JSONDecodeError or loaded
    silently; now the manifest names it."""
    import json as json_mod

    from jtm_rs import CorruptModelError, JtmError

    _, split = generated
    m = JTM(iterations=0, max_examples_per_epoch=200, validation_users=10, device="cpu").fit(split, show_progress=False)
    for kind in ("config", "history", "tree", "model"):
        d = tmp_path / kind
        m.save(d)
        entry = json_mod.loads((d / "manifest.json").read_text())["parts"][kind]
        data = (d / entry["file"]).read_bytes()
        (d / entry["file"]).write_bytes(data[: len(data) // 2])
        with pytest.raises(CorruptModelError, match=f"the {kind} part") as err:
            JTM.load(d)
        assert isinstance(err.value, JtmError)
        (d / entry["file"]).unlink()
        with pytest.raises(CorruptModelError, match="missing"):
            JTM.load(d)
    # A directory without a manifest holds no save; a part whose manifest entry matches but
    # whose content is not what it should be is named too.
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        JTM.load(plain)
    from jtm_rs.storage import sha256

    def rewrite(d, kind, text):
        manifest = json_mod.loads((d / "manifest.json").read_text())
        entry = manifest["parts"][kind]
        (d / entry["file"]).write_text(text)
        entry["bytes"], entry["sha256"] = (d / entry["file"]).stat().st_size, sha256(d / entry["file"])
        (d / "manifest.json").write_text(json_mod.dumps(manifest))
        return entry["file"]

    d = tmp_path / "rewritten"
    m.save(d)
    text = (d / json_mod.loads((d / "manifest.json").read_text())["parts"]["history"]["file"]).read_text()
    name = rewrite(d, "history", text[: len(text) // 2])
    with pytest.raises(CorruptModelError, match=name):
        JTM.load(d)
    m.save(d)
    name = rewrite(d, "config", '{"format_version": 1, "config": {"arity": 1}}')
    with pytest.raises(CorruptModelError, match=name):
        JTM.load(d)


_SAVER = """
import sys, torch
from jtm_rs import JTM
a, b, out = JTM.load(sys.argv[1]), JTM.load(sys.argv[2]), sys.argv[3]
print("ready", flush=True)
while True:
    a.save(out)
    b.save(out)
"""


def test_a_save_killed_at_any_moment_leaves_one_whole_model(generated, tmp_path):
    """Kill -9 a process saving two different models in turn, 24 times at random moments:
    every load gives one of the two models whole (config, tree, weights and history agree)."""
    import random
    import signal
    import subprocess
    import sys
    import time as time_mod

    _, split = generated
    models = []
    for seed in (0, 1):
        m = JTM(iterations=0, max_examples_per_epoch=300, validation_users=10, device="cpu", seed=seed)
        m.fit(split, show_progress=False)
        m.save(tmp_path / f"m{seed}")
        models.append(m)
    out = tmp_path / "out"
    models[0].save(out)
    rng = random.Random(0)
    for _ in range(24):
        p = subprocess.Popen([sys.executable, "-c", _SAVER, str(tmp_path / "m0"), str(tmp_path / "m1"), str(out)],
                             stdout=subprocess.PIPE)
        assert p.stdout.readline().strip() == b"ready"
        time_mod.sleep(rng.uniform(0.0, 0.3))
        p.send_signal(signal.SIGKILL)
        p.wait()
        got = JTM.load(out)
        ref = models[got.config.seed]
        assert got.tree == ref.tree
        assert len(got.history) == len(ref.history) and got.history[0].objective == ref.history[0].objective
        for x, y in zip(got.model.state_dict().values(), ref.model.state_dict().values()):
            assert torch.equal(x, y)


def test_two_threads_saving_to_one_path_never_fail(generated, tmp_path):
    """Issue "Reliability" finding 8: both saves used one temporary name."""
    import threading

    _, split = generated
    m = JTM(iterations=0, max_examples_per_epoch=200, validation_users=10, device="cpu").fit(split, show_progress=False)
    errors = []

    def saver():
        try:
            for _ in range(8):
                m.save(tmp_path / "run")
                m.tree.save(tmp_path / "tree.jtm")
        except Exception as e:  # noqa: BLE001 - any failure is the finding
            errors.append(e)

    threads = [threading.Thread(target=saver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert JTM.load(tmp_path / "run").tree == m.tree and jtm_rs.Tree.load(tmp_path / "tree.jtm") == m.tree
    assert not list(tmp_path.glob("tree.jtm*.tmp")) and not list((tmp_path / "run").glob("*.tmp"))


def test_cli_train_writes_the_split_before_training(tmp_path, monkeypatch):
    """Issue "Reliability" finding 7: split.json came only at the end, so a killed run's
    checkpoints were evaluated on the default split."""
    data = tmp_path / "d.csv"
    assert cli.main(["generate", str(data), "--items", "200", "--users", "200"]) == 0
    run = tmp_path / "run"
    seen = []

    def killed(self, *args, **kwargs):
        seen.append((run / "split.json").exists())
        raise RuntimeError("killed")

    monkeypatch.setattr(JTM, "fit", killed)
    with pytest.raises(RuntimeError, match="killed"):
        cli.main(["train", str(data), "--out", str(run), "--seed", "3", "--quiet", "--device", "cpu"])
    assert seen == [True] and '"seed": 3' in (run / "split.json").read_text()

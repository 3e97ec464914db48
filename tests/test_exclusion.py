"""Leaving items out of an answer inside the search: ``retrieve(exclude=...)`` and
``recommend(exclude_history=True)`` on beam search and brute force."""

import numpy as np
import pytest

from jtm_rs import JTM, InvalidInputError, retrieval, synthetic
from jtm_rs.data import PAD
from jtm_rs.retrieval import ExcludedLeaves

M = 20


@pytest.fixture(scope="module")
def fitted():
    gen = synthetic.generate(600, 800, seed=5)
    split = gen.interactions.filter_users(10).split(0.1, 0.15, seed=0)
    model = JTM(iterations=0, max_examples_per_epoch=4_000, validation_users=50, device="cpu", seed=0)
    model.fit(split, show_progress=False)
    return model, split.test.evaluation_users(model.max_behaviours).features[:30]


def test_excluded_leaves_are_found_per_user_row():
    ex = ExcludedLeaves(np.array([[5, 7, -1], [-1, -1, -1], [7, 2, 2]]), n_nodes=10)
    rows = np.array([0, 0, 0, 1, 2, 2, 2])
    nodes = np.array([5, 7, 2, 5, 7, 2, 9])
    assert ex.mask(rows, nodes).tolist() == [True, True, False, False, True, True, False]
    assert not ExcludedLeaves(np.full((2, 3), -1), n_nodes=10)


@pytest.mark.parametrize("method", ["beam", "brute_force"])
def test_excluded_items_never_come_back_and_answers_stay_full(fitted, method):
    model, feats = fitted
    full, full_s = model.retrieve(feats, 3 * M, method=method)
    exclude = np.full((len(feats), 6), PAD, dtype=np.int64)
    exclude[:, :5] = full[:, ::2][:, :5]  # every other of the best items
    exclude[0, 5] = 10**9  # not an item: ignored
    got, got_s = model.retrieve(feats, M, method=method, exclude=exclude)
    assert got.shape == (len(feats), M) and (got >= 0).all() and np.isfinite(got_s).all()
    for row, ex in zip(got, exclude):
        assert not set(row.tolist()) & set(ex.tolist())
    if method == "brute_force":  # exact: the best M of what is left
        for r in range(len(feats)):
            left = [i for i in full[r] if i not in set(exclude[r].tolist())][:M]
            assert got[r].tolist() == left


def test_a_beam_that_reaches_too_few_other_leaves_is_widened(fitted, monkeypatch):
    model, feats = fitted
    k = M
    beam, _ = model.retrieve(feats, k)
    # Exclude everything the beam of width M returns, and more: the leaf level of that beam
    # then holds too few other leaves, so the user is searched again wider.
    exclude = np.concatenate([beam, model.retrieve(feats, 2 * k)[0]], axis=1)
    calls = []
    search = retrieval.model_search

    def counting(*args, **kwargs):  # the search again, wider, goes through the module's name
        calls.append(args[4])
        return search(*args, **kwargs)

    monkeypatch.setattr(retrieval, "model_search", counting)
    got, scores = model.retrieve(feats, k, exclude=exclude)
    assert calls and calls[0] > k  # searched again, wider
    assert (got >= 0).all() and np.isfinite(scores).all()
    for row, ex in zip(got, exclude):
        assert len(set(row.tolist())) == k and not set(row.tolist()) & set(ex.tolist())


def test_exclude_history_uses_the_whole_history(fitted):
    model, _ = fitted
    items = model.tree.items
    long_history = items[:150].tolist()  # longer than the 69 behaviours kept as features
    ids, _ = model.recommend([long_history, long_history[-3:]], M=M, exclude_history=True)
    assert not set(ids[0].tolist()) & set(long_history)
    assert not set(ids[1].tolist()) & set(long_history[-3:])
    # The same as the features of the 69 most recent behaviours with all 150 excluded.
    feats = np.array([items[:150][::-1][: model.max_behaviours]])
    want, _ = model.retrieve(feats, M, exclude=items[None, :150])
    assert ids[0].tolist() == want[0].tolist()


def test_an_empty_slot_is_minus_one_when_too_few_items_are_left(fitted):
    model, feats = fitted
    n = model.tree.n_items
    everything = np.broadcast_to(model.tree.items[: n - 3], (1, n - 3))
    got, scores = model.retrieve(feats[:1], 5, exclude=everything)
    assert sorted(got[0, :3].tolist()) == sorted(model.tree.items[n - 3 :].tolist())
    assert got[0, 3:].tolist() == [-1, -1] and np.isneginf(scores[0, 3:]).all()


def test_bad_exclude_is_refused(fitted):
    model, feats = fitted
    with pytest.raises(InvalidInputError, match="exclude"):
        model.retrieve(feats, M, exclude=np.zeros(len(feats), dtype=np.int64))
    with pytest.raises(InvalidInputError, match="exclude"):
        model.retrieve(feats, M, exclude=np.zeros((len(feats) + 1, 2), dtype=np.int64))
    with pytest.raises(InvalidInputError, match="exclude"):
        model.retrieve(feats, M, exclude=np.zeros((len(feats), 2)))

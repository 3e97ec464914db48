"""The data model: sorting, filtering, the paper's split protocol, windows, CSV."""

import numpy as np
import pytest

from jtm_rs import Interactions, InvalidInputError, datasets
from jtm_rs.data import PAD


def _data():
    # user 7: items 10..14 at times 5..1 (given out of order); user 3: items 20..31.
    user = np.array([7] * 5 + [3] * 12)
    item = np.array([14, 13, 12, 11, 10] + list(range(20, 32)))
    ts = np.array([5, 4, 3, 2, 1] + list(range(100, 112)))
    return Interactions(user, item, ts, category=item // 10)


def test_rows_sorted_by_user_then_time():
    d = _data()
    assert d.user.tolist() == [3] * 12 + [7] * 5
    assert d.item[12:].tolist() == [10, 11, 12, 13, 14]
    assert d.user_starts().tolist() == [0, 12, 17]


def test_filter_users_drops_short_histories():
    d = _data().filter_users(10)
    assert d.users.tolist() == [3]
    assert _data().filter_users(1).n_users == 2


def test_split_is_disjoint_and_covers_every_user():
    rng = np.random.default_rng(0)
    d = Interactions(rng.integers(0, 100, 3000), rng.integers(0, 50, 3000), rng.random(3000))
    s = d.split(0.1, 20, seed=1)
    parts = [set(s.train.users), set(s.validation.users), set(s.test.users)]
    assert len(parts[1]) == 10 and len(parts[2]) == 20
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set.union(*parts) == set(d.users)
    assert len(s.train) + len(s.validation) + len(s.test) == len(d)
    again = d.split(0.1, 20, seed=1)
    assert np.array_equal(again.test.users, s.test.users)
    with pytest.raises(InvalidInputError, match="only 100 users"):
        d.split(60, 50)


def test_training_windows_are_the_behaviours_before_the_target_most_recent_first():
    d = _data()
    w = d.training_windows(max_behaviours=3)
    assert len(w) == 11 + 4  # every behaviour but each user's first
    assert w.targets.tolist() == list(range(21, 32)) + [11, 12, 13, 14]
    b = w.behaviours(np.arange(len(w)))
    assert b[0].tolist() == [20, PAD, PAD]  # target 21: only 20 before it
    assert b[2].tolist() == [22, 21, 20]  # target 23
    assert b[10].tolist() == [30, 29, 28]  # target 31: window capped at 3
    assert b[11].tolist() == [10, PAD, PAD]  # user 7's first target: no leak from user 3
    assert w.behaviours(np.arange(len(w))).shape == (15, 3)
    assert d.training_windows().behaviours(np.array([10])).shape == (1, 69)


def test_targets_ahead_stay_in_the_users_row():
    d = _data()  # user 3: items 20..31, user 7: items 10..14 (its rows come first)
    w = d.training_windows(max_behaviours=3)
    ahead = w.items[np.maximum(w.targets_ahead(np.arange(len(w)), 3), 0)]
    ahead[w.targets_ahead(np.arange(len(w)), 3) < 0] = PAD
    assert ahead[0].tolist() == [21, 22, 23]
    assert ahead[9].tolist() == [30, 31, PAD]  # the row ends after item 31
    assert ahead[10].tolist() == [31, PAD, PAD]
    assert ahead[11].tolist() == [11, 12, 13]  # user 7 does not run into user 3
    assert ahead[14].tolist() == [14, PAD, PAD]
    # Examples in any order, and a subset of them: the row ends after its last example shown.
    order = np.random.default_rng(0).permutation(len(w))[:9]
    sub = type(w)(w.items, w.pos[order], w.row_start[order], 3)
    ends = sub.row_ends()
    for i, r in enumerate(order):
        same = w.row_start[order] == w.row_start[r]
        assert ends[i] == w.pos[order][same].max() + 1
    assert type(w)(w.items, w.pos[:0], w.row_start[:0], 3).targets_ahead(np.zeros(0, np.int64), 2).shape == (0, 2)


def test_id_columns_are_int32_where_the_ids_fit():
    d = Interactions(np.array([3, 3, 7]), np.array([5, 9, 5]), np.array([1, 2, 3]), np.array([0, 1, 0]))
    assert d.user.dtype == d.item.dtype == d.category.dtype == np.int32
    assert d.training_windows().behaviours(np.array([0])).dtype == np.int64  # features stay int64
    big = Interactions(np.array([0, 0]), np.array([1, 2**40]), np.array([1, 2]))
    assert big.item.dtype == np.int64 and big.item.tolist() == [1, 2**40] and big.user.dtype == np.int32


def test_the_data_fingerprint_does_not_depend_on_the_id_width():
    from jtm_rs import Tree
    from jtm_rs.checkpoint import data_fingerprint

    w = _data().training_windows()
    tree = Tree.random(np.unique(w.items), seed=0)
    wide = type(w)(w.items.astype(np.int64), w.pos, w.row_start, w.max_behaviours)
    assert w.items.dtype == np.int32 and data_fingerprint(w, tree) == data_fingerprint(wide, tree)


def test_evaluation_users_first_half_features_second_half_truth():
    d = _data()
    ev = d.evaluation_users(max_behaviours=4)
    assert ev.users.tolist() == [3, 7]
    # user 3: 12 behaviours 20..31 -> features 20..25 (last 4, most recent first), truth 26..31
    assert ev.features[0].tolist() == [25, 24, 23, 22]
    assert ev.truth(0).tolist() == [26, 27, 28, 29, 30, 31]
    # user 7: 5 behaviours 10..14 -> features 10, 11 and truth 12, 13, 14
    assert ev.features[1].tolist() == [11, 10, PAD, PAD]
    assert ev.truth(1).tolist() == [12, 13, 14]


def test_truth_is_distinct_items():
    d = Interactions(np.zeros(6, int), np.array([1, 2, 3, 5, 5, 4]), np.arange(6))
    assert d.evaluation_users().truth(0).tolist() == [4, 5]


def test_csv_round_trip_with_reordered_header(tmp_path):
    d = _data()
    p = tmp_path / "d.csv"
    d.to_csv(p)
    back = datasets.load_table(p)
    # Ids come back as internal ids with maps to the file's ids.
    assert np.array_equal(back.user_ids.decode(back.user), d.user)
    assert np.array_equal(back.item_ids.decode(back.item), d.item)
    assert np.array_equal(back.timestamp, d.timestamp)
    # Categories are relabelled 0..k-1 but partition the rows the same way.
    assert len(set(zip(back.category.tolist(), d.category.tolist()))) == len(np.unique(d.category))
    q = tmp_path / "e.csv"
    q.write_text("timestamp,extra,item,user\n3,x,5,1\n1,y,6,1\n")
    e = datasets.load_table(q)
    assert e.item_ids.decode(e.item).tolist() == [6, 5] and e.category is None


@pytest.mark.parametrize(
    "text, match",
    [("", "empty file"), ("user,item\n1,2\n", "timestamp"), ("user,item,timestamp\n1,2,3\n1,x,yesterday\n", "d.csv, line 3, column .timestamp.")],
)
def test_bad_csv_names_the_problem(tmp_path, text, match):
    p = tmp_path / "d.csv"
    p.write_text(text)
    with pytest.raises(InvalidInputError, match=match):
        datasets.load_table(p)


def test_bad_columns_are_rejected():
    with pytest.raises(InvalidInputError, match="item has 2 rows"):
        Interactions([1, 2, 3], [1, 2], [1, 2, 3])
    with pytest.raises(InvalidInputError, match="integer ids"):
        Interactions([1.5], [1], [1])
    with pytest.raises(InvalidInputError, match="NaN"):
        Interactions([1], [1], [np.nan])


def test_empty_dataset_has_no_windows_and_no_users():
    d = Interactions(np.zeros(0, int), np.zeros(0, int), np.zeros(0))
    assert len(d.training_windows()) == 0
    assert len(d.evaluation_users()) == 0
    assert d.split(0, 0).train.n_users == 0


def test_the_sorted_check_sees_a_disorder_at_a_block_boundary():
    """Interactions checks (user, timestamp) order in blocks that overlap by a row: a disorder
    between two blocks is found as well as one inside a block."""
    from jtm_rs.data import _sorted_by_user_time

    user, ts = np.repeat(np.arange(5), 4), np.tile(np.arange(4), 5)
    assert _sorted_by_user_time(user, ts, block=3)
    for at in range(1, len(user)):
        swapped_ts = ts.copy()
        swapped_ts[at - 1], swapped_ts[at] = ts[at], ts[at - 1]
        if user[at - 1] == user[at]:
            assert not _sorted_by_user_time(user, swapped_ts, block=3), at
        swapped_user = user.copy()
        swapped_user[at - 1], swapped_user[at] = user[at], user[at - 1]
        if user[at - 1] != user[at]:
            assert not _sorted_by_user_time(swapped_user, ts, block=3), at
    assert _sorted_by_user_time(user[:1], ts[:1]) and _sorted_by_user_time(user[:0], ts[:0])

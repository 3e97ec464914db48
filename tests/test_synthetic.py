"""The generated default data: one world per seed, whole or in chunks of users."""

import numpy as np
import pytest

from jtm_rs import InvalidInputError, synthetic


def _columns(n_items, n_users, chunk_users, seed=3):
    parts = list(synthetic.generate_columns(n_items, n_users, chunk_users=chunk_users, seed=seed))
    return parts, [np.concatenate(c) for c in zip(*parts)]


def test_one_chunk_is_generate():
    data = synthetic.generate(2000, 300, seed=3).interactions
    parts, (user, item, category, timestamp) = _columns(2000, 300, 10**6)
    assert len(parts) == 1
    order = np.lexsort((timestamp, user))  # Interactions sorts by (user, time)
    for got, want in ((user, data.user), (item, data.item), (category, data.category), (timestamp, data.timestamp)):
        np.testing.assert_array_equal(got[order], want)


def test_chunks_share_one_world():
    whole = synthetic.generate(2000, 300, seed=3)
    parts, (user, item, category, _) = _columns(2000, 300, 64)
    assert len(parts) == 5
    # Users numbered in order across chunks, each chunk's users after the previous ones.
    assert np.array_equal(np.unique(user), np.arange(300))
    assert all(p[0].min() > q[0].max() for q, p in zip(parts, parts[1:]))
    # Every chunk draws from the same items, and an item's category is the same in every chunk.
    assert np.isin(item, whole.planted_order).all()
    items, first = np.unique(item, return_index=True)
    assert np.array_equal(category, category[first][np.searchsorted(items, item)])


def test_bad_sizes_are_refused():
    with pytest.raises(InvalidInputError, match="chunk_users"):
        next(synthetic.generate_columns(100, 10, chunk_users=0))
    with pytest.raises(InvalidInputError, match="at least 2 items"):
        next(synthetic.generate_columns(1, 10))

"""Precision/Recall/F@M against hand-computed cases."""

import numpy as np
import pytest

from jtm_rs.metrics import precision_recall_f


def test_hand_computed_two_users():
    retrieved = np.array([[1, 2, 3, 4], [9, 8, 7, 6]])
    indptr = np.array([0, 2, 5])
    truth = np.array([2, 5, 6, 100, 101])  # user 0: {2, 5}; user 1: {6, 100, 101}
    r = precision_recall_f(retrieved, indptr, truth)
    # user 0: 1 hit -> P 1/4, R 1/2, F 2*(1/8)/(3/4) = 1/3; user 1: 1 hit -> P 1/4, R 1/3, F 2/7
    assert r["precision"] == pytest.approx(0.25)
    assert r["recall"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert r["f_measure"] == pytest.approx((1 / 3 + 2 / 7) / 2)
    assert r["n_users"] == 2


def test_no_hit_gives_zero_f_and_padding_counts_in_m():
    retrieved = np.array([[1, -1, -1], [3, 4, 5]])
    indptr = np.array([0, 1, 2])
    r = precision_recall_f(retrieved, indptr, np.array([1, 7]))
    assert r["precision"] == pytest.approx((1 / 3 + 0) / 2)
    assert r["recall"] == pytest.approx(0.5)
    assert r["f_measure"] == pytest.approx((2 * (1 / 3) * 1 / (1 / 3 + 1) + 0) / 2)


def test_users_without_truth_are_skipped_and_ids_may_be_large():
    big = 2**62
    retrieved = np.array([[big, 1], [2, 3]])
    r = precision_recall_f(retrieved, np.array([0, 1, 1]), np.array([big]))
    assert r["n_users"] == 1 and r["recall"] == 1.0 and r["precision"] == 0.5

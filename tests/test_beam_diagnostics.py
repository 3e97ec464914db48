"""The per-level beam diagnostic: where a user's true items leave the beam."""

from __future__ import annotations

import numpy as np
import pytest

from jtm_rs import JTM, synthetic
from jtm_rs.beam_diagnostics import beam_recall_by_level


@pytest.fixture(scope="module")
def fitted():
    split = synthetic.generate(1024, 800, seed=4).interactions.filter_users(10).split(0.1, 0.2, seed=0)
    jtm = JTM(iterations=0, max_examples_per_epoch=8000, device="cpu", seed=0).fit(split, show_progress=False)
    return jtm, split.test.evaluation_users()


@pytest.mark.parametrize("M,beam_size,batch_size", [(20, None, 1024), (10, 40, 7)])
def test_leaf_level_is_recall_and_levels_only_lose(fitted, M, beam_size, batch_size):
    jtm, users = fitted
    by_level = beam_recall_by_level(jtm, users, M, beam_size=beam_size, batch_size=batch_size)
    assert by_level.shape == (jtm.tree.leaf_level + 1,)
    # The leaf level is the retrieved set: Recall@M of the same search.
    assert by_level[-1] == pytest.approx(jtm.evaluate(users, M, beam_size=beam_size)["recall"], rel=1e-12)
    # An item stays retrievable only while its ancestor survives, so the share never grows;
    # the root and the levels the beam keeps whole hold every known true item.
    assert np.all(np.diff(by_level) <= 1e-12)
    assert by_level[0] == pytest.approx(by_level[1])
    assert by_level[-1] < by_level[0]  # the beam does lose items here: the checks have teeth


def test_a_wider_beam_keeps_more_above_the_leaves(fitted):
    """A beam of 80 keeps more true ancestors on the last inner level than one of 10; which M
    leaves it then returns is the leaf scores' choice (here Recall@10 is lower with the wider
    beam: more leaves compete, and this model's leaf scores rank them worse than its inner
    levels did)."""
    jtm, users = fitted
    narrow = beam_recall_by_level(jtm, users, 10)
    wide = beam_recall_by_level(jtm, users, 10, beam_size=80)
    assert wide[-2] > narrow[-2] + 0.1

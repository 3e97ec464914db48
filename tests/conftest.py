import os

# Two cores: rayon's global pool and torch's intra-op pool must not oversubscribe them.
os.environ.setdefault("RAYON_NUM_THREADS", "2")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest

import jtm_rs


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def small_tree():
    return jtm_rs.Tree.random(np.arange(100, 150), arity=2, seed=3)

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


@pytest.fixture
def sigint_raises():
    """Python's own SIGINT handler (KeyboardInterrupt) for the test: a shell starts background
    jobs (`cmd &`, nohup) with SIGINT ignored, and Python then installs none."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)

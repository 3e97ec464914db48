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
def training_setup():
    """A small generated data set on a random tree: ``(tree, leaves, negatives, examples)``
    for calling ``training.train_epoch`` directly (700 shuffled examples)."""
    import torch

    from jtm_rs import synthetic, training
    from jtm_rs.features import BehaviourLeaves

    data = synthetic.generate(600, 150, seed=1).interactions
    tree = jtm_rs.Tree.random(np.unique(data.item), seed=0)
    windows = data.training_windows()
    leaves = BehaviourLeaves(windows, tree, torch.device("cpu"))
    negatives = training.default_negatives(tree.leaf_level, 20)
    examples = np.random.default_rng(0).permutation(len(windows))[:700]
    return tree, leaves, negatives, examples


@pytest.fixture
def sigint_raises():
    """Python's own SIGINT handler (KeyboardInterrupt) for the test: a shell starts background
    jobs (`cmd &`, nohup) with SIGINT ignored, and Python then installs none."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)

"""The fused training pass (jtm_rs.fused_mlp, rust/fused_mlp.rs) against torch's ops."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from jtm_rs import InvalidInputError, training
from jtm_rs._core import mlp_bce_step
from jtm_rs.fused_mlp import mlp_parameters
from jtm_rs.model import JTMModel


def _batch(n_nodes, users=300, pairs=3000, seed=0):
    g = torch.Generator().manual_seed(seed)
    beh = torch.randint(-1, n_nodes, (users, 69), generator=g)
    rows = torch.randint(0, users, (pairs,), generator=g)
    nodes = torch.randint(0, n_nodes, (pairs,), generator=g)
    labels = (torch.rand(pairs, generator=g) < 0.2).float()
    return beh, rows, nodes, labels


def _loss_and_grads(model, fused, batch):
    model.fused_step = fused
    model.zero_grad(set_to_none=True)
    loss = model.pair_bce_loss(*batch)
    loss.backward()
    grads = {n: (p.grad.to_dense() if p.grad.is_sparse else p.grad).clone() for n, p in model.named_parameters()}
    return float(loss.detach()), grads


@pytest.mark.parametrize("hidden", [(128, 64, 24), (16,), (32, 8, 8, 4)])
def test_fused_loss_and_gradients_equal_torchs(hidden):
    torch.manual_seed(0)
    model = JTMModel(500, embedding_dim=8, hidden=hidden)
    with torch.no_grad():  # slopes apart, so that a slope mixed up with another shows
        for k, act in enumerate(model.mlp[1::2]):
            act.weight.fill_(0.1 + 0.1 * k)
    assert mlp_parameters(model.mlp) is not None
    batch = _batch(500)
    fused_loss, fused = _loss_and_grads(model, True, batch)
    torch_loss, ref = _loss_and_grads(model, False, batch)
    assert fused_loss == pytest.approx(torch_loss, rel=1e-5)
    assert fused.keys() == ref.keys()
    for name in ref:
        scale = float(ref[name].abs().max())
        assert scale > 0, name
        assert float((fused[name] - ref[name]).abs().max()) <= 1e-4 * scale, name


def test_models_the_pass_does_not_compute_use_torchs_ops():
    assert mlp_parameters(JTMModel(50, batch_norm=True).mlp) is None
    attention = JTMModel(50, attention=True)
    assert attention.fused_parameters(torch.zeros(1, 1, dtype=torch.long)) is None
    with torch.no_grad():
        assert JTMModel(50).fused_parameters(torch.zeros(1, 1, dtype=torch.long)) is None
    # Still the same loss: the fallback is torch's binary cross-entropy of score_pairs.
    batch = _batch(50, users=5, pairs=40)
    loss = attention.pair_bce_loss(*batch)
    logits = attention.score_pairs(*batch[:3])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch[3])
    assert float(loss.detach()) == pytest.approx(float(expected.detach()))


def test_training_with_the_fused_pass_follows_torchs(training_setup):
    tree, leaves, negatives, examples = training_setup
    losses = {}
    for fused in (True, False):
        torch.manual_seed(0)
        model = JTMModel(tree.n_nodes)
        model.fused_step = fused
        opt = training.make_optimizer(model, 1e-3)
        losses[fused] = [training.train_epoch(model, opt, tree, leaves, examples, negatives, hierarchical=True,
                                              batch_size=2000, seed=s) for s in range(3)]
    # Rounding differs, so the runs drift apart slowly; three epochs stay close.
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-3)
    assert losses[True][2] < losses[True][0]


def _args(pairs=10, users=4, rows_of=8, dim=3, hidden=5, windows=2):
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return dict(
        table=f(rows_of, dim), bag_rows=rng.integers(0, rows_of, 12), bag_offsets=np.arange(0, 12, 1.5).astype(np.int64),
        w_user=f(hidden, windows * dim), bias=f(hidden), rows=rng.integers(0, users, pairs),
        nodes=rng.integers(0, rows_of, pairs), labels=np.zeros(pairs, np.float32), w_node=f(hidden, dim),
        weights=[f(1, hidden)], biases=[f(1)], slopes=[0.25],
    )


def test_the_native_pass_takes_well_formed_input():
    loss, grads = mlp_bce_step(**_args())
    assert np.isfinite(loss) and loss > 0
    assert [g.shape for g in grads[:4]] == [(8, 3), (5, 6), (5,), (5, 3)]


@pytest.mark.parametrize("change, message", [
    (dict(rows=np.array([0, 9] * 5)), "pair rows"),
    (dict(nodes=np.array([-1] * 10)), "pair nodes"),
    (dict(labels=np.zeros(3, np.float32)), "labels"),
    (dict(slopes=[]), "slopes"),
    (dict(weights=[np.zeros((2, 5), np.float32)], biases=[np.zeros(2, np.float32)]), "one logit"),
    (dict(table=np.zeros((8, 4), np.float32)), "first layer"),
    (dict(bag_rows=np.array([8] * 12)), "behaviours must be table rows"),
    (dict(bag_offsets=np.array([0, 5, 3, 6, 7, 8, 9, 12])), "bag offsets"),
    (dict(bag_offsets=np.arange(7)), "bag offsets"),
    (dict(bias=np.zeros(4, np.float32)), "bias"),
    (dict(table=np.zeros((8, 6), np.float32)[:, ::2]), "contiguous"),
])
def test_the_native_pass_refuses_bad_input_by_name(change, message):
    args = {**_args(), **change}
    with pytest.raises(InvalidInputError, match=message):
        mlp_bce_step(**args)


def test_importing_jtm_rs_first_shortens_the_openmp_spin_unless_set():
    code = "import os, jtm_rs, torch; print(os.environ.get('GOMP_SPINCOUNT'))"
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "10000"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "GOMP_SPINCOUNT": "7"}, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "7"
    late = "import os, torch, jtm_rs; print(os.environ.get('GOMP_SPINCOUNT'))"
    out = subprocess.run([sys.executable, "-c", late], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"


@pytest.mark.parametrize("hierarchical", [True, False])
def test_the_batch_from_its_leaves_gives_the_same_loss_and_gradients(training_setup, hierarchical):
    """fused_leaves_bce_loss builds the batch's rows and bags in Rust from the behaviour
    leaves: the same rows in the same order as torch's ancestors and unique, so the loss and
    every gradient are equal, not just close."""
    from jtm_rs.fused_mlp import fused_leaves_bce_loss
    from jtm_rs.geometry import TreeGeometry
    from jtm_rs.model import pair_bce_loss

    tree, leaves, _, examples = training_setup
    geometry = TreeGeometry.of(tree)
    torch.manual_seed(0)
    model = JTMModel(tree.n_nodes)
    ex = torch.from_numpy(np.asarray(examples[:40], dtype=np.int64))
    leaf_rows = leaves(ex)
    n_rows = len(ex) * (tree.leaf_level if hierarchical else 1)
    g = torch.Generator().manual_seed(1)
    rows = torch.randint(0, n_rows, (900,), generator=g)
    nodes = torch.randint(-1, tree.n_nodes, (900,), generator=g)
    labels = (torch.rand(900, generator=g) < 0.3).float()
    results = []
    for from_leaves in (True, False):
        model.zero_grad(set_to_none=True)
        if from_leaves:
            loss = fused_leaves_bce_loss(model, leaf_rows, (tree.arity, tree.leaf_level) if hierarchical else None,
                                         rows, nodes, labels)
        else:
            beh = training.user_levels(geometry, leaf_rows, hierarchical)
            loss = pair_bce_loss(model, beh, rows, nodes, labels)
        loss.backward()
        grads = [(p.grad.coalesce().to_dense() if p.grad.is_sparse else p.grad).clone() for p in model.parameters()]
        results.append((float(loss.detach()), grads))
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1], results[1][1]):
        assert torch.equal(a, b)
    # Where the fused step does not apply, the caller falls back to torch's path.
    with torch.no_grad():
        assert fused_leaves_bce_loss(model, leaf_rows, None, rows, nodes, labels) is None

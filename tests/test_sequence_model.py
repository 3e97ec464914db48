"""The sequence model: self-attention over the behaviours, read by the node. Its grouped
scoring against a plain per-pair computation, a score no inner product expresses, and a JTM
fitted, saved and loaded with it."""

import numpy as np
import pytest
import torch

from jtm_rs import JTM, synthetic
from jtm_rs.exceptions import InvalidInputError
from jtm_rs.sequence_model import SequenceNodeModel, most_recent_first_to_oldest_first


def _behaviours(rng, rows, n_nodes, width=69):
    lengths = np.minimum(rng.geometric(1 / 8, rows), width)
    lengths[:3] = [0, 1, width]  # an empty history, one behaviour, a full one
    beh = np.full((rows, width), -1)
    for g, n in enumerate(lengths):
        beh[g, :n] = rng.integers(0, n_nodes, n)
    return torch.from_numpy(beh)


def test_reordering_keeps_the_most_recent_oldest_first():
    beh = torch.tensor([[5, 4, 3, -1], [9, -1, -1, -1], [-1, -1, -1, -1]])
    assert most_recent_first_to_oldest_first(beh, 2).tolist() == [[4, 5], [9, -1], [-1, -1]]


def test_grouped_scoring_equals_each_pair_scored_alone(rng):
    torch.manual_seed(0)
    model = SequenceNodeModel(300, dim=16, blocks=2, max_length=50).eval()
    beh = _behaviours(rng, 40, 300)
    rows = torch.from_numpy(rng.integers(0, 40, 500))
    nodes = torch.from_numpy(rng.integers(0, 300, 500))
    with torch.no_grad():
        grouped = model.score_pairs(beh, rows, nodes)
        alone = torch.stack([model._score_group(most_recent_first_to_oldest_first(beh[r : r + 1], 50),
                                                torch.zeros(1, dtype=torch.int64), nodes[i : i + 1])[0]
                             for i, r in enumerate(rows.tolist())])
        assert torch.allclose(grouped, alone, atol=1e-5)
        assert torch.allclose(model(beh[rows], nodes), grouped, atol=1e-5)
    # Gradients flow back through the regrouping.
    model.train()
    model.score_pairs(beh, rows, nodes).sum().backward()
    assert model.encoder.item.weight.grad.abs().sum() > 0 and model.query.weight.grad.abs().sum() > 0


def test_its_scores_are_no_inner_product_of_a_user_and_a_node_vector(rng):
    """Scores of U users against N nodes from any u·v model of width D have rank ≤ D; this
    model's have (numerically) full rank far above its width."""
    torch.manual_seed(1)
    dim, users, n = 8, 60, 60
    model = SequenceNodeModel(500, dim=dim, max_length=20).eval()
    beh = _behaviours(rng, users, 500, width=20)
    rows = torch.arange(users).repeat_interleave(n)
    nodes = torch.arange(n).repeat(users)
    with torch.no_grad():
        scores = model.score_pairs(beh, rows, nodes).view(users, n).double()
    s = torch.linalg.svdvals(scores - scores.mean())
    assert int((s > 1e-6 * s[0]).sum()) > 3 * dim


def test_jtm_fits_saves_and_loads_with_the_sequence_model(tmp_path):
    split = synthetic.generate(600, 400, seed=1).interactions.filter_users(10).split(0.1, 0.1, seed=0)
    ev = split.test.evaluation_users()
    model = JTM(model="sequence", sequence_dim=16, iterations=1, max_examples_per_epoch=1500, validation_users=20,
                validation_m=20, seed=0, device="cpu", n_threads=1).fit(split, show_progress=False)
    assert model.name == "jtm-seq" and isinstance(model.model, SequenceNodeModel)
    beam = model.evaluate(ev, 50)
    assert beam["recall"] > 0
    model.save(tmp_path / "m")
    back = JTM.load(tmp_path / "m")
    assert isinstance(back.model, SequenceNodeModel)
    assert np.array_equal(back.retrieve(ev.features, 20)[0], model.retrieve(ev.features, 20)[0])
    with pytest.raises(InvalidInputError, match="own node attention"):
        JTM(model="sequence", attention=True)

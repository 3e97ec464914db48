"""torch.distributed on this machine: 2 processes on the gloo backend (CPU), spawned fresh."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from jtm_rs import InvalidInputError, Tree

WORLD = 2
TIMEOUT_S = 240


def _data():
    from jtm_rs import synthetic

    return synthetic.generate(900, 250, seed=5).interactions


def _worker(rank: int, init: str, out: str) -> None:
    """One rank: the collectives, a refused mismatch, and tree learning from the saved model."""
    import torch.distributed as dist

    from jtm_rs.config import JTMConfig
    from jtm_rs.distributed import Ranks
    from jtm_rs.features import BehaviourLeaves
    from jtm_rs.tree_policy import learn_tree_from_model

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        ranks = Ranks()
        result = {"rank": ranks.rank, "world": ranks.world}
        full = np.arange(7 * 3, dtype=np.float64).reshape(7, 3)
        result["gathered"] = ranks.gather_rows(full[ranks.mine(7)], 7).tolist()
        ranks.check_same("configuration", "same everywhere")
        try:
            ranks.check_same("data", f"rank {rank}'s data")
        except InvalidInputError as e:
            result["refused"] = str(e)
        tree = Tree.load(os.path.join(out, "tree.bin"))
        model = torch.load(os.path.join(out, "model.pt"), weights_only=False)
        leaves = BehaviourLeaves(_data().training_windows(), tree, torch.device("cpu"))
        new = learn_tree_from_model(model, tree, leaves, JTMConfig(), d=3, seed=1, n_threads=1, show_progress=False,
                                    ranks=ranks)
        result["leaves"] = new.leaves(tree.items).tolist()
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained model and its tree, then both ranks' results; the one-process tree beside them."""
    from jtm_rs.config import JTMConfig
    from jtm_rs.features import BehaviourLeaves
    from jtm_rs.training import default_negatives, make_optimizer, train_epoch
    from jtm_rs.tree_policy import default_model_factory, learn_tree_from_model, new_model

    out = tmp_path_factory.mktemp("ranks")
    data = _data()
    tree = Tree.random(np.unique(data.item), seed=0)
    cfg = JTMConfig()
    model = new_model(default_model_factory, tree, cfg, torch.device("cpu"), seed=0)
    leaves = BehaviourLeaves(data.training_windows(), tree, torch.device("cpu"))
    examples = np.random.default_rng(0).permutation(len(leaves.windows))[:3000]
    train_epoch(model, make_optimizer(model, 1e-2), tree, leaves, examples, default_negatives(tree.leaf_level, 20),
                hierarchical=True, batch_size=2048, seed=0)
    model.eval()
    tree.save(str(out / "tree.bin"))
    torch.save(model, out / "model.pt")
    one = learn_tree_from_model(model, tree, leaves, cfg, d=3, seed=1, n_threads=1, show_progress=False)

    ctx = torch.multiprocessing.get_context("spawn")
    init = f"file://{out / 'rendezvous'}"
    procs = [ctx.Process(target=_worker, args=(r, init, str(out))) for r in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(TIMEOUT_S)
    hung = [p for p in procs if p.is_alive()]
    for p in hung:
        p.kill()
    assert not hung, "a rank did not finish in time"
    assert [p.exitcode for p in procs] == [0] * WORLD
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]
    return ranks, one.leaves(tree.items).tolist(), tree


def test_ranks_and_gathered_rows(run):
    ranks, _, _ = run
    assert [(r["rank"], r["world"]) for r in ranks] == [(0, 2), (1, 2)]
    for r in ranks:
        assert r["gathered"] == np.arange(21.0).reshape(7, 3).tolist()


def test_a_mismatch_across_ranks_is_refused_by_name(run):
    ranks, _, _ = run
    for r in ranks:
        assert "the data differs across ranks" in r["refused"] and "rank(s) [1]" in r["refused"]


def test_sharded_tree_learning_gives_the_one_process_tree(run):
    ranks, one, tree = run
    assert ranks[0]["leaves"] == ranks[1]["leaves"] == one
    assert one != tree.leaves(tree.items).tolist()  # tree learning moved items: the check has teeth


def test_ranks_need_an_initialised_group():
    from jtm_rs.distributed import Ranks

    assert Ranks.current() is None
    with pytest.raises(InvalidInputError, match="init_process_group"):
        Ranks()

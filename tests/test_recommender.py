"""The one Recommender interface, checked alike for every method (as implicit's shared test
mixin does): fit, recommend in the data's ids, retrieve, evaluate, save and load."""

import numpy as np
import pytest

from jtm_rs import JTM, BruteForce, Interactions, Recommender, synthetic
from jtm_rs.baselines import HSM, ItemCF, Popularity, YouTubeDNN
from jtm_rs.exceptions import CorruptModelError, UnknownItemError
from jtm_rs.two_tower import SASRec

FACTORIES = {
    "popularity": lambda: Popularity(),
    "itemcf": lambda: ItemCF(),
    "youtube-dnn": lambda: YouTubeDNN(max_epochs=1, seed=0, device="cpu", n_threads=1),
    "sasrec": lambda: SASRec(max_epochs=2, seed=0, device="cpu", n_threads=1),
    "sasrec-hnsw": lambda: SASRec(max_epochs=1, seed=0, device="cpu", n_threads=1, index="hnsw"),
    "hsm": lambda: HSM(max_epochs=1, seed=0, device="cpu", n_threads=1),
    "jtm": lambda: JTM(iterations=1, max_examples_per_epoch=1500, validation_users=20, validation_m=10, device="cpu", n_threads=1),
    "dnn": lambda: BruteForce(JTM(iterations=0, max_examples_per_epoch=1500, validation_users=20, validation_m=10, device="cpu",
                                  n_threads=1)),
}


@pytest.fixture(scope="module")
def split():
    gen = synthetic.generate(128, 200, seed=3).interactions
    items = np.array([f"item-{i}" for i in gen.item])
    users = np.array([f"user {u}" for u in gen.user])
    return Interactions.from_ids(users, items, gen.timestamp).filter_users(10).split(0.1, 0.1, seed=0)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_every_method_implements_the_interface(name, split, tmp_path):
    rec = FACTORIES[name]()
    assert isinstance(rec, Recommender) and rec.fit(split, show_progress=False) is rec
    assert rec.name == name.split("-hnsw")[0]
    known = set(split.train.item_ids.ids.tolist())
    train = split.train
    history = train.item_ids.decode(train.item[train.user == train.user[0]]).tolist()
    ids, scores = rec.recommend([history, history[:3]], 10)
    assert ids.shape == scores.shape == (2, 10) and set(ids.ravel().tolist()) <= known
    with pytest.raises(UnknownItemError):
        rec.recommend([["never seen"]], 10)
    assert rec.recommend([["never seen"]], 10, on_unknown="ignore")[0].shape == (1, 10)

    ev = split.test.evaluation_users()
    internal, _ = rec.retrieve(ev.features, 10)
    assert internal.shape == (len(ev), 10) and internal.dtype == np.int64
    metrics = rec.evaluate(ev, 10)
    assert set(metrics) == {"precision", "recall", "f_measure", "n_users"} and metrics["n_users"] == len(ev)

    rec.save(tmp_path / "m")
    back = type(rec).load(tmp_path / "m")
    assert type(back) is type(rec)
    again, _ = back.retrieve(ev.features, 10)
    assert np.array_equal(again, internal)
    assert np.array_equal(back.recommend([history, history[:3]], 10)[0], ids)


def test_recommender_load_returns_whichever_baseline_was_saved(split, tmp_path):
    pop = Popularity().fit(split, show_progress=False)
    pop.save(tmp_path / "p")
    assert isinstance(Recommender.load(tmp_path / "p"), Popularity)
    with pytest.raises(CorruptModelError, match="not a ItemCF"):
        ItemCF.load(tmp_path / "p")


def test_a_jtm_is_named_for_its_configuration():
    from jtm_rs.config import VARIANTS

    for name, settings in VARIANTS.items():
        assert JTM(**settings).name == name
    assert JTM(attention=True).name == "jtm"  # no row of its own: the nearest is JTM

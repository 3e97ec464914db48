"""RecBole's SASRec, the reference others trust, on the runner's split and protocol, beside
``jtm_rs.two_tower.SASRec`` on the same split: both trained on the training users, both
measured on the same test users (features: the first half of each user's behaviours; truth:
the distinct items of the second half; recall@200 by the one ``precision_recall_f``).

RecBole trains on the training users' sequences with its own loop (its SASRec defaults: 64-d,
2 blocks, 2 heads, dropout 0.5, full-softmax cross-entropy, Adam 1e-3, batches of 2048 prefixes)
and keeps its best epoch on its own validation (each training user's last behaviour held out,
Recall@200, stopping after 10 epochs without gain). Then its encoder scores every item for the
test users' features.

RecBole is not a dependency of jtm_rs; run this where it is installed::

    pip install recbole==1.2.1 pandas colorlog==4.7.2 colorama==0.4.4 scikit-learn pyyaml \\
        tensorboard thop tabulate texttable psutil plotly   # ray is not needed
    OMP_NUM_THREADS=1 python benches/recbole_sasrec.py data/Beauty.txt --seed 0 --threads 1 --out runs/recbole

``--state FILE`` keeps RecBole's run after every epoch (weights, optimiser, best epoch, random
states); the same command again goes on from it, so a fit longer than one sitting can finish.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from jtm_rs import datasets
from jtm_rs.metrics import precision_recall_f
from jtm_rs.two_tower import SASRec


def write_atomic(train, folder: Path, name: str) -> None:
    """The training users' behaviours as RecBole's atomic ``.inter`` file (our internal ids as
    tokens, the position within the user as the time, so RecBole keeps our order)."""
    folder.mkdir(parents=True, exist_ok=True)
    starts = train.user_starts()
    order = np.arange(len(train)) - np.repeat(starts[:-1], np.diff(starts))
    with open(folder / f"{name}.inter", "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for u, i, t in zip(train.user, train.item, order):
            f.write(f"{u}\t{i}\t{t}\n")


def recbole_sasrec(train, test_users, seed: int, threads: int, max_epochs: int, state: Optional[Path] = None):
    """Trains RecBole's SASRec; returns (recall@200 of the test users, fit seconds, epochs)."""
    # RecBole 1.2.1 aliases numpy names that NumPy 2 removed: give it them back.
    for old, new in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if old not in np.__dict__:
            setattr(np, old, new)

    torch.set_num_threads(threads)
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # RecBole writes its logs and TensorBoard events under the working directory
        try:
            return _fit_and_measure(tmp, train, test_users, seed, max_epochs, state)
        finally:
            os.chdir(here)


def _fit_and_measure(tmp: str, train, test_users, seed: int, max_epochs: int, state: Optional[Path]):
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.data.interaction import Interaction
    from recbole.model.sequential_recommender import SASRec as RecBoleSASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    write_atomic(train, Path(tmp) / "jtm", "jtm")
    config = Config(model="SASRec", dataset="jtm", config_dict={
        "data_path": tmp, "checkpoint_dir": str(Path(tmp) / "saved"), "use_gpu": False, "seed": seed,
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "MAX_ITEM_LIST_LENGTH": 50,
        "eval_args": {"split": {"LS": "valid_only"}, "order": "TO", "group_by": "user", "mode": "full"},
        "metrics": ["Recall"], "topk": [200], "valid_metric": "Recall@200", "epochs": max_epochs,
        "stopping_step": 10, "show_progress": False, "train_neg_sample_args": None, "loss_type": "CE",
        "worker": 0,
    })
    init_seed(seed, True)
    dataset = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, dataset)
    model = RecBoleSASRec(config, train_data.dataset)
    trainer = Trainer(config, model)
    t = time.perf_counter()
    # saved=False: RecBole reloads its best checkpoint with torch.load, which today's torch
    # refuses for its pickles; the best epoch's weights are kept here instead.
    best = {"score": -1.0, "state": None, "epoch": -1}
    start, spent = 0, 0.0
    if state is not None and state.exists():
        # A run cut off (the Toys fit needs ~3.5 h of one core): go on after its last epoch.
        saved = torch.load(state, weights_only=False)
        model.load_state_dict(saved["model"])
        trainer.optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])
        np.random.set_state(saved["numpy_rng"])
        random.setstate(saved["python_rng"])
        best, start, spent = saved["best"], saved["epoch"] + 1, saved["seconds"]
        print(f"RecBole: resumed after epoch {start} from {state}", flush=True)
    for epoch in range(start, max_epochs):
        trainer._train_epoch(train_data, epoch, show_progress=False)
        score, _ = trainer._valid_epoch(valid_data, show_progress=False)
        print(f"RecBole epoch {epoch + 1}: validation Recall@200 {score:.4f}", flush=True)
        if score > best["score"]:
            best = {"score": score, "state": {k: v.clone() for k, v in model.state_dict().items()}, "epoch": epoch}
        elif epoch - best["epoch"] > 10:
            break
        if state is not None:
            doc = {"model": model.state_dict(), "optimizer": trainer.optimizer.state_dict(), "best": best,
                   "epoch": epoch, "seconds": spent + time.perf_counter() - t, "torch_rng": torch.get_rng_state(),
                   "numpy_rng": np.random.get_state(), "python_rng": random.getstate()}
            torch.save(doc, state.with_suffix(".tmp"))
            os.replace(state.with_suffix(".tmp"), state)
    fit_s = spent + time.perf_counter() - t
    model.load_state_dict(best["state"])
    model.eval()
    # Test users' features in RecBole's ids (items it never saw dropped), oldest first.
    token2id = dataset.field2token_id["item_id"]
    id2token = dataset.field2id_token["item_id"]
    ids = np.full((len(test_users), 200), -1, np.int64)
    with torch.no_grad():
        for s in range(0, len(test_users), 512):
            feats = test_users.features[s : s + 512]
            seqs = [[token2id[str(i)] for i in row[::-1] if i >= 0 and str(i) in token2id][-50:] for row in feats]
            lens = [max(len(q), 1) for q in seqs]
            mat = np.zeros((len(seqs), 50), np.int64)
            for r, q in enumerate(seqs):
                mat[r, : len(q)] = q
            inter = Interaction({"item_id_list": torch.from_numpy(mat), "item_length": torch.tensor(lens)})
            scores = model.full_sort_predict(inter)
            scores[:, 0] = -np.inf  # RecBole's padding item
            top = torch.topk(scores, 200, dim=1).indices.numpy()
            ids[s : s + len(feats)] = [[int(id2token[j]) for j in row] for row in top]
    recall = precision_recall_f(ids, test_users.truth_indptr, test_users.truth_items)["recall"]
    return recall, fit_s, best["epoch"] + 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-epochs", type=int, default=300)
    ap.add_argument("--skip-ours", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="folder for one JSON result per data set and seed")
    ap.add_argument("--state", type=Path, default=None,
                    help="file saved after every RecBole epoch; a rerun with it goes on from there")
    args = ap.parse_args()
    name = Path(args.data).stem
    data = datasets.load(args.data).filter_users(10)
    split = data.split(0.1, 0.1, seed=args.seed)  # the runner's split
    test_users = split.test.evaluation_users()
    row = {"data": name, "seed": args.seed}
    r, s, e = recbole_sasrec(split.train, test_users, args.seed, args.threads, args.max_epochs, args.state)
    row["recbole"] = {"recall": r, "fit_seconds": s, "epochs": e}
    print(f"{name} seed {args.seed}: RecBole SASRec recall@200 {100 * r:.2f} % ({e} epochs, {s:.0f} s)", flush=True)
    if not args.skip_ours:
        t = time.perf_counter()
        ours = SASRec(seed=args.seed, n_threads=args.threads).fit(split, show_progress=False)
        s = time.perf_counter() - t
        r2 = ours.evaluate(test_users, 200)["recall"]
        row["jtm_rs"] = {"recall": r2, "fit_seconds": s, "epochs": len(ours.history)}
        print(f"{name} seed {args.seed}: jtm_rs SASRec recall@200 {100 * r2:.2f} % ({len(ours.history)} epochs, "
              f"{s:.0f} s); ratio {r2 / r:.3f}", flush=True)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{name}-seed{args.seed}.json").write_text(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()

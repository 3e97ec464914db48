"""``jtm-rs``: the command line.

::

    jtm-rs demo                                   # whole pipeline on generated data, prints a table
    jtm-rs generate data.csv --items 8192         # write generated behaviours as CSV
    jtm-rs train data.csv --out run/              # split users, run the joint loop, save
    jtm-rs train data.csv --resume run/           # go on with a killed run from its last checkpoint
    jtm-rs evaluate data.csv --model run/         # P/R/F@M on the same split's test users
    jtm-rs learn-tree data.csv --model run/       # one tree learning with the saved model
    jtm-rs update new.csv --model run/ --out run2/ # go on with new behaviours and items

Dataset files are CSV with a header naming ``user``, ``item``, ``timestamp`` and optionally
``category`` (numeric values). ``train`` stores the split (fractions and seed) with the model so
``evaluate`` and ``learn-tree`` see the same users.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import List, Optional

import numpy as np

from .cli_options import add_config_options, config_overrides, experiment_budget
from .cli_serve import add_serve_command
from .cli_update import add_update_command
from .exceptions import InvalidInputError, JtmError
from .progress import setup_cli_output


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="behaviour file: CSV/TSV/Parquet with user,item,timestamp[,category] columns, "
                   "Taobao UserBehavior, Amazon ratings, or 'user item item ...' lines")
    p.add_argument("--format", default="auto", choices=["auto", "table", "taobao", "amazon", "sequences"],
                   help="file format ('auto': guessed from the file)")
    p.add_argument("--skip-bad-rows", action="store_true", help="skip (and count) malformed rows instead of failing")
    p.add_argument("--min-interactions", type=int, default=10, help="drop users with fewer behaviours")


def _runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads of the Rust core and of torch together (default: every core for the Rust core, "
                   "one torch thread; see the README's Threads)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress, warnings and errors only")


def _load(a: argparse.Namespace, path: Optional[str] = None):
    from . import datasets

    kw = {"show_progress": not getattr(a, "quiet", False)}
    if getattr(a, "skip_bad_rows", False):
        kw["skip_bad_rows"] = True
    data = datasets.load(path or a.data, getattr(a, "format", "auto"), **kw)
    if data.report is not None:
        logging.getLogger("jtm_rs").info("%s", data.report)
    return data


def _load_split(a: argparse.Namespace, min_interactions: int, validation: float, test: float, seed: int, jtm=None):
    """The data file's users split; with ``jtm``, its items are put in the model's ids (items
    the model never saw get ids it cannot retrieve)."""
    data = _load(a).filter_users(min_interactions)
    if len(data) == 0:
        raise InvalidInputError(f"{a.data}: no user has {min_interactions} or more behaviours")
    if jtm is not None:
        data = _in_model_ids(data, jtm)
    return data.split(validation, test, seed=seed)


def _tree_arg(a: argparse.Namespace):
    """The tree file of ``--tree``, loaded (None when not given)."""
    if a.tree is None:
        return None
    from ._core import Tree

    return Tree.load(a.tree)


def cmd_demo(a: argparse.Namespace) -> None:
    from . import demo

    demo.run(a)


def cmd_generate(a: argparse.Namespace) -> None:
    from . import synthetic

    gen = synthetic.generate(a.items, a.users, seed=a.seed)
    gen.interactions.to_csv(a.out)
    print(f"wrote {len(gen.interactions)} behaviours of {gen.interactions.n_users} users to {a.out}")


def cmd_train(a: argparse.Namespace) -> None:
    if not a.distributed:
        _train(a, leader=True)
        return
    import torch.distributed as dist

    from .distributed.launch import init_from_environment

    started, a.device = init_from_environment(a.device, a.rank_timeout)
    leader = dist.get_rank() == 0
    a.quiet = a.quiet or not leader  # one rank reports
    if leader and not a.quiet:
        print(f"jtm-rs train: {dist.get_world_size()} rank(s) over {dist.get_backend()}, rank 0 on {a.device}", flush=True)
    try:
        _train(a, leader=leader)
    finally:
        if started:
            dist.destroy_process_group()


def _train(a: argparse.Namespace, leader: bool) -> None:
    """``train``'s work; over ranks, every rank runs it and the ``leader`` alone writes."""
    from .jtm import JTM, JTMConfig

    fit = {"show_progress": not a.quiet, "distributed": a.distributed}
    if a.resume is not None:
        # Everything that defines the run comes from it; only runtime options are new.
        out = Path(a.resume)
        path = out / "split.json"
        if not path.exists():
            raise InvalidInputError(f"{out} holds no split.json: not a directory of `jtm-rs train`")
        info = json.loads(path.read_text())
        if "config" not in info:
            raise InvalidInputError(f"{path} was written by an older jtm-rs train and has no configuration to resume with")
        config = JTMConfig(**info["config"])
        split = _load_split(a, info["min_interactions"], info["validation"], info["test"], info["seed"])
        jtm = JTM(config, device=a.device, n_threads=a.threads)
        jtm.fit(split, resume=out, **fit)
        if leader:
            print(f"saved to {out}")
        return
    if a.out is None:
        raise InvalidInputError("train needs --out DIR (or --resume DIR to go on with a killed run)")
    split = _load_split(a, a.min_interactions, a.validation, a.test, a.seed)
    try:
        config = JTMConfig(**{"seed": a.seed, **config_overrides(a)})
    except TypeError as e:
        raise InvalidInputError(f"--config: {e}") from None
    jtm = JTM(config, device=a.device, n_threads=a.threads)
    # The split (and the configuration) first: a run killed mid-way leaves checkpoints that
    # `evaluate` must judge on this run's test users, and that `--resume` goes on with.
    split_info = {"validation": a.validation, "test": a.test, "seed": a.seed, "min_interactions": a.min_interactions,
                  "config": dataclasses.asdict(jtm.config)}
    if leader:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        tmp = Path(a.out) / ".split.json.tmp"
        tmp.write_text(json.dumps(split_info))
        tmp.replace(Path(a.out) / "split.json")
    jtm.fit(split, tree=_tree_arg(a), checkpoint_dir=a.out, **fit)  # the last checkpoint is the model
    if leader:
        print(f"saved to {a.out}")


def _saved_split(a: argparse.Namespace, jtm=None):
    """The split the model in ``a.model`` was trained with; with ``jtm``, its items are put
    in the model's ids (items the model never saw get ids it cannot retrieve)."""
    path = Path(a.model) / "split.json"
    info = json.loads(path.read_text()) if path.exists() else {}
    if not path.exists():
        warnings.warn(f"{a.model} has no split.json: evaluating on the default split (seed 0, 10 %/10 %), "
                      "whose test users may have been this model's training users", stacklevel=2)
    return _load_split(a, info.get("min_interactions", a.min_interactions), info.get("validation", 0.1),
                       info.get("test", 0.1), info.get("seed", 0), jtm)


def _in_model_ids(data, jtm):
    """``data`` with its items re-encoded into the model's internal ids. Unknown items get ids
    past the model's: they stay in the ground truth (a miss) and are dropped from features."""
    if jtm.item_ids is None or data.item_ids is None or data.item_ids == jtm.item_ids:
        return data
    raw = data.item_ids.decode(data.item)
    known = jtm.item_ids.contains(raw)
    item = np.empty(len(raw), dtype=np.int64)
    item[known] = jtm.item_ids.encode(raw[known])
    _, fresh = np.unique(raw[~known].astype(str) if raw.dtype == object else raw[~known], return_inverse=True)
    item[~known] = len(jtm.item_ids) + fresh
    return dataclasses.replace(data, item=item, item_ids=None)


def cmd_evaluate(a: argparse.Namespace) -> None:
    from .jtm import JTM

    jtm = JTM.load(a.model, device=a.device, n_threads=a.threads)
    if a.tree is not None:
        jtm.use_tree(_tree_arg(a))
    split = _saved_split(a, jtm)
    users = split.test if len(split.test) else split.validation
    unknown = float(np.mean(~np.isin(users.item, jtm.tree.items))) if len(users) else 0.0
    if unknown > 0.5:
        warnings.warn(f"{unknown:.0%} of the evaluation users' behaviours are items the model does not know: "
                      f"is {a.data} the data the model in {a.model} was trained on?", stacklevel=2)
    for method in ["beam"] + (["brute_force"] if a.brute_force else []):
        t = time.perf_counter()
        r = jtm.evaluate(users, a.m, method=method, on_unknown="ignore")
        print(
            f"{method}: Precision@{a.m} {r['precision']:.4f}  Recall@{a.m} {r['recall']:.4f}  "
            f"F@{a.m} {r['f_measure']:.4f}  ({r['n_users']} users, {time.perf_counter() - t:.1f} s)"
        )


def cmd_learn_tree(a: argparse.Namespace) -> None:
    from .jtm import JTM

    jtm = JTM.load(a.model, device=a.device, n_threads=a.threads)
    t = time.perf_counter()
    tree = jtm.learn_tree(_saved_split(a, jtm).train, d=a.d, show_progress=not a.quiet)
    tree.save(a.out)
    moved = float((tree.leaves(tree.items) != jtm.tree.leaves(tree.items)).mean())
    print(f"learned a tree in {time.perf_counter() - t:.1f} s; {moved:.1%} of items moved; saved to {a.out}")


def cmd_recommend(a: argparse.Namespace) -> None:
    from .jtm import JTM

    jtm = JTM.load(a.model, device=a.device, n_threads=a.threads)
    data = _load(a)
    if data.user_ids is None:
        raise InvalidInputError("the data has no user ids")
    users = data.user_ids.encode(a.users, unknown="raise", what="user")
    histories = []
    for u in users:  # rows of user u: data.user is sorted
        lo, hi = np.searchsorted(data.user, [u, u + 1])
        histories.append(data.item_ids.decode(data.item[lo:hi]).tolist())
    ids, scores = jtm.recommend(histories, a.m, on_unknown="ignore")
    if a.json:
        from .storage import fingerprint

        for name, row, sc in zip(a.users, ids.tolist(), scores.tolist()):
            print(json.dumps({"user": name, "items": row, "scores": sc, "model": fingerprint(Path(a.model))}))
        return
    for name, row, sc in zip(a.users, ids, scores):
        items = " ".join(f"{i}:{s:.3f}" for i, s in zip(row.tolist(), sc.tolist()))
        print(f"{name}\t{items}")


def cmd_experiment(a: argparse.Namespace) -> None:
    from .experiments import Budget, Experiment

    data = _load(a)
    exp = Experiment(
        data,
        a.out,
        methods=a.methods,
        seeds=a.seeds,
        M=a.m,
        validation=a.validation,
        test=a.test,
        min_interactions=a.min_interactions,
        budget=Budget(n_threads=a.threads, device=a.device, itemcf_window=a.itemcf_window, **experiment_budget(a)),
        show_progress=False if a.quiet else None,
        data_name=a.name or Path(a.data).stem, protocol=a.protocol,
    )
    exp.report() if a.report_only else exp.run()
    print((Path(a.out) / "table.md").read_text())


class HELP_FORMAT(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" where there is a default worth showing and the help names none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text or isinstance(action, argparse._VersionAction):
            return text
        return super()._get_help_string(action)


def _split_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--validation", type=float, default=0.1, help="fraction of users held out for validation")
    p.add_argument("--test", type=float, default=0.1, help="fraction of users held out for the test")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__, demo
    from .experiments.names import METHODS

    p = argparse.ArgumentParser(prog="jtm-rs", description="JTM: joint learning of a tree index and a deep model.",
                                formatter_class=HELP_FORMAT)
    p.add_argument("--version", action="version", version=f"jtm-rs {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more messages (debug)")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, formatter_class=HELP_FORMAT)

    d = command("demo", "the whole pipeline on generated data (about 3 minutes on 2 busy cores; --full: longer)")
    demo.add_arguments(d)
    d.set_defaults(fn=cmd_demo)

    g = command("generate", "write generated behaviours (with a planted item hierarchy) as CSV")
    g.add_argument("out", help="CSV file to write")
    g.add_argument("--items", type=int, default=8192, help="corpus size")
    g.add_argument("--users", type=int, default=8000, help="users generated")
    g.add_argument("--seed", type=int, default=0, help="generator seed")
    g.set_defaults(fn=cmd_generate)

    t = command("train", "split users, run the joint loop, save the model (minutes to hours: see --examples-per-epoch)")
    _data_args(t)
    t.add_argument("--out", default=None, help="directory to save the model (and a checkpoint after every training) into")
    t.add_argument("--resume", default=None, metavar="DIR",
                   help="go on with the killed run in DIR from its last checkpoint (its split and options are reused)")
    _split_args(t)
    t.add_argument("--tree", default=None, metavar="FILE",
                   help="initial tree (a Tree.save / learn-tree file holding every item); default: built from the data")
    t.add_argument("--seed", type=int, default=0, help="seed of the split, the model and the sampling")
    add_config_options(t, exclude=("seed",))
    t.add_argument("--m", dest="config_validation_m", type=int, default=argparse.SUPPRESS, help="the same as --validation-m")
    t.add_argument("--distributed", action="store_true",
                   help="one rank of a torch.distributed run started by torchrun (docs/distributed.md)")
    t.add_argument("--rank-timeout", type=float, default=None, metavar="SECONDS",
                   help="with --distributed: how long a rank waits for the others before failing (default 600)")
    _runtime_args(t)
    t.set_defaults(fn=cmd_train)

    e = command("evaluate", "P/R/F@M on the saved split's test users")
    _data_args(e)
    e.add_argument("--model", required=True, help="directory written by train")
    e.add_argument("--m", type=int, default=200, help="items retrieved per user (M)")
    e.add_argument("--tree", default=None, metavar="FILE", help="retrieve over this tree (e.g. from learn-tree) instead of the model's")
    e.add_argument("--brute-force", action="store_true", help="also score every item (the DNN row)")
    _runtime_args(e)
    e.set_defaults(fn=cmd_evaluate)

    lt = command("learn-tree", "learn a tree from a saved model and the training users (use it with --tree)")
    _data_args(lt)
    lt.add_argument("--model", required=True, help="directory written by train")
    lt.add_argument("--out", required=True, help="file for the new tree")
    lt.add_argument("--d", type=int, default=None, help="levels per segment (default: the model's)")
    _runtime_args(lt)
    lt.set_defaults(fn=cmd_learn_tree)

    r = command("recommend", "top-M items for users of the data, in the data's own ids")
    _data_args(r)
    r.add_argument("--model", required=True, help="directory written by train")
    r.add_argument("--users", nargs="+", required=True, help="user ids as they appear in the data file")
    r.add_argument("--m", type=int, default=10, help="items per user")
    r.add_argument("--json", action="store_true", help="one JSON object per user, as jtm-rs serve answers")
    _runtime_args(r)
    r.set_defaults(fn=cmd_recommend)

    x = command("experiment", "Table 1 and Figure 2: every method on one data set, cached per method")
    _data_args(x)
    x.add_argument("--methods", nargs="+", default=["popularity", "itemcf", "dnn", "jtm"], choices=METHODS,
                   help="rows of the table")
    x.add_argument("--seeds", nargs="+", type=int, default=[0], help="one run per seed (split, model, sampling)")
    x.add_argument("--out", required=True, help="directory for results, table.md/csv and figure2.png")
    x.add_argument("--name", default=None, help="data set name in the table (default: file name)")
    x.add_argument("--m", type=int, default=200, help="M of Precision/Recall/F@M")
    _split_args(x)
    add_config_options(x, exclude=("seed",))
    x.add_argument("--itemcf-window", type=int, default=None, help="Item-CF history window (default: chosen on validation users)")
    x.add_argument("--report-only", action="store_true", help="only rewrite table and figure from the cached results")
    x.add_argument("--protocol", choices=("users", "new-items", "time"), default="users", help="users: Table 1; "
                   "new-items / time: stale, updated and refit JTM (docs/lifecycle.md)")
    _runtime_args(x)
    x.set_defaults(fn=cmd_experiment)
    add_update_command(command, _data_args, _runtime_args)
    add_serve_command(command, _runtime_args)
    return p


def _check_paths(a: argparse.Namespace) -> None:
    """Missing input files fail at once, before the seconds torch takes to import."""
    for what in ("data", "model", "tree"):
        path = getattr(a, what, None)
        if path is not None and not Path(path).exists():
            raise FileNotFoundError(f"{path}: no such file or directory (the {what} argument)")


def main(argv: Optional[List[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    formatwarning = warnings.formatwarning
    setup_cli_output(getattr(a, "quiet", False), a.verbose)
    try:
        _check_paths(a)
        a.fn(a)
    except (JtmError, OSError) as e:
        print(f"jtm-rs {a.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jtm-rs {a.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning  # main() may be called in-process (tests, notebooks)
    return 0


if __name__ == "__main__":
    sys.exit(main())

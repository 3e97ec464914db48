"""``jtm-rs update``: go on from a saved model with new behaviours, new items and retired
items, and save the result elsewhere (docs/lifecycle.md)::

    jtm-rs update new.csv --model run/ --out run2/ --replay old.csv --retire B000X B000Y

The saved model in ``--model`` is only read: a killed update leaves it as it was.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

from .cli_options import config_overrides, or_none
from .exceptions import InvalidInputError

#: The JTMConfig fields an update may change (the others define the model it goes on with).
UPDATE_FIELDS = ("update_epochs", "update_replay", "update_learning_rate", "update_tree_learning", "update_training",
                 "update_tree_learning_first", "update_leaf_passes")


def add_update_command(command, data_args, runtime_args) -> None:
    """Adds ``update`` to the parser (``command(name, help)`` makes a subcommand; ``data_args``
    and ``runtime_args`` add the options every command shares)."""
    from .config import JTMConfig

    u = command("update", "go on from a saved model with new behaviours and items (and retire items); save elsewhere")
    data_args(u)
    u.add_argument("--model", required=True, help="directory of the saved model (left unchanged)")
    u.add_argument("--out", required=True, help="directory to save the updated model into")
    u.add_argument("--replay", default=None, metavar="FILE", help="the old behaviours, replayed so the model does not forget")
    u.add_argument("--retire", nargs="+", default=(), metavar="ID", help="item ids (the data's) never to retrieve again")
    for name in UPDATE_FIELDS:
        f = next(f for f in dataclasses.fields(JTMConfig) if f.name == name)
        kind = ({"action": argparse.BooleanOptionalAction} if isinstance(f.default, bool)
                else {"type": or_none(f.metadata.get("kind") or type(f.default))})
        u.add_argument(f"--{name.replace('_', '-')}", dest=f"config_{name}", **kind,
                       default=argparse.SUPPRESS, help=f"{f.metadata['help']} (default: the model's)")
    runtime_args(u)
    u.set_defaults(fn=cmd_update)


def cmd_update(a: argparse.Namespace) -> None:
    from . import datasets
    from .jtm import JTM

    if Path(a.out).resolve() == Path(a.model).resolve():
        raise InvalidInputError("--out must differ from --model: the saved model stays as it was")
    jtm = JTM.load(a.model, device=a.device, n_threads=a.threads)
    jtm.config = dataclasses.replace(jtm.config, **config_overrides(a))
    load = {"show_progress": not a.quiet, **({"skip_bad_rows": True} if a.skip_bad_rows else {})}
    new = datasets.load(a.data, a.format, **load)
    replay = datasets.load(a.replay, a.format, **load) if a.replay else None
    record = jtm.update(new, replay=replay, retire=list(a.retire), show_progress=not a.quiet)
    jtm.save(a.out)
    split = Path(a.model) / "split.json"
    if split.exists():  # evaluate and learn-tree read the split the model was trained with
        shutil.copyfile(split, Path(a.out) / "split.json")
    print(f"{record.new_items} new item(s), {record.retired_items} retired, {record.new_behaviours} new behaviour(s) "
          f"in {record.seconds.get('update', 0.0):.1f} s; saved to {a.out}")


__all__ = ["add_update_command", "cmd_update", "UPDATE_FIELDS"]

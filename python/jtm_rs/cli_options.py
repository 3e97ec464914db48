"""The command line's options for :class:`JTMConfig`, derived from its fields (one source of
defaults): ``--max-examples-per-epoch N`` for ``max_examples_per_epoch``, ``--no-hierarchical``
for ``hierarchical=False``, ``--config FILE`` for a JSON object of fields."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Sequence

from .exceptions import InvalidInputError

#: Older or shorter spellings of some JTMConfig options.
_ALIASES = {"max_examples_per_epoch": ["--examples-per-epoch"]}


def add_config_options(p: argparse.ArgumentParser, exclude: Sequence[str] = ()) -> None:
    """One option per :class:`JTMConfig` field (``--max-examples-per-epoch`` for
    ``max_examples_per_epoch``), its help from the field; unset options keep the configuration's
    value (``--config FILE``, else the defaults). ``None`` is written ``none``."""
    from .config import JTMConfig

    g = p.add_argument_group("model and training (JTMConfig; default: --config's, else the library's)")
    g.add_argument("--config", default=None, metavar="FILE", help="JSON object of JTMConfig fields")
    for f in dataclasses.fields(JTMConfig):
        if f.name in exclude:
            continue
        flags = [f"--{f.name.replace('_', '-')}", *_ALIASES.get(f.name, [])]
        kw = dict(dest=f"config_{f.name}", default=argparse.SUPPRESS, help=f"{f.metadata['help']} (default: {f.default!r})")
        if isinstance(f.default, bool):
            g.add_argument(*flags, action=argparse.BooleanOptionalAction, **kw)
        elif isinstance(f.default, (tuple, list)) or f.name == "negatives":
            g.add_argument(*flags, type=int, nargs="+", metavar="N", **kw)
        else:
            kind = f.metadata.get("kind") or (float if isinstance(f.default, float) else str
                                              if isinstance(f.default, str) else int)
            metavar = None if f.metadata.get("choices") else {int: "N", float: "X", str: "TEXT"}[kind]
            g.add_argument(*flags, type=or_none(kind), choices=f.metadata.get("choices"), metavar=metavar, **kw)
    if "hierarchical" not in exclude:
        g.add_argument("--no-hierarchy", dest="config_hierarchical", action="store_false", default=argparse.SUPPRESS,
                       help="JTM-J: the same as --no-hierarchical")


def or_none(kind):
    """An argparse ``type``: ``kind`` of the text, or ``None`` for ``none``."""
    def parse(text: str):
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__
    return parse


def config_overrides(a: argparse.Namespace) -> dict:
    """The JTMConfig fields of ``--config`` and of the options given, by name."""
    out = {}
    if getattr(a, "config", None) is not None:
        out = json.loads(Path(a.config).read_text())
        if not isinstance(out, dict):
            raise InvalidInputError(f"{a.config}: not a JSON object of JTMConfig fields")
    for k, v in vars(a).items():
        if k.startswith("config_"):  # present only when given (default: SUPPRESS)
            out[k[len("config_"):]] = v[0] if k == "config_negatives" and len(v) == 1 else v
    return out


def experiment_budget(a: argparse.Namespace) -> dict:
    """The experiment's JTMConfig options: the Budget's own fields, the rest as ``jtm``."""
    from .experiments import Budget

    over = config_overrides(a)
    own = {f.name for f in dataclasses.fields(Budget)}
    return {**{k: v for k, v in over.items() if k in own}, "jtm": {k: v for k, v in over.items() if k not in own}}

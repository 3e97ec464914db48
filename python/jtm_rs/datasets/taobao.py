"""Taobao UserBehavior (Alibaba, Tianchi): ``user_id,item_id,category_id,behavior_type,timestamp``
without a header, behaviour types ``pv`` (click), ``buy``, ``cart``, ``fav``.

The full file (100 M rows, 3.5 GB) is read as a stream of 16 MB blocks, so memory holds the
kept columns (about 32 bytes a row) rather than the text.
"""

from __future__ import annotations

import os
from typing import Iterable, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..data import Interactions
from ..exceptions import InvalidInputError
from ._build import build
from ._reader import read_delimited

BEHAVIOURS = ("pv", "buy", "cart", "fav")


def load_user_behavior(
    path: Union[str, os.PathLike],
    behaviours: Optional[Iterable[str]] = None,
    *,
    skip_bad_rows: bool = False,
    duplicates: str = "drop",
    show_progress: bool = True,
) -> Interactions:
    """Reads UserBehavior.csv; ``behaviours`` keeps only those types (default: all four).

    A row with another behaviour type is a bad row (raised, or skipped with
    ``skip_bad_rows=True``); rows of a known but unselected type are counted in
    ``report.filtered_out``. The category column is kept for the paper's initial tree.
    """
    wanted = BEHAVIOURS if behaviours is None else tuple(behaviours)
    unknown = set(wanted) - set(BEHAVIOURS)
    if unknown or not wanted:
        raise InvalidInputError(f"behaviours must be a non-empty subset of {BEHAVIOURS}, got {sorted(unknown) or wanted}")
    known, keep = pa.array(BEHAVIOURS), pa.array(wanted)

    def row_filter(cols):
        b = pc.utf8_trim_whitespace(cols["behaviour"])
        bad = ~np.asarray(pc.is_in(b, value_set=known).to_numpy(zero_copy_only=False), dtype=bool)
        selected = np.asarray(pc.is_in(b, value_set=keep).to_numpy(zero_copy_only=False), dtype=bool)
        return selected, bad, "behaviour", lambda i: f"unknown behaviour type {b[i].as_py()!r}, expected one of {BEHAVIOURS}"

    cols = {"user": (0, "id"), "item": (1, "id"), "category": (2, "id"), "behaviour": (3, "text"), "timestamp": (4, "int")}
    values, report = read_delimited(path, cols, skip_bad_rows=skip_bad_rows, row_filter=row_filter, show_progress=show_progress)
    return build(report, values["user"], values["item"], values["timestamp"], values["category"], duplicates)

"""Loaders for public behaviour data, one module per source. Each returns
:class:`~jtm_rs.data.Interactions` with internal ids and the maps back to the file's ids
(``user_ids``, ``item_ids``), plus a :class:`LoadReport` of what was dropped and why.

* :func:`load_user_behavior` — Taobao UserBehavior CSV (100 M rows, streamed);
* :func:`load_amazon_ratings` — Amazon ``user,item,rating,timestamp`` with optional categories;
* :func:`load_table` — any CSV/TSV/Parquet with named or positional columns;
* :func:`load_user_sequences` — ``user item item ...`` lines (S3Rec/SASRec benchmarks);
* :func:`load` — any of them, by ``format`` or by a look at the file.

Parsing is pyarrow's (see the README: why pyarrow).
"""

from __future__ import annotations

import os
from typing import Union

from ..data import Interactions
from ..exceptions import InvalidInputError
from ._reader import LoadReport
from .amazon import load_amazon_ratings, read_item_categories, with_item_categories
from .sequences import load_user_sequences
from .table import load_table
from .taobao import BEHAVIOURS, load_user_behavior

FORMATS = ("table", "taobao", "amazon", "sequences")


def detect_format(path: Union[str, os.PathLike]) -> str:
    """Guesses the format of a data file from its name and first line."""
    p = os.fspath(path)
    if p.endswith((".parquet", ".pq")):
        return "table"
    from ._reader import open_text

    with open_text(p) as f:
        first = f.readline().strip()
    if "," not in first and "\t" not in first and len(first.split()) >= 2:
        return "sequences"
    low = first.lower()
    if "user" in low and "item" in low:
        return "table"
    fields = first.split(",")
    if len(fields) == 5 and fields[3].strip() in BEHAVIOURS:
        return "taobao"
    if len(fields) == 4:
        return "amazon"
    raise InvalidInputError(
        f"{p}: cannot tell the format from its first line {first[:60]!r}; pass format= one of {FORMATS}"
    )


def load(path: Union[str, os.PathLike], format: str = "auto", **kwargs) -> Interactions:
    """Loads ``path`` with the loader of ``format`` (``"auto"``: :func:`detect_format`)."""
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "table":
        return load_table(path, **kwargs)
    if fmt == "taobao":
        return load_user_behavior(path, **kwargs)
    if fmt == "amazon":
        return load_amazon_ratings(path, **kwargs)
    if fmt == "sequences":
        return load_user_sequences(path, **kwargs)
    raise InvalidInputError(f"format must be 'auto' or one of {FORMATS}, got {format!r}")


__all__ = [
    "LoadReport",
    "load",
    "detect_format",
    "load_table",
    "load_user_behavior",
    "load_amazon_ratings",
    "load_user_sequences",
    "read_item_categories",
    "with_item_categories",
    "FORMATS",
    "BEHAVIOURS",
]

"""Amazon product reviews, "ratings only" CSV (McAuley et al.): ``user,item,rating,timestamp``
without a header (user ids like ``A2SUAM1J3GNN3B``, ASINs like ``B000123XYZ``, unix seconds),
with an optional item -> category file."""

from __future__ import annotations

import json
import os
from typing import Optional, Union

import numpy as np

from ..data import Interactions
from ..exceptions import DataFormatError
from ..ids import IdMap
from ._build import build
from ._ids import finish_ids
from ._reader import read_delimited


def load_amazon_ratings(
    path: Union[str, os.PathLike],
    categories: Union[str, os.PathLike, None] = None,
    *,
    min_rating: Optional[float] = None,
    skip_bad_rows: bool = False,
    duplicates: str = "drop",
    show_progress: bool = True,
) -> Interactions:
    """Reads a ratings CSV; every rating counts as a behaviour unless ``min_rating`` drops the
    lower ones. ``categories``: a file of ``item,category`` lines (CSV, no header) or a JSON
    object ``{item: category or [category, ...]}`` (the first listed is used); items it does not
    name share one "unknown" category."""
    cols = {"user": (0, "id"), "item": (1, "id"), "rating": (2, "float"), "timestamp": (3, "timestamp")}
    values, report = read_delimited(path, cols, skip_bad_rows=skip_bad_rows, show_progress=show_progress)
    users, items, ts = values["user"], values["item"], values["timestamp"]
    if min_rating is not None:
        keep = values["rating"] >= min_rating
        report.filtered_out += int((~keep).sum())
        users, items, ts = _rows(users, keep), _rows(items, keep), ts[keep]
    data = build(report, users, items, ts, None, duplicates)
    if categories is None:
        return data
    return with_item_categories(data, read_item_categories(categories))


def _rows(chunks, keep: np.ndarray):
    """Rows ``keep`` of an id column held in chunks."""
    out, start = [], 0
    for c in chunks:
        m = keep[start : start + len(c)]
        start += len(c)
        out.append(c[m] if isinstance(c, np.ndarray) else c.filter(m))
    return out


def read_item_categories(path: Union[str, os.PathLike]) -> dict:
    """``{original item id (str): category label (str)}`` from a CSV or JSON file."""
    path = os.fspath(path)
    if path.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})", path=path, line=e.lineno) from None
        if not isinstance(raw, dict):
            raise DataFormatError(f"{path}: expected a JSON object {{item: category}}", path=path)
        out = {}
        for k, v in raw.items():
            if isinstance(v, list):
                if not v:
                    continue
                v = v[0]
            out[str(k)] = str(v)
        return out
    values, _ = read_delimited(path, {"item": (0, "id"), "category": (1, "id")}, show_progress=False)
    items, cats = finish_ids(values["item"]), finish_ids(values["category"])
    return dict(zip(items[0][items[1]].astype(str), cats[0][cats[1]].astype(str)))


def with_item_categories(data: Interactions, item_category: dict) -> Interactions:
    """``data`` with a category column from ``{original item id: label}`` (unnamed items: one
    shared "unknown" label)."""
    if data.item_ids is None:
        raise DataFormatError("categories by original id need data with an item IdMap")
    names = data.item_ids.ids.astype(str)
    labels = np.array([item_category.get(n, "\x00unknown") for n in names], dtype=str)
    _, per_item = IdMap.fit(labels)
    import dataclasses

    return dataclasses.replace(data, category=per_item[data.item])

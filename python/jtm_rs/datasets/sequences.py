"""The "one user per line" text format of many sequential-recommendation benchmarks
(S3Rec, SASRec, BERT4Rec): ``user item item ...``, items in time order, separated by blanks.

Several files (a train file, then a test file) are concatenated per user in the order given.
The position in the concatenated sequence is the timestamp.
"""

from __future__ import annotations

import os
from typing import Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ..data import Interactions
from ..exceptions import DataFormatError
from ._build import build
from ._reader import LoadReport


def load_user_sequences(
    *paths: Union[str, os.PathLike],
    duplicates: str = "keep",
    show_progress: bool = True,
) -> Interactions:
    """Reads one or more ``user item item ...`` files. A line with a user and no item adds
    nothing; a blank line is skipped. Ids may be integers or strings. Duplicates are kept by
    default (a repeated item at another position is another behaviour)."""
    if not paths:
        raise DataFormatError("load_user_sequences needs at least one file")
    users, items, pos, reports = [], [], [], []
    offset = {}  # user -> items seen in earlier files
    for path in map(os.fspath, paths):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such file")
        report = LoadReport(path)
        try:
            table = pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(column_names=["line"], use_threads=False, block_size=1 << 24),
                parse_options=pacsv.ParseOptions(delimiter="\x01", quote_char=False, ignore_empty_lines=False),
                convert_options=pacsv.ConvertOptions(column_types={"line": pa.string()}, strings_can_be_null=False),
            )
        except pa.ArrowInvalid as e:
            if "Empty CSV file" in str(e):
                continue
            raise DataFormatError(f"{path}: {e}", path=path) from None
        lines = pc.utf8_trim_whitespace(table.column("line"))
        tokens = pc.split_pattern_regex(lines, r"\s+")
        n_tok = pc.list_value_length(tokens).to_numpy(zero_copy_only=False)
        blank = np.asarray(pc.equal(pc.utf8_length(lines), 0).to_numpy(zero_copy_only=False), dtype=bool)
        report.blank_lines = int(blank.sum())
        keep = ~blank & (n_tok >= 2)
        flat = pc.list_flatten(tokens.filter(pa.array(keep)))
        lens = n_tok[keep]
        starts = (np.cumsum(lens) - lens).astype(np.int64)
        is_user = np.zeros(len(flat), dtype=bool)
        is_user[starts] = True
        line_users = pc.filter(flat, pa.array(is_user)).to_pylist()
        n_items = lens - 1
        # Positions continue after what the same user had in earlier files.
        base = np.array([offset.get(u, 0) for u in line_users], dtype=np.int64)
        for u, k in zip(line_users, n_items):
            offset[u] = offset.get(u, 0) + int(k)
        within = np.arange(int(n_items.sum())) - np.repeat(np.cumsum(n_items) - n_items, n_items)
        pos.append(np.repeat(base, n_items) + within)
        users.append(np.repeat(np.array(line_users, dtype=object), n_items))
        items.append(pc.filter(flat, pa.array(~is_user)))
        report.rows = int(n_items.sum())
        reports.append(report)
    report = reports[0] if len(reports) == 1 else LoadReport(", ".join(map(os.fspath, paths)))
    if len(reports) > 1:
        report.rows = sum(r.rows for r in reports)
        report.blank_lines = sum(r.blank_lines for r in reports)
    user_col = [pa.array(np.concatenate(users).astype(str)) if users else pa.array([], pa.string())]
    from ._reader import convert_column

    # Ids that are all canonical integers stay integers, as in every other loader.
    user_chunks = [convert_column(c, "id", "user", {}, {})[0] for c in user_col]
    item_chunks = [convert_column(c, "id", "item", {}, {})[0] for c in items]
    ts = np.concatenate(pos) if pos else np.zeros(0, np.int64)
    return build(report, user_chunks, item_chunks, ts, None, duplicates)

"""Any table of behaviours: CSV/TSV (any delimiter, with or without header) or Parquet, with
the user, item, timestamp (and optional category) columns named or given by position."""

from __future__ import annotations

import os
from typing import Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..data import Interactions
from ..exceptions import DataFormatError, InvalidInputError
from ._build import build
from ._reader import LoadReport, convert_column, read_delimited, read_header, sniff_delimiter

Column = Union[str, int]


def load_table(
    path: Union[str, os.PathLike],
    *,
    user: Column = "user",
    item: Column = "item",
    timestamp: Column = "timestamp",
    category: Optional[Column] = None,
    delimiter: Optional[str] = None,
    header: bool = True,
    format: Optional[str] = None,
    skip_bad_rows: bool = False,
    duplicates: str = "drop",
    show_progress: bool = True,
) -> Interactions:
    """Reads behaviours from a delimited text file or a Parquet file.

    Columns are header names (``header=True``) or 0-based positions. ``category`` defaults to
    the column named "category" when the header has one. ``delimiter`` defaults to tab for
    ``.tsv`` files and to whichever of tab or comma the first line holds. ``format`` is
    "csv" or "parquet" (default: by extension). Ids may be integers or strings; timestamps
    integers, floats or ISO-8601 dates (stored as unix seconds).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    fmt = format or ("parquet" if path.endswith((".parquet", ".pq")) else "csv")
    if fmt == "parquet":
        return _load_parquet(path, user, item, timestamp, category, duplicates, skip_bad_rows)
    if fmt != "csv":
        raise InvalidInputError(f"format must be 'csv' or 'parquet', got {format!r}")
    if delimiter is None:
        delimiter = "\t" if path.endswith(".tsv") else sniff_delimiter(path)
    names = read_header(path, delimiter) if header else None
    spec = {"user": user, "item": item, "timestamp": timestamp}
    if category is not None:
        spec["category"] = category
    elif names is not None and "category" in [n.lower() for n in names]:
        spec["category"] = "category"
    cols = {}
    for role, col in spec.items():
        kind = "timestamp" if role == "timestamp" else "id"
        cols[role] = (_position(path, names, col, role), kind)
    values, report = read_delimited(
        path, cols, delimiter=delimiter, header=header, skip_bad_rows=skip_bad_rows, show_progress=show_progress
    )
    return build(report, values["user"], values["item"], values["timestamp"], values.get("category"), duplicates)


def _position(path: str, names, col: Column, role: str) -> int:
    if isinstance(col, (int, np.integer)):
        if col < 0 or (names is not None and col >= len(names)):
            raise DataFormatError(f"{path}: {role} column position {col} is out of range", path=path)
        return int(col)
    if names is None:
        raise InvalidInputError(f"{role} column {col!r} is a name, but header=False: give a 0-based position")
    lowered = [n.lower() for n in names]
    if col.lower() not in lowered:
        raise DataFormatError(f"{path}: header {names} has no column {col!r} for the {role}", path=path, line=1)
    return lowered.index(col.lower())


def _load_parquet(path, user, item, timestamp, category, duplicates, skip_bad_rows) -> Interactions:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataFormatError(f"{path}: not a Parquet file ({e})", path=path) from None
    names = schema.names
    spec = {"user": user, "item": item, "timestamp": timestamp}
    if category is not None:
        spec["category"] = category
    elif "category" in names:
        spec["category"] = "category"
    resolved = {role: names[_position(path, names, c, role)] for role, c in spec.items()}
    table = pq.read_table(path, columns=list(dict.fromkeys(resolved.values())))
    report = LoadReport(path)
    n = table.num_rows
    bad = np.zeros(n, dtype=bool)
    converted = {}
    for role, name in resolved.items():
        col = table.column(name).combine_chunks()
        null = np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        if pa.types.is_integer(col.type) and role != "timestamp":
            v = pc.fill_null(col, 0).cast(pa.int64()).to_numpy()
        elif pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
            v = pc.fill_null(col.cast(pa.timestamp("s")), 0).cast(pa.int64()).to_numpy()
        elif pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
            v = pc.fill_null(col, 0).to_numpy()
            null |= ~np.isfinite(v.astype(np.float64))
        else:
            text = pc.fill_null(col.cast(pa.string()), "")
            kind = "timestamp" if role == "timestamp" else "id"
            v, b, _ = convert_column(text, kind, role, {}, {})
            if b is not None:
                null |= b
        converted[role] = v
        if null.any():
            i = int(np.flatnonzero(null)[0])
            if not skip_bad_rows:
                raise DataFormatError(
                    f"{path}, row {i + 1}, column {name!r}: missing or invalid value "
                    "(pass skip_bad_rows=True to skip such rows)", path=path, line=i + 1, column=name)
            bad |= null
    if bad.any():
        report.bad_rows_skipped = int(bad.sum())
        converted = {k: (v[~bad] if isinstance(v, np.ndarray) else v.filter(pa.array(~bad))) for k, v in converted.items()}
    return build(
        report, [converted["user"]], [converted["item"]], converted["timestamp"],
        [converted["category"]] if "category" in converted else None, duplicates,
    )

"""Streaming, validating reader for delimited text (CSV/TSV/...), shared by every loader.

Parsing is pyarrow's (``pyarrow.csv.open_csv``): a C++ streaming reader that needs no whole-file
copy in memory, handles quoting and compression, and reads a 3.5 GB file in well under a minute
per core. Every column is read as text and converted block by block with vectorised casts, so a
bad value is found *with its physical line number* (the reader runs single-threaded and keeps
blank lines, so rows map onto lines) and either raised as :class:`DataFormatError` or skipped
and counted. Only a block that fails a vectorised cast is re-checked value by value.
"""

from __future__ import annotations

import csv
import io
import os
import time
from datetime import datetime, timezone
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from ..progress import bar as progress_bar

from ..exceptions import DataFormatError, InvalidInputError
from ..load_report import LoadReport

#: Column kinds: "id" (int64 if every value is a canonical integer, else string), "int",
#: "float", "timestamp" (int, float or ISO-8601), "text" (kept as arrow strings, e.g. for filters).
KINDS = ("id", "int", "float", "timestamp", "text")

_COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".lz4": "lz4"}


class _CountingFile(io.RawIOBase):
    """A read-only file that advances a progress bar by the bytes read from disk."""

    def __init__(self, f, bar):
        self._f, self._bar = f, bar

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self._f.readinto(b)
        if n:
            self._bar.update(n)
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


def read_header(path: str, delimiter: str) -> List[str]:
    """The first line of ``path`` split into column names (stripped)."""
    with open_text(path) as f:
        line = f.readline()
    if not line.strip():
        raise DataFormatError(f"{path}: empty file (expected a header line)", path=path, line=1)
    return [h.strip() for h in next(csv.reader([line], delimiter=delimiter))]


def open_text(path: str):
    ext = os.path.splitext(path)[1].lower()
    if ext in _COMPRESSION:
        stream = pa.input_stream(path, compression=_COMPRESSION[ext])
        return io.TextIOWrapper(io.BufferedReader(stream), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace", newline="")


def sniff_delimiter(path: str) -> str:
    """Tab if the first line has a tab, else comma (the two formats public dumps use)."""
    with open_text(path) as f:
        line = f.readline()
    return "\t" if "\t" in line else ","


def read_delimited(
    path: Union[str, os.PathLike],
    columns: Dict[str, Tuple[int, str]],
    *,
    delimiter: str = ",",
    header: bool = False,
    skip_bad_rows: bool = False,
    row_filter: Optional[Callable[[Dict[str, pa.Array]], tuple]] = None,
    show_progress: bool = True,
    block_size: int = 1 << 24,
) -> Tuple[Dict[str, object], LoadReport]:
    """Reads ``columns`` (``name -> (0-based position, kind)``) of a delimited file.

    Returns ``(values, report)``: for "int"/"timestamp" an int64/float64 numpy array, for "id"
    an int64 array or a list of arrow string arrays (see :func:`._ids.finish_ids`), for "text" a
    chunked arrow array. ``row_filter(cols) -> (keep, bad, column, describe)`` (numpy bool masks
    and ``describe(i) -> str``) drops rows before conversion (e.g. Taobao's behaviour type):
    ``keep=False`` rows are counted as filtered out, ``bad`` rows are raised or skipped.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    for name, (_, kind) in columns.items():
        if kind not in KINDS:
            raise InvalidInputError(f"column {name!r}: unknown kind {kind!r}")
    report = LoadReport(path)
    t0 = time.perf_counter()
    bad_lines: List[Tuple[Optional[int], str, str]] = []  # (line, problem, text) of malformed rows

    def on_invalid(row) -> str:
        bad_lines.append((row.number, f"expected {row.expected_columns} fields, found {row.actual_columns}", row.text))
        return "skip"

    ncols = max(pos for pos, _ in columns.values()) + 1
    positions = {name: pos for name, (pos, _) in columns.items()}
    include = sorted(set(positions.values()))
    read_opts = pacsv.ReadOptions(
        use_threads=False,  # keeps invalid-row line numbers exact
        block_size=block_size,
        autogenerate_column_names=True,
        skip_rows=1 if header else 0,
    )
    parse_opts = pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid, ignore_empty_lines=False)
    conv_opts = pacsv.ConvertOptions(
        include_columns=[f"f{i}" for i in include],
        column_types={f"f{i}": pa.string() for i in include},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    out: Dict[str, list] = {name: [] for name in columns}
    id_kinds: Dict[str, str] = {}
    ts_kind: Dict[str, str] = {}
    next_line = 2 if header else 1
    size = os.path.getsize(path)
    raw = open(path, "rb")
    bar = progress_bar(size, f"reading {os.path.basename(path)}", "B", show=show_progress, unit_scale=True, mininterval=1.0)
    src = _CountingFile(raw, bar)
    ext = os.path.splitext(path)[1].lower()
    stream = pa.PythonFile(io.BufferedReader(src), mode="r")
    if ext in _COMPRESSION:
        stream = pa.CompressedInputStream(stream, _COMPRESSION[ext])
    try:
        try:
            reader = pacsv.open_csv(stream, read_options=read_opts, parse_options=parse_opts, convert_options=conv_opts)
        except pa.ArrowInvalid as e:
            if "Empty CSV file" not in str(e):
                raise DataFormatError(f"{path}: {e}", path=path) from None
            reader = None
        except (pa.ArrowKeyError, KeyError):  # a wanted column beyond the first line's fields
            with open_text(path) as f:
                for _ in range(2 if header else 1):
                    first = f.readline()
            found = len(next(csv.reader([first], delimiter=delimiter), []))
            line = 2 if header else 1
            raise DataFormatError(
                f"{path}, line {line}: expected at least {ncols} fields, found {found}", path=path, line=line
            ) from None
        n_bad_seen = 0
        while reader is not None:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except pa.ArrowInvalid as e:
                raise DataFormatError(f"{path}: {e}", path=path) from None
            n = batch.num_rows
            new_bad = bad_lines[n_bad_seen:]
            n_bad_seen = len(bad_lines)
            lines = _row_lines(next_line, n, [b[0] for b in new_bad])
            next_line = int(lines[-1]) + 1 if n else next_line + len(new_bad)
            if new_bad:
                line, problem, text = new_bad[0]
                if not skip_bad_rows:
                    raise DataFormatError(
                        f"{path}, line {line}: {problem}: {text[:80]!r} (pass skip_bad_rows=True to skip such rows)",
                        path=path, line=line,
                    )
                report.bad_rows_skipped += len(new_bad)
                report.first_bad_rows += [f"line {b[0]}: {b[1]}" for b in new_bad[: 5 - len(report.first_bad_rows)]]
            if n == 0:
                continue
            cols = {name: batch.column(include.index(pos)) for name, pos in positions.items()}
            # Blank lines (every read field empty) are not data.
            blank = None
            for c in cols.values():
                e = pc.equal(pc.utf8_length(c), 0)
                blank = e if blank is None else pc.and_(blank, e)
            keep = pc.invert(blank)
            n_blank = n - pc.sum(keep.cast(pa.int64())).as_py() if n else 0
            if n_blank:
                report.blank_lines += n_blank
                cols = {k: v.filter(keep) for k, v in cols.items()}
                lines = lines[np.asarray(keep.to_numpy(zero_copy_only=False), dtype=bool)]
            if row_filter is not None:
                keep_rows, bad_rows, column, problem = row_filter(cols)
                if bad_rows.any():
                    i = int(np.flatnonzero(bad_rows)[0])
                    if not skip_bad_rows:
                        raise DataFormatError(
                            f"{path}, line {lines[i]}, column {column!r} (field {positions[column] + 1}): "
                            f"{problem(i)} (pass skip_bad_rows=True to skip such rows)",
                            path=path, line=int(lines[i]), column=column,
                        )
                    report.bad_rows_skipped += int(bad_rows.sum())
                    if len(report.first_bad_rows) < 5:
                        report.first_bad_rows.append(f"line {lines[i]}, column {column!r}: {problem(i)}")
                    keep_rows = keep_rows & ~bad_rows
                report.filtered_out += int((~keep_rows & ~bad_rows).sum())
                cols = {k: v.filter(pa.array(keep_rows)) for k, v in cols.items()}
                lines = lines[keep_rows]
            converted, bad = {}, np.zeros(len(lines), dtype=bool)
            first_problem: Optional[Tuple[int, str, str]] = None
            for name, (pos, kind) in columns.items():
                col = cols[name]
                if kind == "text":
                    converted[name] = col
                    continue
                vals, col_bad, problem = convert_column(col, kind, name, id_kinds, ts_kind)
                converted[name] = vals
                if col_bad is not None and col_bad.any():
                    i = int(np.flatnonzero(col_bad)[0])
                    if first_problem is None or lines[i] < first_problem[0]:
                        first_problem = (int(lines[i]), name, problem(i))
                    bad |= col_bad
            if first_problem is not None:
                line, name, problem = first_problem
                if not skip_bad_rows:
                    raise DataFormatError(
                        f"{path}, line {line}, column {name!r} (field {positions[name] + 1}): {problem} "
                        "(pass skip_bad_rows=True to skip such rows)",
                        path=path, line=line, column=name,
                    )
                report.bad_rows_skipped += int(bad.sum())
                if len(report.first_bad_rows) < 5:
                    report.first_bad_rows.append(f"line {line}, column {name!r}: {problem}")
                good = ~bad
                converted = {k: _take(v, good) for k, v in converted.items()}
            for name, v in converted.items():
                out[name].append(v)
    finally:
        bar.close()
        raw.close()
    values: Dict[str, object] = {}
    for name, (_, kind) in columns.items():
        chunks = out[name]
        if kind == "text":
            values[name] = pa.chunked_array(chunks, pa.string())
        elif kind == "id":
            values[name] = chunks  # finished by _ids.finish_ids (int or string ids)
        else:
            dtype = np.float64 if kind == "float" or ts_kind.get(name) == "float" else np.int64
            values[name] = np.concatenate(chunks).astype(dtype, copy=False) if chunks else np.zeros(0, dtype)
    report.rows = sum(len(c) for c in out[next(iter(columns))]) if columns else 0
    report.seconds = time.perf_counter() - t0
    return values, report


def _row_lines(first: int, n: int, bad: Sequence[Optional[int]]) -> np.ndarray:
    """Physical line numbers of the ``n`` rows of a block that starts at line ``first`` and
    whose malformed lines (skipped by the parser) are ``bad``."""
    skip = sorted(b for b in bad if b is not None)
    lines = np.arange(first, first + n + len(skip), dtype=np.int64)
    if skip:
        lines = lines[~np.isin(lines, skip)]
    return lines[:n]


def _take(v, mask: np.ndarray):
    if isinstance(v, np.ndarray):
        return v[mask]
    return v.filter(pa.array(mask))


_INT_PATTERN = r"^-?(0|[1-9][0-9]*)$"


def convert_column(col: pa.Array, kind: str, name: str, id_kinds: Dict[str, str], ts_kind: Dict[str, str]):
    """Converts one text column of a block. Returns ``(values, bad_mask or None, describe(i))``."""
    col = pc.utf8_trim_whitespace(col)
    empty = np.asarray(pc.equal(pc.utf8_length(col), 0).to_numpy(zero_copy_only=False), dtype=bool)
    texts = None

    def text(i: int) -> str:
        nonlocal texts
        if texts is None:
            texts = col.to_pylist()
        return texts[i]

    def describe(bad_kind: str):
        return lambda i: "empty value" if empty[i] else f"{text(i)!r} is not {bad_kind}"

    if kind == "id":
        canonical = np.asarray(pc.match_substring_regex(col, _INT_PATTERN).to_numpy(zero_copy_only=False), dtype=bool)
        if id_kinds.get(name, "int") == "int" and (canonical | empty).all():
            try:
                filled = pc.if_else(pa.array(empty), "0", col) if empty.any() else col
                vals = pc.cast(filled, pa.int64()).to_numpy()
                id_kinds[name] = "int"
                return vals, (empty if empty.any() else None), describe("an id")
            except pa.ArrowInvalid:  # out of int64 range: keep as text
                pass
        id_kinds[name] = "str"
        return col, (empty if empty.any() else None), describe("an id")
    if kind == "float":
        kind, ts_kind = "timestamp", {name: "float"}
    if kind == "int":
        try:
            return pc.cast(col, pa.int64()).to_numpy(), None, describe("an integer")
        except pa.ArrowInvalid:
            ok = np.asarray(pc.match_substring_regex(col, _INT_PATTERN).to_numpy(zero_copy_only=False), dtype=bool)
            vals = np.zeros(len(col), dtype=np.int64)
            idx = np.flatnonzero(ok)
            for i in idx:  # slow path, only for a block with a bad value
                try:
                    vals[i] = int(text(int(i)))
                except (ValueError, OverflowError):
                    ok[i] = False
            return vals, ~ok, describe("an integer")
    # timestamp: the first block decides int / float / ISO-8601 for the whole file.
    known = ts_kind.get(name)
    for k in ([known] if known else ["int", "float", "iso"]):
        vals = _cast_timestamp(col, k)
        if vals is not None:
            ts_kind[name] = k
            return vals, None, describe("a timestamp")
    k = known or ("iso" if not _looks_numeric(col) else "float")
    ts_kind[name] = k
    vals = np.zeros(len(col), dtype=np.float64 if k == "float" else np.int64)
    ok = ~empty
    for i in np.flatnonzero(ok):
        v = _parse_one_timestamp(text(int(i)), k)
        if v is None:
            ok[i] = False
        else:
            vals[i] = v
    return vals, ~ok, describe("an integer timestamp" if k == "int" else "a number" if k == "float" else "an ISO-8601 date")


def _looks_numeric(col: pa.Array) -> bool:
    return bool(pc.any(pc.match_substring_regex(col, r"^-?[0-9.]+([eE][-+]?[0-9]+)?$")).as_py())


def _cast_timestamp(col: pa.Array, kind: str) -> Optional[np.ndarray]:
    try:
        if kind == "int":
            return pc.cast(col, pa.int64()).to_numpy()
        if kind == "float":
            v = pc.cast(col, pa.float64()).to_numpy()
            return v if np.isfinite(v).all() else None
        for t in (pa.timestamp("s"), pa.timestamp("s", tz="UTC")):
            try:
                return pc.cast(col, t).cast(pa.int64()).to_numpy()
            except pa.ArrowInvalid:
                continue
        return None
    except pa.ArrowInvalid:
        return None


def _parse_one_timestamp(s: str, kind: str):
    try:
        if kind == "int":
            return int(s)
        if kind == "float":
            v = float(s)
            return v if np.isfinite(v) else None
        d = datetime.fromisoformat(s.replace("Z", "+00:00"))
        if d.tzinfo is None:
            d = d.replace(tzinfo=timezone.utc)
        return int(d.timestamp())
    except (ValueError, OverflowError):
        return None

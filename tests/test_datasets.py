"""Loaders: good files of every format, each kind of bad file (written here), id maps and the
duplicate policy."""

import gzip

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jtm_rs import Interactions, datasets
from jtm_rs.exceptions import DataFormatError, InvalidInputError, UnknownItemError
from jtm_rs.ids import IdMap


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def _rows(d: Interactions):
    """(user, item, timestamp) in the file's ids, in the data's order."""
    return list(zip(d.user_ids.decode(d.user).tolist(), d.item_ids.decode(d.item).tolist(), d.timestamp.tolist()))


# --- Taobao UserBehavior ------------------------------------------------------------------------

TAOBAO = "1,2268318,2520377,pv,1511544070\n1,2333346,2520771,buy,1511561733\n2,2268318,2520377,cart,1511572885\n"


def test_taobao_good_file_and_behaviour_filter(tmp_path):
    p = _write(tmp_path, "UserBehavior.csv", TAOBAO)
    d = datasets.load_user_behavior(p, show_progress=False)
    assert _rows(d) == [(1, 2268318, 1511544070), (1, 2333346, 1511561733), (2, 2268318, 1511572885)]
    assert d.category is not None and d.category[0] == d.category[2] != d.category[1]
    buys = datasets.load_user_behavior(p, ["buy"], show_progress=False)
    assert _rows(buys) == [(1, 2333346, 1511561733)] and buys.report.filtered_out == 2
    assert datasets.detect_format(p) == "taobao"
    with pytest.raises(InvalidInputError, match="subset"):
        datasets.load_user_behavior(p, ["click"])


@pytest.mark.parametrize(
    "bad_line, match",
    [
        ("3,5,6,pv", r"line 3: expected 5 fields, found 4"),
        ("3,5,6,like,1511544070", r"line 3, column 'behaviour' \(field 4\): unknown behaviour type 'like'"),
        ("3,5,6,pv,yesterday", r"line 3, column 'timestamp' \(field 5\): 'yesterday' is not an integer"),
        ("3,,6,pv,1511544070", r"line 3, column 'item' \(field 2\): empty value"),
    ],
)
def test_taobao_bad_rows_name_file_line_and_column(tmp_path, bad_line, match):
    text = TAOBAO.splitlines()
    p = _write(tmp_path, "ub.csv", "\n".join(text[:2] + [bad_line] + text[2:]) + "\n")
    with pytest.raises(DataFormatError, match="ub.csv, " + match) as e:
        datasets.load_user_behavior(p, show_progress=False)
    assert e.value.line == 3
    d = datasets.load_user_behavior(p, skip_bad_rows=True, show_progress=False)
    assert len(d) == 3 and d.report.bad_rows_skipped == 1 and d.report.first_bad_rows


def test_line_numbers_stay_exact_across_blocks(tmp_path):
    # Many rows, small blocks, a malformed row early and a bad value late: both named exactly.
    rows = [f"{u},{u % 7},{u % 3},pv,{1000 + u}" for u in range(5000)]
    rows[100] = "1,2,3"  # line 101
    rows[4321] = "9,x,3,pv,notatime"  # line 4322
    p = _write(tmp_path, "big.csv", "\n".join(rows) + "\n")
    from jtm_rs.datasets._reader import read_delimited

    cols = {"user": (0, "id"), "timestamp": (4, "timestamp")}
    with pytest.raises(DataFormatError, match="line 101: expected 5 fields"):
        read_delimited(p, cols, show_progress=False, block_size=4096)
    values, report = read_delimited(p, {"ts": (4, "int")}, show_progress=False, block_size=4096, skip_bad_rows=True)
    assert report.bad_rows_skipped == 2 and "line 4322" in report.first_bad_rows[1]
    assert len(values["ts"]) == 4998


# --- Amazon ratings -----------------------------------------------------------------------------

AMAZON = "A2SUAM1J3GNN3B,0000013714,5.0,1388534400\nA2SUAM1J3GNN3B,B000123XYZ,2.0,1388620800\nAZZ,0000013714,4.0,1388707200\n"


def test_amazon_string_ids_keep_their_text_and_categories(tmp_path):
    p = _write(tmp_path, "ratings.csv", AMAZON)
    d = datasets.load_amazon_ratings(p, show_progress=False)
    assert datasets.detect_format(p) == "amazon"
    assert _rows(d)[0] == ("A2SUAM1J3GNN3B", "0000013714", 1388534400)  # leading zeros kept
    assert d.category is None
    hi = datasets.load_amazon_ratings(p, min_rating=4, show_progress=False)
    assert len(hi) == 2 and hi.report.filtered_out == 1
    cats = _write(tmp_path, "cats.csv", "0000013714,Books\nB000123XYZ,Toys\n")
    c = datasets.load_amazon_ratings(p, cats, show_progress=False)
    by_item = dict(zip(c.item_ids.decode(c.item).tolist(), c.category.tolist()))
    assert by_item["0000013714"] != by_item["B000123XYZ"]
    j = _write(tmp_path, "cats.json", '{"0000013714": ["Books", "Brand"], "B000123XYZ": ["Toys"]}')
    cj = datasets.load_amazon_ratings(p, j, show_progress=False)
    assert np.array_equal(cj.category, c.category)
    bad_json = _write(tmp_path, "bad.json", '{"a": [1,\n')
    with pytest.raises(DataFormatError, match="bad.json, line"):
        datasets.load_amazon_ratings(p, bad_json, show_progress=False)


def test_amazon_bad_rating(tmp_path):
    p = _write(tmp_path, "r.csv", AMAZON + "AZZ,B000123XYZ,five,1388707200\n")
    with pytest.raises(DataFormatError, match=r"r.csv, line 4, column 'rating' \(field 3\): 'five' is not a number"):
        datasets.load_amazon_ratings(p, show_progress=False)


# --- generic tables -----------------------------------------------------------------------------


def test_table_named_columns_iso_dates_and_any_delimiter(tmp_path):
    p = _write(tmp_path, "t.csv", "ts;who;what\n2024-01-02T10:00:00;u1;i1\n2024-01-01;u1;i2\n2024-01-03 00:00:00Z;u2;i1\n")
    d = datasets.load_table(p, user="who", item="what", timestamp="ts", delimiter=";", show_progress=False)
    assert _rows(d) == [("u1", "i2", 1704067200), ("u1", "i1", 1704189600), ("u2", "i1", 1704240000)]


def test_table_positions_without_header_tsv_and_gzip(tmp_path):
    p = _write(tmp_path, "t.tsv", "7\t-5\t1.5\n7\t9223372036854775807\t0.5\n")
    d = datasets.load_table(p, user=0, item=1, timestamp=2, header=False, show_progress=False)
    assert _rows(d) == [(7, 9223372036854775807, 0.5), (7, -5, 1.5)]
    g = tmp_path / "t.csv.gz"
    g.write_bytes(gzip.compress(b"user,item,timestamp\n1,2,3\n1,3,4\n"))
    assert len(datasets.load_table(g, show_progress=False)) == 2


def test_table_parquet(tmp_path):
    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"user": ["a", "a", "b"], "item": [-1, 2**62, -1], "timestamp": pa.array([3, 1, 2], pa.int64()),
                             "category": ["x", "y", "x"]}), p)
    d = datasets.load_table(p, show_progress=False)
    assert _rows(d) == [("a", 2**62, 1), ("a", -1, 3), ("b", -1, 2)]
    assert d.category is not None
    q = tmp_path / "n.parquet"
    pq.write_table(pa.table({"user": ["a", None], "item": [1, 2], "timestamp": [1, 2]}), q)
    with pytest.raises(DataFormatError, match="row 2, column 'user'"):
        datasets.load_table(q, show_progress=False)
    assert len(datasets.load_table(q, skip_bad_rows=True, show_progress=False)) == 1


@pytest.mark.parametrize(
    "text, kwargs, match",
    [
        ("", {}, "empty file"),
        ("user,item\n1,2\n", {}, r"no column 'timestamp'"),
        ("user,item,timestamp\n1,2,3\n1,2,2024-13-45\n", {}, r"line 3, column 'timestamp'"),
        ("user,item,timestamp\n1,2,3\n\n1,,4\n", {}, r"line 4, column 'item' \(field 2\): empty value"),
        ("user,item,timestamp\n1,2,3\n1,2,3,4\n", {}, r"line 3: expected 3 fields, found 4"),
        ("1,2,3\n", {"header": False}, "is a name, but header=False"),
    ],
)
def test_table_bad_files(tmp_path, text, kwargs, match):
    p = _write(tmp_path, "bad.csv", text)
    with pytest.raises((DataFormatError, InvalidInputError), match=match):
        datasets.load_table(p, show_progress=False, **kwargs)


def test_too_few_columns_everywhere(tmp_path):
    p = _write(tmp_path, "three.csv", "1,2,3\n4,5,6\n")
    with pytest.raises(DataFormatError, match="three.csv, line 1: expected at least 5 fields, found 3"):
        datasets.load_user_behavior(p, show_progress=False)
    with pytest.raises(DataFormatError, match="line 1: expected at least 4 fields, found 3"):
        datasets.load_amazon_ratings(p, show_progress=False)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        datasets.load(tmp_path / "nope.csv")


def test_blank_lines_are_not_data_and_duplicates_are_counted(tmp_path):
    p = _write(tmp_path, "d.csv", "user,item,timestamp\n1,2,3\n\n1,2,3\n1,2,4\n\n")
    d = datasets.load_table(p, show_progress=False)
    assert len(d) == 2 and d.report.duplicates_dropped == 1 and d.report.blank_lines == 2
    assert "1 duplicate rows dropped" in str(d.report)
    assert len(datasets.load_table(p, duplicates="keep", show_progress=False)) == 3
    with pytest.raises(InvalidInputError, match="duplicates"):
        datasets.load_table(p, duplicates="sometimes", show_progress=False)


# --- one user per line --------------------------------------------------------------------------


def test_user_sequences_concatenate_train_and_test_files(tmp_path):
    a = _write(tmp_path, "train.txt", "u1 i1 i2\nu2 i3\n\nu3\n")
    b = _write(tmp_path, "test.txt", "u1 i3\n")
    d = datasets.load_user_sequences(a, b, show_progress=False)
    assert _rows(d) == [("u1", "i1", 0), ("u1", "i2", 1), ("u1", "i3", 2), ("u2", "i3", 0)]
    assert datasets.detect_format(a) == "sequences"
    n = datasets.load(_write(tmp_path, "n.txt", "1 5 6 5\n2 6\n"))
    assert n.item_ids.is_int and _rows(n) == [(1, 5, 0), (1, 6, 1), (1, 5, 2), (2, 6, 0)]


# --- ids ----------------------------------------------------------------------------------------


def test_idmap_round_trip_and_unknown(tmp_path):
    m, inv = IdMap.fit(np.array(["b", "a", "b", "c"]))
    assert inv.tolist() == [1, 0, 1, 2] and m.decode(inv).tolist() == ["b", "a", "b", "c"]
    assert m.encode(["c", "zz"], unknown="ignore").tolist() == [2, -1]
    with pytest.raises(UnknownItemError, match="zz"):
        m.encode(["zz"])
    m.save(tmp_path / "m.npz")
    assert IdMap.load(tmp_path / "m.npz") == m
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(InvalidInputError, match="not a saved IdMap"):
        IdMap.load(tmp_path / "junk.npz")
    big, inv = IdMap.fit(np.array([-1, 2**63 - 1, -(2**63)]))
    assert big.decode(inv).tolist() == [-1, 2**63 - 1, -(2**63)] and big.decode([-1]).tolist() == [-1]


def test_negative_item_ids_are_refused_not_padding():
    with pytest.raises(InvalidInputError, match="non-negative"):
        Interactions([1, 1], [-1, 3], [1, 2])
    d = Interactions.from_ids([1, 1], [-1, 3], [1, 2])
    assert d.item.min() >= 0 and d.item_ids.decode(d.item).tolist() == [-1, 3]


# --- a real file: MovieLens-100k from the recbole wheel (skipped without the network) ----------


@pytest.fixture(scope="session")
def ml100k(tmp_path_factory):
    import subprocess
    import sys
    import zipfile

    d = tmp_path_factory.mktemp("recbole")
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(d), "recbole==1.2.1"],
                       check=True, timeout=180, capture_output=True)
    except (subprocess.SubprocessError, OSError):
        pytest.skip("recbole wheel not downloadable here")
    wheel = next(d.glob("recbole-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith("ml-100k/ml-100k.inter"))
        out = d / "ml-100k.inter"
        out.write_bytes(z.read(name))
    return out


def test_movielens_100k_loads_with_mapped_columns(ml100k):
    d = datasets.load_table(ml100k, user="user_id:token", item="item_id:token", timestamp="timestamp:float", show_progress=False)
    assert len(d) == 100_000 and d.n_users == 943 and d.n_items == 1682
    assert d.report.bad_rows_skipped == 0


def test_runner_smoke_on_movielens_100k(ml100k, tmp_path):
    from jtm_rs.experiments import Experiment

    d = datasets.load_table(ml100k, user="user_id:token", item="item_id:token", timestamp="timestamp:float", show_progress=False)
    res = Experiment(d, tmp_path, methods=["popularity", "itemcf"], M=50, show_progress=False, data_name="ml-100k").run()
    pop, cf = res["popularity"][0]["test"], res["itemcf"][0]["test"]
    assert pop["n_users"] > 80 and 0 < pop["recall"] < 1 and 0 < cf["recall"] < 1
    assert "| itemcf |" in (tmp_path / "table.md").read_text()


@pytest.mark.parametrize("low, high", [(0, 50), (-7, 3), (10**12, 10**12 + 900), (-(2**62), 2**62)])
def test_integer_ids_map_as_a_sort_would(low, high):
    """Ids in a narrow range go through a table over it, chunk by chunk; wide ones (hashed
    ids) through a sort: both give the distinct ids sorted and each row's place among them."""
    from jtm_rs.datasets._ids import finish_ids

    rng = np.random.default_rng(1)
    chunks = [rng.integers(low, high, size, dtype=np.int64) for size in (300, 0, 1, 777)]
    want_ids, want_inverse = np.unique(np.concatenate(chunks), return_inverse=True)
    ids, inverse = finish_ids(list(chunks))
    assert ids.dtype == np.int64 and inverse.dtype == np.int32
    assert np.array_equal(ids, want_ids) and np.array_equal(inverse, want_inverse.reshape(-1))
    empty_ids, empty_inverse = finish_ids([np.zeros(0, np.int64)])
    assert len(empty_ids) == len(empty_inverse) == 0

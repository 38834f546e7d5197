import gzip
import json

import polars as pl
import pytest

from seqrec.data.io import read_interactions
from seqrec.errors import DataError


def test_csv_custom_columns_keeps_ids_as_strings(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("uid,iid,ts\n007,42,3\n007,43,1\nb,42,2\n")
    df = read_interactions(p, user_col="uid", item_col="iid", time_col="ts")
    assert df.columns == ["user", "item", "timestamp"]
    assert df["user"].to_list() == ["007", "007", "b"]  # leading zero kept
    assert df["item"].dtype == pl.Utf8
    assert df["timestamp"].to_list() == [3, 1, 2]


@pytest.mark.parametrize("sep", ["\t", ";", "|"])
def test_any_separator_is_sniffed(tmp_path, sep):
    p = tmp_path / "log.txt.csv"
    p.write_text(sep.join(["user", "item", "timestamp"]) + "\n" + sep.join(["a", "x", "1"]) + "\n")
    assert read_interactions(p).height == 1


def test_tsv_and_gzip(tmp_path):
    p = tmp_path / "log.tsv.gz"
    p.write_bytes(gzip.compress(b"user\titem\ttimestamp\na\tx\t1\na\ty\t2\n"))
    assert read_interactions(p)["item"].to_list() == ["x", "y"]


def test_parquet(tmp_path):
    p = tmp_path / "log.parquet"
    pl.DataFrame({"user": [1, 2], "item": [10, 11], "timestamp": [1.5, 2.5]}).write_parquet(p)
    df = read_interactions(p)
    assert df["user"].to_list() == ["1", "2"] and df["timestamp"].to_list() == [1.5, 2.5]


def test_jsonl_with_iso_dates(tmp_path):
    p = tmp_path / "log.jsonl"
    rows = [{"u": "a", "i": "x", "t": "2020-01-01T00:00:00"}, {"u": "a", "i": "y", "t": "2020-01-02"}]
    p.write_text("\n".join(json.dumps(r) for r in rows))
    df = read_interactions(p, user_col="u", item_col="i", time_col="t")
    assert df["timestamp"].to_list() == [1577836800, 1577923200]


def test_movielens_formats(tmp_path):
    dat = tmp_path / "ratings.dat"
    dat.write_text("1::1193::5::978300760\n1::661::3::978302109\n")
    df = read_interactions(dat)
    assert df["item"].to_list() == ["1193", "661"] and df["timestamp"][0] == 978300760
    udata = tmp_path / "u.data"
    udata.write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    assert read_interactions(udata)["user"].to_list() == ["196", "186"]


def test_sequence_format_uses_positions_as_time(tmp_path):
    p = tmp_path / "Beauty.txt"
    p.write_text("1 5 6 7\n2 6 5\n")
    df = read_interactions(p)
    assert df.height == 5
    assert df.filter(pl.col("user") == "1")["timestamp"].to_list() == [0, 1, 2]


def test_real_movielens_100k_if_present():
    from pathlib import Path

    p = Path(__file__).resolve().parents[2] / "shared/data/ml-100k/u.data"
    if not p.exists():
        pytest.skip("shared data not present")
    df = read_interactions(p)
    assert df.height == 100_000 and df["user"].n_unique() == 943 and df["item"].n_unique() == 1682


@pytest.mark.parametrize(
    "content, match",
    [
        ("", "empty"),
        ("user,item,timestamp\n", "no rows"),
        ("user,product,timestamp\na,x,1\n", r"no column\(s\) \['item'\]"),
        ("user,item,timestamp\na,x,yesterday\n", "neither numbers nor ISO dates"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, content, match):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(DataError, match=match):
        read_interactions(p)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_interactions(tmp_path / "nope.csv")
    p = tmp_path / "log.weird"
    p.write_text("a")
    with pytest.raises(DataError, match="set data.format"):
        read_interactions(p)


def test_malformed_movielens_line(tmp_path):
    p = tmp_path / "ratings.dat"
    p.write_text("1::2::3::4\n1::2\n")
    with pytest.raises(DataError, match="first bad line is 2"):
        read_interactions(p)

"""Readers for interaction logs: CSV/TSV, Parquet, JSON lines, MovieLens and one-line-per-user files.

Every reader returns the Interactions contract: a polars frame with string `user` and `item`
columns (external ids kept exactly as written) and a numeric `timestamp`, in file order.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import polars as pl

from seqrec.errors import DataError

FORMATS = ("csv", "tsv", "parquet", "jsonl", "ml-dat", "ml-100k", "sequences")


def detect_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(".parquet") or name.endswith(".pq"):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name == "u.data":
        return "ml-100k"
    if name.endswith(".dat"):
        return "ml-dat"
    if name.endswith(".tsv"):
        return "tsv"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".txt"):
        return "sequences"
    raise DataError(
        f"cannot tell the format of {path.name} from its name; set data.format (or --format) to one of "
        f"{', '.join(FORMATS)}"
    )


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path} looks gzipped but cannot be decompressed ({e}); is the file complete?") from None
    return raw


def read_interactions(
    path: str | Path,
    format: str = "auto",
    user_col: str = "user",
    item_col: str = "item",
    time_col: str = "timestamp",
    separator: str | None = None,
) -> pl.DataFrame:
    """Read a log into a frame with columns user (str), item (str), timestamp (numeric).

    Column names are the user's (`user_col`, …); MovieLens and sequence formats have fixed layouts
    and ignore them. Timestamps may be integers, floats or ISO dates (converted to epoch seconds).
    In the one-line-per-user format the timestamp is the position in the line.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"log file {path} does not exist; check the path (or --data-dir)")
    if path.is_dir():
        raise DataError(f"{path} is a directory; point to the log file itself")
    fmt = detect_format(path) if format == "auto" else format
    if fmt not in FORMATS:
        raise DataError(f"unknown format '{format}'; use one of auto, {', '.join(FORMATS)}")
    if fmt == "parquet":
        try:
            df = pl.read_parquet(path)
        except Exception as e:  # polars raises several types for corrupt files
            raise DataError(f"{path} is not a readable Parquet file: {e}") from None
        return _standardise(df, path, user_col, item_col, time_col)

    raw = _read_bytes(path)
    if not raw.strip():
        raise DataError(f"{path} is empty; a log needs at least one interaction row")
    if fmt == "sequences":
        return _read_sequences(raw, path)
    if fmt in ("ml-dat", "ml-100k"):
        return _read_movielens(raw, path, fmt)
    if fmt == "jsonl":
        try:
            df = pl.read_ndjson(io.BytesIO(raw), infer_schema_length=None)
        except Exception as e:
            raise DataError(f"{path} is not valid JSON lines (one object per line): {e}") from None
        return _standardise(df, path, user_col, item_col, time_col)
    sep = separator or ("\t" if fmt == "tsv" else _sniff_separator(raw))
    if len(sep) != 1:
        raise DataError(f"separator {sep!r} must be one character (use format 'ml-dat' for '::' files)")
    try:
        df = pl.read_csv(
            io.BytesIO(raw),
            separator=sep,
            schema_overrides={user_col: pl.Utf8, item_col: pl.Utf8},
            infer_schema_length=10000,
        )
    except pl.exceptions.ComputeError as e:
        raise DataError(f"{path}: a row cannot be parsed ({str(e).splitlines()[0]}); check the separator "
                        f"(got {sep!r}) and that every row has the same number of fields") from None
    return _standardise(df, path, user_col, item_col, time_col)


def _sniff_separator(raw: bytes) -> str:
    head = raw[:4096].decode("utf-8", errors="replace").splitlines()[0]
    counts = {s: head.count(s) for s in (",", "\t", ";", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _standardise(df: pl.DataFrame, path: Path, user_col: str, item_col: str, time_col: str) -> pl.DataFrame:
    if df.height == 0:
        raise DataError(f"{path} has a header but no rows; a log needs at least one interaction")
    missing = [c for c in (user_col, item_col, time_col) if c not in df.columns]
    if missing:
        raise DataError(
            f"{path} has no column(s) {missing}; its columns are {df.columns}. "
            "Name yours with --user-col/--item-col/--time-col (data.user_col/item_col/time_col in a config)"
        )
    out = df.select(
        pl.col(user_col).cast(pl.Utf8).alias("user"),
        pl.col(item_col).cast(pl.Utf8).alias("item"),
        pl.col(time_col).alias("timestamp"),
    )
    return out.with_columns(parse_timestamps(out["timestamp"], path, time_col))


def parse_timestamps(col: pl.Series, path: Path | str = "log", name: str = "timestamp") -> pl.Series:
    """Numbers stay numbers; strings are parsed as numbers, else as ISO dates → epoch seconds."""
    if col.dtype.is_numeric():
        return col.cast(pl.Float64 if col.dtype.is_float() else pl.Int64).alias("timestamp")
    if col.dtype in (pl.Datetime, pl.Date):
        return (col.cast(pl.Datetime("us")).dt.epoch("s")).alias("timestamp")
    s = col.cast(pl.Utf8)
    as_num = s.cast(pl.Float64, strict=False)
    if as_num.null_count() == s.null_count():
        return as_num.alias("timestamp")
    parsed = s.str.to_datetime(strict=False, time_zone="UTC")
    bad = parsed.is_null() & s.is_not_null()
    if bad.any():
        idx = int(bad.arg_max())
        raise DataError(
            f"{path}: {int(bad.sum())} value(s) in column '{name}' are neither numbers nor ISO dates; "
            f"the first is {s[idx]!r} at data row {idx + 1}. Fix those rows or point --time-col at another column"
        )
    return parsed.dt.epoch("s").alias("timestamp")


def _read_movielens(raw: bytes, path: Path, fmt: str) -> pl.DataFrame:
    text = raw.decode("latin-1")
    sep = "::" if fmt == "ml-dat" else "\t"
    rows = [line.split(sep) for line in text.splitlines() if line.strip()]
    bad = [i for i, r in enumerate(rows) if len(r) < 4]
    if bad:
        raise DataError(
            f"{path}: {len(bad)} line(s) do not have user{sep}item{sep}rating{sep}timestamp; first bad line is "
            f"{bad[0] + 1}: {text.splitlines()[bad[0]][:80]!r}"
        )
    df = pl.DataFrame({"user": [r[0] for r in rows], "item": [r[1] for r in rows]})
    return df.with_columns(parse_timestamps(pl.Series([r[3].strip() for r in rows]), path))


def _read_sequences(raw: bytes, path: Path) -> pl.DataFrame:
    users: list[str] = []
    items: list[str] = []
    positions: list[int] = []
    for line in raw.decode("utf-8").splitlines():
        parts = line.split()
        if not parts:
            continue
        user, seq = parts[0], parts[1:]
        users.extend([user] * len(seq))
        items.extend(seq)
        positions.extend(range(len(seq)))
    if not items:
        raise DataError(f"{path} has no 'user item1 item2 ...' lines with items")
    return pl.DataFrame({"user": users, "item": items, "timestamp": positions},
                        schema={"user": pl.Utf8, "item": pl.Utf8, "timestamp": pl.Int64})

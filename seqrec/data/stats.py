"""`seqrec data stats`: what a log holds before any filtering."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl

from seqrec.data.io import read_interactions


def log_stats(path, **read_kwargs) -> str:
    df = read_interactions(path, **read_kwargs)
    rows = df.height
    nulls = rows - df.drop_nulls().height
    df = df.drop_nulls()
    users, items = df["user"].n_unique(), df["item"].n_unique()
    dups = df.height - df.unique(["user", "item", "timestamp"]).height
    repeat_pairs = df.height - df.unique(["user", "item"]).height
    lengths = df.group_by("user").len()["len"].to_numpy()
    item_counts = df.group_by("item").len()["len"].to_numpy()
    ts = df["timestamp"].cast(pl.Float64)
    lines = [
        f"file:                {path}",
        f"rows:                {rows:,}" + (f"  ({nulls:,} with an empty user/item/timestamp)" if nulls else ""),
        f"users:               {users:,}",
        f"items:               {items:,}",
        f"density:             {df.height / max(1, users * items):.6f}",
        f"exact duplicate rows: {dups:,}",
        f"repeated (user,item): {repeat_pairs:,}",
        f"history length:      min {lengths.min()}  median {int(np.median(lengths))}  mean {lengths.mean():.1f}  "
        f"max {lengths.max()}",
        f"users with < 3 rows: {(lengths < 3).sum():,} (leave-one-out needs 3)",
        f"items with < 5 rows: {(item_counts < 5).sum():,}",
        f"timestamps:          {_fmt_time(ts.min())} .. {_fmt_time(ts.max())}",
    ]
    return "\n".join(lines)


def _fmt_time(t: float) -> str:
    if t is None:
        return "-"
    if t > 10**8:  # looks like epoch seconds
        return f"{t:.0f} ({datetime.fromtimestamp(t, tz=UTC):%Y-%m-%d %H:%M} UTC)"
    return f"{t:g}"

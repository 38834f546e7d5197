"""Filters from a raw log to clean chronological interactions, each step counted in a summary."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from seqrec.errors import DataError


@dataclass
class PreprocessSummary:
    """What each step removed, so nothing disappears without being counted."""

    steps: list[tuple[str, int, int, int]] = field(default_factory=list)  # (step, rows, users, items) after

    def record(self, step: str, df: pl.DataFrame) -> None:
        self.steps.append((step, df.height, df["user"].n_unique(), df["item"].n_unique()))

    def format(self) -> str:
        lines = [f"{'step':<42}{'rows':>12}{'removed':>10}{'users':>10}{'items':>10}"]
        prev = None
        for step, rows, users, items in self.steps:
            removed = "" if prev is None else str(prev - rows)
            lines.append(f"{step:<42}{rows:>12,}{removed:>10}{users:>10,}{items:>10,}")
            prev = rows
        return "\n".join(lines)

    def to_dict(self) -> list[dict]:
        return [{"step": s, "rows": r, "users": u, "items": i} for s, r, u, i in self.steps]


def stable_sort(df: pl.DataFrame) -> pl.DataFrame:
    """Sort by (user, timestamp); equal timestamps keep the file's order."""
    return df.sort(["user", "timestamp"], maintain_order=True)


def drop_consecutive_duplicates(df: pl.DataFrame) -> pl.DataFrame:
    """Remove an interaction that repeats the user's previous item (a double click, a re-rating)."""
    prev_item = pl.col("item").shift(1).over("user")
    return df.filter(prev_item.is_null() | (pl.col("item") != prev_item))


def k_core(df: pl.DataFrame, min_user: int, min_item: int) -> pl.DataFrame:
    """Iteratively drop users and items with too few interactions until both limits hold."""
    if min_user <= 1 and min_item <= 1:
        return df
    while True:
        before = df.height
        if min_item > 1:
            df = df.filter(pl.len().over("item") >= min_item)
        if min_user > 1:
            df = df.filter(pl.len().over("user") >= min_user)
        if df.height == before:
            return df


def preprocess(
    df: pl.DataFrame,
    *,
    drop_duplicates: bool = True,
    dedupe_consecutive: bool = False,
    min_user_interactions: int = 0,
    min_item_interactions: int = 0,
    min_history: int = 0,
) -> tuple[pl.DataFrame, PreprocessSummary]:
    summary = PreprocessSummary()
    summary.record("read", df)
    df = df.drop_nulls(["user", "item", "timestamp"])
    if df["timestamp"].dtype.is_float():
        df = df.filter(df["timestamp"].is_not_nan())
    summary.record("drop rows with an empty user/item/timestamp", df)
    if drop_duplicates:
        df = df.unique(["user", "item", "timestamp"], keep="first", maintain_order=True)
        summary.record("drop exact duplicate rows", df)
    df = stable_sort(df)
    if dedupe_consecutive:
        df = drop_consecutive_duplicates(df)
        summary.record("drop consecutive repeats of an item", df)
    if min_user_interactions > 1 or min_item_interactions > 1:
        df = k_core(df, min_user_interactions, min_item_interactions)
        summary.record(f"k-core (users>={min_user_interactions}, items>={min_item_interactions})", df)
    if min_history > 1:
        df = df.filter(pl.len().over("user") >= min_history)
        summary.record(f"users with >= {min_history} interactions", df)
    if df.height == 0:
        raise DataError(
            "no interactions are left after preprocessing:\n" + summary.format()
            + "\nlower the k-core limits (data.min_user_interactions / min_item_interactions / min_history)"
        )
    return df, summary

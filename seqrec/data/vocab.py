"""External ⇄ internal ids. Internal item ids are 1..N (0 is padding); users keep their order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from seqrec.errors import ArtifactError


class Vocab:
    """A bijection between external ids (strings, as written in the log) and dense internal ids."""

    def __init__(self, items: list[str]):
        self.items = list(items)  # internal id i+1 ↔ self.items[i]
        self.index = {item: i + 1 for i, item in enumerate(self.items)}
        if len(self.index) != len(self.items):
            raise ValueError("item vocabulary has duplicate ids")

    @property
    def num_items(self) -> int:
        return len(self.items)

    @classmethod
    def from_interactions(cls, df: pl.DataFrame) -> Vocab:
        """Items numbered by first appearance in the (sorted) log: deterministic for a given input."""
        return cls(df["item"].unique(maintain_order=True).to_list())

    def encode(self, items: list[str]) -> tuple[list[int], list[str]]:
        """Internal ids of the known items, and the unknown ones (reported, never silently lost)."""
        known, unknown = [], []
        for it in items:
            idx = self.index.get(str(it))
            if idx is None:
                unknown.append(str(it))
            else:
                known.append(idx)
        return known, unknown

    def decode(self, ids) -> list[str]:
        return [self.items[int(i) - 1] for i in ids]

    def save(self, path: Path) -> None:
        pl.DataFrame({"internal_id": np.arange(1, len(self.items) + 1), "item": self.items}).write_parquet(path)

    @classmethod
    def load(cls, path: Path) -> Vocab:
        if not path.exists():
            raise ArtifactError(f"{path} is missing; the run directory is incomplete (re-run `seqrec train`)")
        df = pl.read_parquet(path).sort("internal_id")
        ids = df["internal_id"].to_numpy()
        if not np.array_equal(ids, np.arange(1, len(ids) + 1)):
            raise ArtifactError(f"{path}: internal ids are not 1..N; the vocab file is corrupt")
        return cls(df["item"].to_list())


@dataclass
class Sequences:
    """Per-user chronological sequences of internal item ids, stored flat with offsets."""

    users: list[str]
    items: np.ndarray  # int64, all users concatenated
    times: np.ndarray  # float64, aligned with items
    offsets: np.ndarray  # int64, len(users) + 1

    def __len__(self) -> int:
        return len(self.users)

    def item_seq(self, u: int) -> np.ndarray:
        return self.items[self.offsets[u] : self.offsets[u + 1]]

    def time_seq(self, u: int) -> np.ndarray:
        return self.times[self.offsets[u] : self.offsets[u + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def build_sequences(df: pl.DataFrame, vocab: Vocab) -> Sequences:
    """Group a stably-sorted log into sequences, keeping the order of rows within a user."""
    mapping = pl.DataFrame({"item": vocab.items, "iid": np.arange(1, vocab.num_items + 1, dtype=np.int64)})
    df = df.join(mapping, on="item", how="left", maintain_order="left")
    if df["iid"].null_count():
        raise ValueError("log has items outside the vocabulary")
    users = df["user"].to_numpy()
    change = np.flatnonzero(users[1:] != users[:-1]) + 1 if len(users) else np.array([], dtype=np.int64)
    starts = np.concatenate([[0], change]).astype(np.int64)
    offsets = np.concatenate([starts, [len(users)]]).astype(np.int64)
    user_ids = [str(users[s]) for s in starts]
    if len(set(user_ids)) != len(user_ids):
        raise ValueError("log must be sorted by user before building sequences (use preprocess)")
    return Sequences(
        users=user_ids,
        items=df["iid"].to_numpy().astype(np.int64),
        times=df["timestamp"].cast(pl.Float64).to_numpy(),
        offsets=offsets,
    )

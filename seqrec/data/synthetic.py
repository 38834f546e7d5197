"""Synthetic logs with known sequential structure, for tests and the quickstart.

Each item has a few likely successors; users walk this chain with some random jumps, so a
sequence model can predict the next item far better than popularity can.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl


def markov_log(num_users: int = 500, num_items: int = 200, mean_length: int = 20, successors: int = 3,
               jump_prob: float = 0.1, seed: int = 0, start_time: int = 1_600_000_000) -> pl.DataFrame:
    """A log (user, item, timestamp) from a sparse random Markov chain over items."""
    rng = np.random.default_rng(seed)
    succ = rng.integers(0, num_items, size=(num_items, successors))
    popularity = rng.zipf(1.5, size=num_items).astype(float)
    popularity /= popularity.sum()
    users, items, times = [], [], []
    for u in range(num_users):
        t = start_time + int(rng.integers(0, 30 * 86400))  # users overlap in time
        length = max(4, int(rng.poisson(mean_length)))
        cur = int(rng.choice(num_items, p=popularity))
        for _ in range(length):
            users.append(f"u{u}")
            items.append(f"i{cur}")
            t += int(rng.integers(60, 86400))
            times.append(t)
            if rng.random() < jump_prob:
                cur = int(rng.choice(num_items, p=popularity))
            else:
                cur = int(succ[cur, rng.integers(0, successors)])
    return pl.DataFrame({"user": users, "item": items, "timestamp": times})


def write_markov_log(path: str | Path, **kwargs) -> Path:
    """Write a synthetic log as CSV (or Parquet by extension); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df = markov_log(**kwargs)
    if path.suffix == ".parquet":
        df.write_parquet(path)
    else:
        df.write_csv(path)
    return path

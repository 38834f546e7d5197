"""Batch inference: top-k for many users, streamed to Parquet or CSV (schema user, rank, item, score)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm import tqdm

from seqrec.errors import SeqrecError
from seqrec.serve.engine import Engine

SCHEMA = pa.schema([("user", pa.string()), ("rank", pa.int32()), ("item", pa.string()), ("score", pa.float32())])


def parse_users(spec: str) -> list[str] | None:
    """'all' → None (every user); an existing file → one id per line; else a comma list."""
    if spec == "all":
        return None
    path = Path(spec)
    if path.is_file():
        users = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    else:
        users = [u.strip() for u in spec.split(",") if u.strip()]
    if not users:
        raise SeqrecError(f"--users {spec!r} names no users; pass 'all', a comma list, or a file with one id per line")
    return users


def _writer(out: Path):
    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise SeqrecError(f"--out {out}: the extension decides the format; use .parquet or .csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        return pq.ParquetWriter(out, SCHEMA)
    return pacsv.CSVWriter(out, SCHEMA)


def predict(engine: Engine, out: str | Path, users: Sequence[str] | None = None, k: int = 100,
            batch_size: int = 512, exclude_seen: bool = True, skip_unknown: bool = False,
            progress: bool = True) -> int:
    """Write top-k rows for `users` (default: every user in the store); returns rows written.

    Users are processed in order of history length so each batch pads little.
    """
    engine.check_k(k)
    if batch_size < 1:
        raise SeqrecError(f"--batch-size must be at least 1, got {batch_size}")
    out = Path(out)
    ids = list(users) if users is not None else engine.store.users()
    histories, names, missing = [], [], []
    for user in ids:
        h = engine.store.get(user, engine.seen_limit)
        if h is None:
            missing.append(user)
            continue
        known, _ = engine.vocab.encode(h.items)
        if not known:
            missing.append(user)
            continue
        histories.append(np.asarray(known, np.int64))
        names.append(user)
    if missing and not skip_unknown:
        raise SeqrecError(f"{len(missing)} user(s) have no known history, e.g. {missing[:5]}; "
                          "check the ids, or pass --skip-unknown to leave them out")
    order = np.argsort([min(len(h), engine.max_len) for h in histories], kind="stable")
    writer = _writer(out)
    rows = 0
    try:
        bar = tqdm(total=len(order), unit="user", disable=not progress, desc="predict")
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            hists = [histories[i] for i in chunk]
            excludes = [np.unique(h) for h in hists] if exclude_seen else None
            hits = engine.topk_ids(hists, k, excludes)
            user_col, rank_col, item_col, score_col = [], [], [], []
            for i, (item_ids, scores) in zip(chunk, hits, strict=True):
                n = len(item_ids)
                user_col.extend([names[i]] * n)
                rank_col.append(np.arange(1, n + 1, dtype=np.int32))
                item_col.extend(engine.vocab.decode(item_ids))
                score_col.append(scores.astype(np.float32))
            if user_col:
                writer.write_table(pa.table({"user": user_col, "rank": np.concatenate(rank_col), "item": item_col,
                                             "score": np.concatenate(score_col)}, schema=SCHEMA))
                rows += len(user_col)
            bar.update(len(chunk))
        bar.close()
    finally:
        writer.close()
    return rows

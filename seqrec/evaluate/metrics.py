"""Ranking metrics for one target per user, from the 1-based rank of that target.

rank = inf (or anything > K) means the target is not in the top K.
HR@K (= Recall@K with one target), NDCG@K = 1/log2(rank+1), MRR@K = 1/rank.
"""

from __future__ import annotations

import numpy as np


def metrics_from_ranks(ranks: np.ndarray, ks: list[int], prefix: str = "") -> dict[str, float]:
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, float] = {}
    if len(ranks) == 0:
        return out
    for k in ks:
        hit = ranks <= k
        out[f"{prefix}hr@{k}"] = float(hit.mean())
        out[f"{prefix}ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0).mean())
        out[f"{prefix}mrr@{k}"] = float(np.where(hit, 1.0 / ranks, 0.0).mean())
    return out


def coverage(topk: np.ndarray, ks: list[int], num_items: int, prefix: str = "") -> dict[str, float]:
    """Share of the catalogue that appears in at least one user's top K."""
    return {f"{prefix}coverage@{k}": float(len(np.unique(topk[:, :k])) / num_items) for k in ks}

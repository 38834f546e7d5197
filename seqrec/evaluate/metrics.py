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
        for name in ("hr", "ndcg", "mrr"):
            out[f"{prefix}{name}@{k}"] = float(per_user(ranks, f"{name}@{k}").mean())
    return out


def coverage(topk: np.ndarray, ks: list[int], num_items: int, prefix: str = "") -> dict[str, float]:
    """Share of the catalogue that appears in at least one user's top K."""
    return {f"{prefix}coverage@{k}": float(len(np.unique(topk[:, :k])) / num_items) for k in ks}


def per_user(ranks: np.ndarray, metric: str) -> np.ndarray:
    """One user's value of `metric` ("hr@10", "ndcg@10", "mrr@10"): the terms whose mean is the metric."""
    name, _, k_text = metric.partition("@")
    if name not in ("hr", "ndcg", "mrr") or not k_text.isdigit():
        raise ValueError(f"unknown metric {metric!r}; use hr@K, ndcg@K or mrr@K")
    ranks = np.asarray(ranks, dtype=np.float64)
    hit = ranks <= int(k_text)
    if name == "hr":
        return hit.astype(np.float64)
    with np.errstate(divide="ignore"):
        value = 1.0 / np.log2(ranks + 1.0) if name == "ndcg" else 1.0 / ranks
    return np.where(hit, value, 0.0)


def standard_errors(ranks: np.ndarray, ks: list[int], prefix: str = "") -> dict[str, float]:
    """Standard error of each mean metric over users: how far another sample of users could move it."""
    n = len(ranks)
    if n < 2:
        return {}
    return {f"{prefix}{m}@{k}": float(per_user(ranks, f"{m}@{k}").std(ddof=1) / np.sqrt(n))
            for k in ks for m in ("hr", "ndcg", "mrr")}

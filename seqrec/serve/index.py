"""Top-k retrieval over the item table: exact (one matrix product) or a faiss ANN index.

ANN results are filtered after the search (padding, seen and excluded items): the index is asked
for k + |excluded| candidates, and a row that still has fewer than k left after filtering is
answered by the exact index, so filtering never silently shortens a list.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch

from seqrec.errors import SeqrecError

Hits = list[tuple[np.ndarray, np.ndarray]]  # per query: (internal item ids, scores), best first

INDEX_KINDS = ("auto", "exact", "hnsw", "ivf")


class ItemIndex(ABC):
    """Inner-product top-k over items 1..N (row 0 of the table is padding, never returned)."""

    kind: str = "?"
    fallbacks: int = 0  # ANN rows answered exactly because filtering left fewer than k

    def __init__(self, table: np.ndarray):
        self.table = np.ascontiguousarray(table, dtype=np.float32)
        self.num_items = self.table.shape[0] - 1

    @abstractmethod
    def search(self, queries: np.ndarray, k: int, excludes: list[np.ndarray] | None = None) -> Hits: ...


class ExactIndex(ItemIndex):
    """Brute force: exact, and fastest below ~100k items on a CPU."""

    kind = "exact"

    def __init__(self, table: np.ndarray):
        super().__init__(table)
        self._t = torch.from_numpy(self.table)

    def search(self, queries: np.ndarray, k: int, excludes: list[np.ndarray] | None = None) -> Hits:
        scores = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)) @ self._t.T
        return masked_topk(scores, k, excludes)


def masked_topk(scores: torch.Tensor, k: int, excludes: list[np.ndarray] | None) -> Hits:
    """Top-k of a (B, N+1) score matrix with padding and each row's excluded ids set to -inf."""
    scores = scores.float().clone() if scores.requires_grad else scores.float()
    scores[:, 0] = float("-inf")
    if excludes:
        rows = [np.full(len(e), i, dtype=np.int64) for i, e in enumerate(excludes) if len(e)]
        if rows:
            cols = np.concatenate([np.asarray(e, dtype=np.int64) for e in excludes if len(e)])
            scores[torch.from_numpy(np.concatenate(rows)), torch.from_numpy(cols)] = float("-inf")
    top = torch.topk(scores, min(k, scores.shape[1] - 1), dim=1)
    values, indices = top.values.numpy(), top.indices.numpy()
    out = []
    for v, i in zip(values, indices, strict=True):
        keep = np.isfinite(v)
        out.append((i[keep].astype(np.int64), v[keep].astype(np.float32)))
    return out


class FaissIndex(ItemIndex):
    """HNSW (no training, best recall per ms) or IVF-flat (fast to build) with inner product."""

    def __init__(self, table: np.ndarray, kind: str = "hnsw", hnsw_m: int = 32, ef_construction: int = 80,
                 ef_search: int = 128, nlist: int = 0, nprobe: int = 32, index=None):
        super().__init__(table)
        import faiss

        self.faiss = faiss
        self.kind = kind
        self.exact = ExactIndex(self.table)
        d = self.table.shape[1]
        items = self.table[1:]
        if index is not None:
            self.index = index
        elif kind == "hnsw":
            self.index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = ef_construction
            self.index.add(items)
        elif kind == "ivf":
            nlist = nlist or max(1, int(4 * np.sqrt(len(items))))
            quantizer = faiss.IndexFlatIP(d)
            self.index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(0)
            sample = items[rng.choice(len(items), min(len(items), 64 * nlist), replace=False)]
            self.index.train(sample)
            self.index.add(items)
        else:
            raise SeqrecError(f"unknown faiss index kind {kind!r}; use hnsw or ivf")
        self.ef_search = ef_search
        self.nprobe = nprobe
        if self.index.ntotal != len(items):
            raise SeqrecError(f"the cached index has {self.index.ntotal} items, the model {len(items)}; "
                              "delete the index cache (--index-cache) and restart")

    def _params(self, fetch: int):
        """Per-call search parameters: thread-safe, unlike setting efSearch/nprobe on the index."""
        if self.kind == "hnsw":
            return self.faiss.SearchParametersHNSW(efSearch=max(self.ef_search, fetch))
        return self.faiss.SearchParametersIVF(nprobe=self.nprobe)

    def search(self, queries: np.ndarray, k: int, excludes: list[np.ndarray] | None = None) -> Hits:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        extra = max((len(e) for e in excludes), default=0) if excludes else 0
        fetch = min(self.num_items, k + extra)
        scores, ids = self.index.search(queries, fetch, params=self._params(fetch))
        ids = ids + 1  # faiss row r is internal item r + 1; -1 (no result) becomes 0 = padding
        out: Hits = []
        redo = []
        for row in range(len(queries)):
            keep = ids[row] > 0
            if excludes is not None and len(excludes[row]):
                keep &= ~np.isin(ids[row], excludes[row])
            r_ids, r_scores = ids[row][keep][:k], scores[row][keep][:k]
            available = self.num_items - (len(np.unique(excludes[row])) if excludes is not None else 0)
            if len(r_ids) < min(k, available):
                redo.append(row)
            out.append((r_ids.astype(np.int64), r_scores.astype(np.float32)))
        if redo:
            self.fallbacks += len(redo)
            exact = self.exact.search(queries[redo], k, [excludes[r] for r in redo] if excludes else None)
            for r, hit in zip(redo, exact, strict=True):
                out[r] = hit
        return out

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        self.faiss.write_index(self.index, str(tmp))
        os.replace(tmp, path)


def build_index(table: np.ndarray, kind: str = "auto", ann_threshold: int = 100_000,
                cache_path: Path | None = None, log=print, **params) -> ItemIndex:
    """Exact below `ann_threshold` items with kind 'auto', else faiss; a built faiss index is
    cached at `cache_path` (building HNSW over 1M items takes minutes)."""
    if kind not in INDEX_KINDS:
        raise SeqrecError(f"--index {kind!r}: use one of {', '.join(INDEX_KINDS)}")
    n = table.shape[0] - 1
    if kind == "auto":
        kind = "exact" if n < ann_threshold else "hnsw"
    if kind == "exact":
        return ExactIndex(table)
    if cache_path is not None and cache_path.exists():
        import faiss

        log(f"loading the {kind} index from {cache_path}")
        return FaissIndex(table, kind, index=faiss.read_index(str(cache_path)), **params)
    start = time.perf_counter()
    log(f"building a {kind} index over {n:,} items …")
    index = FaissIndex(table, kind, **params)
    log(f"built the {kind} index in {time.perf_counter() - start:.1f} s")
    if cache_path is not None:
        index.save(cache_path)
    return index


def recall_at_k(index: ItemIndex, queries: np.ndarray, k: int = 10,
                excludes: list[np.ndarray] | None = None) -> float:
    """Mean |ANN top-k ∩ exact top-k| / k over the queries: the price of approximation."""
    exact = ExactIndex(index.table).search(queries, k, excludes)
    approx = index.search(queries, k, excludes)
    hits = [len(np.intersect1d(a[0], e[0])) / max(1, len(e[0])) for a, e in zip(approx, exact, strict=True)]
    return float(np.mean(hits)) if hits else float("nan")

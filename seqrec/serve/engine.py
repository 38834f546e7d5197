"""The serving engine: a loaded run + a history store + an item index, answering top-k requests.

One batched model call per request batch, in eval mode under `torch.inference_mode()`. Models
that score by a dot product with `item_embeddings()` go through the index (exact or ANN); models
that override `score` (count baselines, temperature-scaled scores) are scored exactly by their own
`score`; models with their own `topk` (generative decoding) are asked for it directly.
"""

from __future__ import annotations

import hashlib
import inspect
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from seqrec.artifact import LoadedRun
from seqrec.data.batches import history_batch, left_pad
from seqrec.errors import SeqrecError, UnknownItemError, UnknownUserError
from seqrec.models.base import SequentialRecommender
from seqrec.serve.index import ExactIndex, Hits, ItemIndex, build_index, masked_topk, recall_at_k
from seqrec.serve.store import HistoryStore


@dataclass
class Query:
    user: str | None = None
    history: Sequence[str] | None = None
    exclude: Sequence[str] = ()
    exclude_seen: bool = True


@dataclass
class Result:
    items: list[str]
    scores: list[float]
    unknown_items: list[str] = field(default_factory=list)
    user: str | None = None
    history_length: int = 0


def scores_by_dot_product(model: SequentialRecommender) -> bool:
    """True when `score` is the contract's user vector · item table, so an index can replace it."""
    if hasattr(model, "topk") or type(model).score is not SequentialRecommender.score:
        return False
    try:
        model.item_embeddings()
    except NotImplementedError:
        return False
    return True


class Engine:
    def __init__(self, run: LoadedRun, store: HistoryStore, index: str = "auto", ann_threshold: int = 100_000,
                 index_cache: Path | None = None, seen_limit: int | None = None, log=print, **index_params):
        self.run = run
        self.model = run.model.eval()
        self.vocab = run.vocab
        self.store = store
        self.max_len = self.model.max_len
        self.seen_limit = seen_limit
        self.dot_product = scores_by_dot_product(self.model)
        self.index: ItemIndex | None = None
        self.recall: float | None = None
        self._normed: torch.Tensor | None = None
        if self.dot_product:
            with torch.inference_mode():
                table = self.model.item_embeddings().detach().float().cpu().numpy()
            self.index = build_index(table, index, ann_threshold, _cache_file(index_cache, run.path, index, index_params),
                                     log=log, **index_params)
        elif index not in ("auto", "exact"):
            raise SeqrecError(f"model '{run.config.model_name}' does not score by item embeddings, so it cannot use "
                              f"--index {index}; use --index exact (or auto)")

    @property
    def index_kind(self) -> str:
        return self.index.kind if self.index is not None else "model-score"

    @property
    def num_items(self) -> int:
        return self.vocab.num_items

    def check_k(self, k: int) -> None:
        if k < 1:
            raise SeqrecError(f"k must be at least 1, got {k}")
        if k > self.num_items:
            raise SeqrecError(f"k = {k} is larger than the catalogue ({self.num_items} items); ask for at most that")

    # --- requests -> internal ids ---------------------------------------------------------

    def resolve(self, q: Query) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(internal ids, timestamps, unknown history items) for one query; raises for bad input."""
        if q.user is None and not q.history:
            raise SeqrecError("give a known user id or a non-empty history of item ids")
        items: list[str] = []
        times: list[float] = []
        if q.user is not None:
            stored = self.store.get(q.user, self.seen_limit)
            if stored is None:
                raise UnknownUserError(f"user {q.user!r} has no history here; send their items as \"history\", "
                                       "or POST /events for them first")
            items, times = stored.items, stored.timestamps
        unknown: list[str] = []
        if q.history:
            now = time.time()
            items = list(items) + [str(i) for i in q.history]
            times = list(times) + [now] * len(q.history)
        ids, times_kept, stored_unknown = [], [], []
        index = self.vocab.index
        n_stored = len(items) - (len(q.history) if q.history else 0)
        for pos, (it, ts) in enumerate(zip(items, times, strict=True)):
            iid = index.get(it)
            if iid is None:
                (stored_unknown if pos < n_stored else unknown).append(it)
            else:
                ids.append(iid)
                times_kept.append(ts)
        if not ids:
            raise UnknownItemError(
                f"none of the history items are in this model's catalogue (unknown: {unknown[:5]}"
                f"{'…' if len(unknown) > 5 else ''}); recommendations need at least one known item")
        # stored events for items this model has never seen are reported too, never silently dropped
        return np.asarray(ids, np.int64), np.asarray(times_kept, np.float64), list(dict.fromkeys(stored_unknown + unknown))

    # --- scoring ----------------------------------------------------------------------------

    @torch.inference_mode()
    def topk_ids(self, histories: list[np.ndarray], k: int, excludes: list[np.ndarray] | None = None,
                 times: list[np.ndarray] | None = None) -> Hits:
        """Top-k internal ids for internal-id histories, one model call for the whole batch."""
        batch = history_batch(histories, self.max_len, times)
        if self.index is not None:
            user = self.model.user_representation(batch).float().numpy()
            return self.index.search(user, k, excludes)
        if hasattr(self.model, "topk"):
            extra = max((len(e) for e in excludes), default=0) if excludes else 0
            if "exclude" in inspect.signature(self.model.topk).parameters:
                # the model filters itself (and may default to excluding the history): pass ours, 0 = none
                pad = torch.from_numpy(left_pad(excludes or [np.empty(0, np.int64)] * len(histories), max(1, extra)))
                ids, scores = self.model.topk(batch, k, exclude=pad)
            else:
                ids, scores = self.model.topk(batch, min(self.num_items, k + extra + 1))
            out: Hits = []
            for row, (i, s) in enumerate(zip(ids.numpy(), scores.float().numpy(), strict=True)):
                keep = (i > 0) & np.isfinite(s)  # -inf: the model ran out of allowed items
                if excludes is not None:
                    keep &= ~np.isin(i, excludes[row])
                out.append((i[keep][:k].astype(np.int64), s[keep][:k].astype(np.float32)))
            return out
        return masked_topk(self.model.score(batch), k, excludes)

    def recommend(self, queries: list[Query], k: int) -> list[Result | SeqrecError]:
        """Answers in request order; a query with bad input gets its error, the others still run."""
        self.check_k(k)
        resolved: list[tuple[np.ndarray, np.ndarray, list[str]] | SeqrecError] = []
        for q in queries:
            try:
                resolved.append(self.resolve(q))
            except SeqrecError as e:
                resolved.append(e)
        good = [i for i, r in enumerate(resolved) if not isinstance(r, SeqrecError)]
        out: list[Result | SeqrecError] = list(resolved)  # errors stay in place
        if not good:
            return out
        hists, tss, excludes = [], [], []
        for i in good:
            ids, ts, _ = resolved[i]
            q = queries[i]
            hists.append(ids)
            tss.append(ts)
            extra = np.asarray(self.vocab.encode([str(x) for x in q.exclude])[0], np.int64) if q.exclude else None
            parts = [p for p in ((ids if q.exclude_seen else None), extra) if p is not None]
            excludes.append(np.unique(np.concatenate(parts)) if parts else np.empty(0, np.int64))
        hits = self.topk_ids(hists, k, excludes, tss)
        for i, (ids, scores) in zip(good, hits, strict=True):
            out[i] = Result(self.vocab.decode(ids), scores.tolist(), resolved[i][2], queries[i].user, len(resolved[i][0]))
        return out

    @torch.inference_mode()
    def similar(self, item: str, k: int) -> Result:
        """Nearest items by cosine similarity of the item embeddings (exact; normalised once)."""
        self.check_k(k)
        iid = self.vocab.index.get(str(item))
        if iid is None:
            raise UnknownItemError(f"item {item!r} is not in this model's catalogue")
        if not self.dot_product and not _has_embeddings(self.model):
            raise SeqrecError(f"model '{self.run.config.model_name}' has no item embeddings to compare")
        if self._normed is None:
            self._normed = torch.nn.functional.normalize(self.model.item_embeddings().detach().float(), dim=1)
        sims = (self._normed @ self._normed[iid])[None]
        ids, scores = masked_topk(sims, k, [np.asarray([iid])])[0]
        return Result(self.vocab.decode(ids), scores.tolist())

    def measure_recall(self, k: int = 10, sample: int = 256, seed: int = 0) -> float | None:
        """Recall@k of the ANN index against exact on real user vectors (known users' histories)."""
        if self.index is None or isinstance(self.index, ExactIndex):
            return None
        hist = self.run.histories
        if not hist.users:
            return None
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(hist.users), min(sample, len(hist.users)), replace=False)
        histories = [hist.items[i] for i in pick if len(hist.items[i])]
        with torch.inference_mode():
            users = self.model.user_representation(history_batch(histories, self.max_len)).float().numpy()
        fallbacks = self.index.fallbacks
        self.recall = recall_at_k(self.index, users, k, [np.unique(h) for h in histories])
        self.index.fallbacks = fallbacks
        return self.recall


def _has_embeddings(model: SequentialRecommender) -> bool:
    try:
        model.item_embeddings()
        return True
    except NotImplementedError:
        return False


def _cache_file(cache_dir: Path | None, run_dir: Path, kind: str, params: dict) -> Path | None:
    """A cache key that changes whenever the weights or the index parameters do."""
    if cache_dir is None or kind in ("exact",):
        return None
    weights = Path(run_dir) / "model.safetensors"
    st = weights.stat()
    build = sorted((k, v) for k, v in params.items() if k in ("hnsw_m", "ef_construction", "nlist"))
    key = f"{weights.resolve()}|{st.st_size}|{st.st_mtime_ns}|{kind}|{build}"  # search-time knobs excluded
    return Path(cache_dir) / f"index-{hashlib.sha256(key.encode()).hexdigest()[:16]}.faiss"

"""Answer "what next?" from a saved run: for known users by external id, or for any history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from seqrec.artifact import LoadedRun, load_run
from seqrec.data.batches import history_batch
from seqrec.errors import SeqrecError, UnknownItemError, UnknownUserError


@dataclass
class Recommendation:
    items: list[str]
    scores: list[float]
    unknown_items: list[str] = field(default_factory=list)  # history items the run has never seen
    user: str | None = None

    def to_dict(self) -> dict:
        return {"user": self.user, "items": self.items, "scores": self.scores, "unknown_items": self.unknown_items}


class Recommender:
    """A trained model plus its vocabulary and known histories, in eval mode without autograd."""

    def __init__(self, run: LoadedRun, device: str = "cpu"):
        self.run = run
        self.model = run.model.to(device).eval()
        self.vocab = run.vocab
        self.histories = run.histories
        self.device = torch.device(device)

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> Recommender:
        return cls(load_run(run_dir, device=device), device)

    @property
    def num_items(self) -> int:
        return self.vocab.num_items

    def known_user(self, user: str) -> bool:
        return str(user) in self.histories.index

    def user_history(self, user: str) -> np.ndarray:
        idx = self.histories.index.get(str(user))
        if idx is None:
            raise UnknownUserError(
                f"user {user!r} is not in this run's data; pass their items as a history instead (--history a,b,c)"
            )
        return self.histories.items[idx]

    def encode_history(self, items: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        known, unknown = self.vocab.encode([str(i) for i in items])
        return np.asarray(known, dtype=np.int64), unknown

    def _check_k(self, k: int) -> None:
        if k < 1:
            raise SeqrecError(f"k must be at least 1, got {k}")
        if k > self.num_items:
            raise SeqrecError(f"k = {k} is larger than the catalogue ({self.num_items} items); ask for at most that")

    @torch.inference_mode()
    def score_histories(self, histories: list[np.ndarray]) -> torch.Tensor:
        batch = {k: v.to(self.device) for k, v in history_batch(histories, self.model.max_len).items()}
        return self.model.score(batch).float()

    def recommend(self, user: str | None = None, history: Sequence[str] | None = None, k: int = 10,
                  exclude: Sequence[str] | None = None, exclude_seen: bool = True) -> Recommendation:
        """Top-k next items. A known user's stored history comes first; `history` items are appended."""
        return self.recommend_many([(user, history)], k, [exclude or []], exclude_seen)[0]

    def resolve(self, user: str | None, history: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
        if user is None and not history:
            raise SeqrecError("give a known user id or a non-empty history of item ids")
        parts, unknown = [], []
        if user is not None:
            parts.append(self.user_history(user))
        if history:
            ids, unknown = self.encode_history(history)
            parts.append(ids)
        ids = np.concatenate(parts) if parts else np.empty(0, np.int64)
        if len(ids) == 0:
            raise UnknownItemError(
                f"none of the history items are in this run's catalogue (unknown: {unknown[:5]}"
                f"{'…' if len(unknown) > 5 else ''}); recommendations need at least one known item"
            )
        return ids, unknown

    def recommend_many(self, requests: list[tuple[str | None, Sequence[str] | None]], k: int = 10,
                       excludes: list[Sequence[str]] | None = None, exclude_seen: bool = True) -> list[Recommendation]:
        self._check_k(k)
        resolved = [self.resolve(u, h) for u, h in requests]
        return self.recommend_ids([r[0] for r in resolved], k, excludes, exclude_seen,
                                  unknown=[r[1] for r in resolved], users=[u for u, _ in requests])

    @torch.inference_mode()
    def recommend_ids(self, histories: list[np.ndarray], k: int, excludes: list[Sequence[str]] | None = None,
                      exclude_seen: bool = True, unknown: list[list[str]] | None = None,
                      users: list[str | None] | None = None) -> list[Recommendation]:
        """Top-k for internal-id histories, batched."""
        self._check_k(k)
        scores = self.score_histories(histories)
        scores[:, 0] = float("-inf")
        for i, h in enumerate(histories):
            if exclude_seen:
                scores[i, torch.as_tensor(h, device=scores.device)] = float("-inf")
            if excludes and excludes[i]:
                ids, _ = self.vocab.encode([str(x) for x in excludes[i]])
                if ids:
                    scores[i, torch.as_tensor(ids, device=scores.device)] = float("-inf")
        top = torch.topk(scores, k, dim=1)
        values, indices = top.values.cpu().numpy(), top.indices.cpu().numpy()
        out = []
        for i in range(len(histories)):
            keep = np.isfinite(values[i])
            out.append(Recommendation(self.vocab.decode(indices[i][keep]), values[i][keep].tolist(),
                                      unknown[i] if unknown else [], users[i] if users else None))
        return out

    @torch.inference_mode()
    def similar_items(self, item: str, k: int = 10) -> Recommendation:
        """Nearest items by cosine similarity of the output item embeddings."""
        self._check_k(k)
        ids, unknown = self.encode_history([item])
        if unknown:
            raise UnknownItemError(f"item {item!r} is not in this run's catalogue")
        try:
            table = self.model.item_embeddings().float()
        except NotImplementedError:
            raise SeqrecError(f"model '{self.run.config.model_name}' has no item embeddings to compare") from None
        table = torch.nn.functional.normalize(table, dim=1)
        sims = table @ table[int(ids[0])]
        sims[0] = float("-inf")
        sims[int(ids[0])] = float("-inf")
        top = torch.topk(sims, min(k, self.num_items - 1))
        return Recommendation(self.vocab.decode(top.indices.cpu().numpy()), top.values.cpu().tolist())

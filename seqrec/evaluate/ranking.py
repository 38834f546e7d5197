"""Batched, vectorised evaluation over the whole catalogue (or, on request, sampled candidates)."""

from __future__ import annotations

import numpy as np
import torch

from seqrec.data.batches import history_batch
from seqrec.data.split import EvalSet
from seqrec.evaluate.metrics import coverage, metrics_from_ranks
from seqrec.models.base import SequentialRecommender


def mask_history(scores: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Seen items (the history in the batch) get -inf; padding (id 0) too."""
    scores = scores.scatter(1, items, float("-inf"))
    scores[:, 0] = float("-inf")
    return scores


def _history_tensor(histories: list[np.ndarray], device) -> torch.Tensor:
    """All history items (not only the model's max_len window) for masking."""
    length = max(1, max(len(h) for h in histories))
    out = np.zeros((len(histories), length), dtype=np.int64)
    for i, h in enumerate(histories):
        out[i, length - len(h):] = h
    return torch.from_numpy(out).to(device)


def evaluate(model: SequentialRecommender, data: EvalSet, ks: list[int] = (5, 10, 20), **kwargs) -> dict[str, float]:
    """Metrics for the eval set. Full ranking by default; sampled metrics get a 'sampled_' prefix."""
    return evaluate_with_ranks(model, data, ks, **kwargs)[0]


@torch.no_grad()
def evaluate_with_ranks(model: SequentialRecommender, data: EvalSet, ks: list[int] = (5, 10, 20), *,
                        mask_seen: bool = True, batch_size: int = 1024, device: str | torch.device = "cpu",
                        sampled: bool = False, num_sampled: int = 100, sampled_strategy: str = "uniform",
                        item_counts: np.ndarray | None = None, seed: int = 0,
                        autocast: bool = False) -> tuple[dict[str, float], np.ndarray]:
    """Metrics and each user's 1-based target rank (in the eval set's order), kept so that two runs
    can be compared user by user (`seqrec compare`)."""
    ks = sorted(ks)
    was_training = model.training
    model.eval()
    ranks, tops = [], []
    num_items = model.num_items
    rng = torch.Generator().manual_seed(seed)
    if sampled and sampled_strategy == "popularity":
        probs = torch.tensor(item_counts, dtype=torch.float64) + 1e-3
        probs[0] = 0
    else:
        probs = torch.ones(num_items + 1, dtype=torch.float64)
        probs[0] = 0
    # users in order of (windowed) history length, so a batch is padded only to its own longest
    # history instead of max_len: on Beauty (mean length 7) this cuts the encoder's work ~4x.
    # Ranks are put back in the eval set's order at the end.
    lengths = np.fromiter((min(len(h), model.max_len) for h in data.histories), dtype=np.int64,
                          count=len(data))
    order = np.argsort(lengths, kind="stable")
    all_targets = np.asarray(data.targets)
    for start in range(0, len(data), batch_size):
        idx = order[start : start + batch_size]
        hist = [data.histories[i] for i in idx]
        times = [data.history_times[i] for i in idx] if data.history_times else None
        batch = {k: v.to(device) for k, v in history_batch(hist, model.max_len, times).items()}
        targets = torch.as_tensor(all_targets[idx], device=device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            scores = model.score(batch)
        scores = scores.float()
        seen = _history_tensor(hist, device)
        if sampled:
            ranks.append(_sampled_ranks(scores, targets, seen, probs, num_sampled, rng, mask_seen))
            continue
        if mask_seen:
            scores = mask_history(scores, seen)
        else:
            scores[:, 0] = float("-inf")
        target_scores = scores.gather(1, targets[:, None])
        # pessimistic ties: rank = 1 + items scored higher + other items scored equal, so a model
        # cannot gain by giving many items the same score (a constant scorer gets the last rank)
        higher = (scores > target_scores).sum(1) + (scores == target_scores).sum(1) - 1
        rank = (higher + 1).float()
        rank[torch.isinf(target_scores[:, 0]) & (target_scores[:, 0] < 0)] = float("inf")  # masked target
        ranks.append(rank.cpu().numpy())
        tops.append(torch.topk(scores, min(ks[-1], num_items), dim=1).indices.cpu().numpy())
    if was_training:
        model.train()
    ranks_np = np.empty(0)
    if ranks:
        ranks_np = np.empty(len(data))
        ranks_np[order] = np.concatenate(ranks)
    if sampled:
        out = metrics_from_ranks(ranks_np, ks, prefix="sampled_")
        out["sampled_candidates"] = num_sampled
        return out, ranks_np
    out = metrics_from_ranks(ranks_np, ks)
    if tops:
        out.update(coverage(np.concatenate(tops), ks, num_items))
    out["users"] = len(ranks_np)
    return out, ranks_np


def _sampled_ranks(scores, targets, seen, probs, n, rng, mask_seen) -> np.ndarray:
    """Rank of the target among n sampled negatives (excluding the target and, if masked, the history)."""
    out = np.empty(len(targets))
    for i in range(len(targets)):
        p = probs.clone()
        p[targets[i].item()] = 0
        if mask_seen:
            p[seen[i].cpu()] = 0
        negs = torch.multinomial(p, n, replacement=False, generator=rng).to(scores.device)
        out[i] = 1 + int((scores[i, negs] >= scores[i, targets[i]]).sum())
    return out

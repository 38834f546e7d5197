"""ComiRec (Cen et al., KDD 2020): controllable multi-interest retrieval.

A history becomes K interest vectors, by one of two extractors (`extractor`):
- **dr**, dynamic routing (capsules): every item predicts each interest through a shared
  bilinear map, ê_{k|i} = (e_i S)_k; routing logits start at 0, coupling weights are a softmax
  over interests, interests are squash(Σ_i c_ik ê_{k|i}), and logits grow by ê_{k|i}·v_k for
  `routing_iterations` rounds (the predictions are detached in all but the last round, as in the
  authors' code). The original draws the initial logits at random; zeros keep scoring
  deterministic, and the per-interest bilinear map already breaks the symmetry.
- **sa**, self-attention: A = softmax_L(W2 tanh(W1 H^T)) with H the item (+ position)
  embeddings, interests = A H.

Training picks, for each target, the interest with the largest score for it (hard readout) and
applies the configured loss (sampled softmax in the paper; any seqrec loss works). The paper
trains on random prefixes of each history; here every position of a window is a prefix, with
interests computed causally (position t only routes/attends over items ≤ t) in one pass.

Full-ranking `score` is the max over interests. `topk(batch, k, diversity=λ)` is the paper's
controllable aggregation: the union of each interest's top-k is the candidate set M, and k items
are chosen greedily maximising Q(S) = Σ_{i∈S} f(i) + λ Σ_{i,j∈S} [cat(i) ≠ cat(j)] with
f(i) = max_k v_k·e_i. Categories come from the caller (e.g. item attributes); without them a
documented proxy is used: k-means clusters (`proxy_categories` of them) of the L2-normalised item
embeddings. λ = 0 is exactly the max-over-interests top-k.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from seqrec.models.base import Batch, SequentialRecommender
from seqrec.models.blocks.dropout import Dropout
from seqrec.models.blocks.init import init_normal
from seqrec.models.blocks.positions import build_positions


@dataclass
class ComiRecConfig:
    max_len: int = 50
    hidden_size: int = 64
    extractor: str = "sa"  # sa (self-attentive) | dr (dynamic routing)
    num_interests: int = 4
    attention_size: int = 0  # SA: width of W1; 0 = 4 × hidden_size (the authors' code)
    routing_iterations: int = 3  # DR
    positions: str = "auto"  # auto: learned for sa, none for dr (as in the paper) | learned | none
    dropout: float = 0.0  # on the input embeddings; the paper uses none
    init_std: float = 0.02
    proxy_categories: int = 32  # clusters used as categories when topk is given none

    def validate(self) -> None:
        if self.extractor not in ("sa", "dr"):
            raise ValueError(f"extractor = {self.extractor!r}; use sa (self-attentive) or dr (dynamic routing)")
        if self.num_interests < 1:
            raise ValueError("num_interests must be at least 1")
        if self.routing_iterations < 1:
            raise ValueError("routing_iterations must be at least 1")
        if self.positions not in ("auto", "learned", "none"):
            raise ValueError(f"positions = {self.positions!r}; use auto, learned or none")
        if self.max_len < 1 or self.hidden_size < 1:
            raise ValueError("max_len and hidden_size must be at least 1")
        if self.proxy_categories < 2:
            raise ValueError("proxy_categories must be at least 2")


def squash(s: torch.Tensor) -> torch.Tensor:
    norm2 = (s * s).sum(-1, keepdim=True)
    return s * (norm2 / (1.0 + norm2)) / torch.sqrt(norm2 + 1e-9)


def category_diversity(top_ids: torch.Tensor, categories: torch.Tensor) -> torch.Tensor:
    """(B,) share of item pairs in each list whose categories differ (ComiRec's Diversity@N)."""
    cats = categories[top_ids]  # (B, k)
    k = cats.shape[1]
    if k < 2:
        return torch.zeros(cats.shape[0], device=cats.device)
    differ = (cats[:, :, None] != cats[:, None, :]).float().sum((1, 2))
    return differ / (k * (k - 1))


def kmeans_labels(x: torch.Tensor, clusters: int, iterations: int = 25, seed: int = 0) -> torch.Tensor:
    """Deterministic k-means (seeded random initial centres) on the rows of x."""
    g = torch.Generator().manual_seed(seed)
    clusters = min(clusters, len(x))
    centres = x[torch.randperm(len(x), generator=g)[:clusters].to(x.device)].clone()
    labels = torch.zeros(len(x), dtype=torch.int64, device=x.device)
    for _ in range(iterations):
        labels = torch.cdist(x, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=clusters)[:, None].to(x.dtype)
        centres = torch.where(counts > 0, sums / counts.clamp_min(1.0), centres)  # empty: keep
    return labels


class ComiRec(SequentialRecommender):
    config_class = ComiRecConfig

    def __init__(self, config: ComiRecConfig, num_items: int):
        super().__init__(config, num_items)
        d, k = config.hidden_size, config.num_interests
        self.item_emb = nn.Embedding(num_items + 1, d, padding_idx=0)
        kind = config.positions if config.positions != "auto" else ("learned" if config.extractor == "sa" else "none")
        self.positions = build_positions(kind, config.max_len, d)
        self.emb_drop = Dropout(config.dropout)
        if config.extractor == "sa":
            da = config.attention_size or 4 * d
            self.w1 = nn.Linear(d, da)
            self.w2 = nn.Linear(da, k)
        else:
            self.bilinear = nn.Linear(d, k * d, bias=False)
        init_normal(self, config.init_std)
        self._proxy: tuple[int, torch.Tensor] | None = None

    # --- interest extraction -------------------------------------------------------------------

    def interests(self, batch: Batch, last_only: bool = False) -> torch.Tensor:
        """(B, P, K, D) interests of every prefix (P = L) or of the whole history (P = 1)."""
        items = batch["items"]
        length = items.shape[1]
        valid = items > 0
        allowed = valid[:, None, :] & torch.ones(length, length, dtype=torch.bool, device=items.device).tril()
        if last_only:
            allowed = allowed[:, -1:]  # (B, P, L): which items prefix t may use
        emb = self.item_emb(items)
        if self.config.extractor == "sa":
            h = self.emb_drop(emb + self.positions(items)) * valid[..., None]
            logits = self.w2(torch.tanh(self.w1(h))).transpose(1, 2)  # (B, K, L)
            logits = logits[:, :, None, :].masked_fill(~allowed[:, None], float("-inf"))  # (B, K, P, L)
            weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # an empty prefix → zero interests
            return torch.einsum("bkpl,bld->bpkd", weights, h)
        return self._route(self.emb_drop(emb) * valid[..., None], allowed)

    def _route(self, emb: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, length, d = emb.shape
        k = self.config.num_interests
        hat = self.bilinear(emb).view(b, length, k, d)  # ê_{k|i}
        logits = torch.zeros(b, allowed.shape[1], length, k, device=emb.device, dtype=emb.dtype)
        keep = allowed[..., None].to(emb.dtype)
        iterations = self.config.routing_iterations
        for it in range(iterations):
            coupling = torch.softmax(logits, dim=-1) * keep  # over interests; masked items give nothing
            last = it == iterations - 1
            h = hat if last else hat.detach()
            caps = squash(torch.einsum("bplk,blkd->bpkd", coupling, h))
            if not last:
                logits = logits + torch.einsum("blkd,bpkd->bplk", h, caps)
        return caps

    # --- the model contract --------------------------------------------------------------------

    def item_embeddings(self) -> torch.Tensor:
        return self.item_emb.weight

    def encode(self, batch: Batch) -> torch.Tensor:
        """(B, L, D) mean of each prefix's interests — a one-vector summary for callers that need one.
        Ranking never uses it: `score` takes the max over interests and `topk` merges them."""
        return self.interests(batch).mean(2)

    def user_representation(self, batch: Batch) -> torch.Tensor:
        return self.interests(batch, last_only=True)[:, -1].mean(1)

    def interest_scores(self, batch: Batch) -> torch.Tensor:
        """(B, K, N + 1): every interest's score for every item."""
        return self.interests(batch, last_only=True)[:, -1] @ self.item_embeddings().T

    def score(self, batch: Batch) -> torch.Tensor:
        return self.interest_scores(batch).max(1).values

    def training_loss(self, batch: Batch, loss: nn.Module) -> torch.Tensor:
        targets = batch["targets"]
        mask = targets > 0
        caps = self.interests(batch)[mask]  # (P, K, D)
        tgt = targets[mask]
        table = self.item_embeddings()
        with torch.no_grad():
            chosen = (caps * table[tgt][:, None]).sum(-1).argmax(1)
        hidden = caps[torch.arange(len(tgt), device=tgt.device), chosen]
        return loss(hidden, tgt, table)

    # --- controllable aggregation --------------------------------------------------------------

    def proxy_categories(self) -> torch.Tensor:
        """(N + 1,) k-means cluster of each item embedding, cached until the table changes."""
        table = self.item_embeddings()
        version = table._version
        if self._proxy is None or self._proxy[0] != version or len(self._proxy[1]) != len(table):
            with torch.no_grad():
                x = torch.nn.functional.normalize(table[1:].float(), dim=1)
                labels = kmeans_labels(x.cpu(), self.config.proxy_categories).to(table.device)
            self._proxy = (version, torch.cat([labels.new_full((1,), -1), labels]))
        return self._proxy[1]

    @torch.no_grad()
    def topk(self, batch: Batch, k: int, diversity: float = 0.0, categories: torch.Tensor | None = None,
             exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids (B, k), f-scores (B, k)) by greedy controllable aggregation of the interests' top-k.

        `exclude`: (B, X) item ids that may not be recommended (0 = none); defaults to the
        batch's history. `categories`: (N + 1,) category of each item; default: the proxy.
        """
        if diversity < 0:
            raise ValueError("diversity (λ) must be 0 or more")
        if not 1 <= k <= self.num_items:
            raise ValueError(f"k = {k} must be between 1 and the catalogue size {self.num_items}")
        scores = self.interest_scores(batch).float()  # (B, K, N+1)
        exclude = batch["items"] if exclude is None else exclude
        scores = scores.scatter(2, exclude[:, None, :].expand(-1, scores.shape[1], -1), float("-inf"))
        scores[:, :, 0] = float("-inf")
        best = scores.max(1).values  # f(u, i)
        cand = torch.topk(scores, k, dim=2).indices.flatten(1)  # (B, K·k), M with repeats
        cand, _ = cand.sort(1)
        f = best.gather(1, cand)
        dup = torch.zeros_like(cand, dtype=torch.bool)
        dup[:, 1:] = cand[:, 1:] == cand[:, :-1]
        f = f.masked_fill(dup, float("-inf"))
        cats = (self.proxy_categories() if categories is None else categories.to(cand.device))[cand]
        rows = torch.arange(len(cand), device=cand.device)
        differ = torch.zeros_like(f)
        chosen, chosen_f = [], []
        for _ in range(k):
            pick = (f + diversity * differ).argmax(1)
            chosen.append(cand[rows, pick])
            chosen_f.append(f[rows, pick])
            differ += (cats != cats[rows, pick][:, None]).float()
            f[rows, pick] = float("-inf")
        return torch.stack(chosen, 1), torch.stack(chosen_f, 1)

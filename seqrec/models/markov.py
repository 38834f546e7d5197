"""First-order Markov chain: next-item transition counts from the last item, popularity backoff.

Scores are lexicographic: the transition count from the last item decides, and training
popularity (scaled below 1) breaks ties and ranks everything the chain has never seen.
Transitions are kept sparse (CSR buffers), so the model scales to large catalogues.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from seqrec.models.base import Batch, SequentialRecommender


@dataclass
class MarkovConfig:
    max_len: int = 50


class Markov(SequentialRecommender):
    config_class = MarkovConfig
    trainable = False

    def __init__(self, config: MarkovConfig, num_items: int):
        super().__init__(config, num_items)
        self.register_buffer("popularity", torch.zeros(num_items + 1))
        self.register_buffer("indptr", torch.zeros(num_items + 2, dtype=torch.int64))
        self.register_buffer("successors", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("counts", torch.zeros(0))

    def fit_statistics(self, train_sequences: list[np.ndarray]) -> None:
        n = self.num_items + 1
        pop = np.bincount(np.concatenate(train_sequences), minlength=n).astype(np.float64)
        pop[0] = 0
        src = np.concatenate([s[:-1] for s in train_sequences if len(s) > 1] or [np.empty(0, np.int64)])
        dst = np.concatenate([s[1:] for s in train_sequences if len(s) > 1] or [np.empty(0, np.int64)])
        keys, counts = np.unique(src * n + dst, return_counts=True)
        rows, cols = keys // n, keys % n
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.add.at(indptr, rows + 1, 1)
        self.popularity = torch.from_numpy((pop / (pop.max() + 1.0)).astype(np.float32))
        self.indptr = torch.from_numpy(np.cumsum(indptr))
        self.successors = torch.from_numpy(cols.astype(np.int64))
        self.counts = torch.from_numpy(counts.astype(np.float32))

    def score(self, batch: Batch) -> torch.Tensor:
        last = batch["items"][:, -1]
        scores = self.popularity.expand(last.shape[0], -1).clone()
        starts, ends = self.indptr[last], self.indptr[last + 1]
        lengths = ends - starts
        rows = torch.repeat_interleave(torch.arange(last.shape[0], device=last.device), lengths)
        offsets = torch.arange(int(lengths.sum()), device=last.device) - torch.repeat_interleave(
            torch.cumsum(lengths, 0) - lengths, lengths) + torch.repeat_interleave(starts, lengths)
        scores[rows, self.successors[offsets]] += self.counts[offsets]
        return scores

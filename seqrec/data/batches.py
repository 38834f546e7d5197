"""Batches: left-padded windows (the last real item is always at the last position).

By default every position of a training window is a next-item example (input s[:-1], targets
s[1:]). With `prefixes=True` every prefix of a sequence is its own example and only its last
position is a target (the "prefix augmentation" of RecBole and GRU4Rec-style data loaders): the
same targets per epoch, but each one is seen under its own dropout noise, at the cost of more
encoder work. Batches are trimmed to their longest row, so short logs cost little.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def left_pad(rows: list[np.ndarray], length: int, dtype=np.int64) -> np.ndarray:
    out = np.zeros((len(rows), length), dtype=dtype)
    for i, r in enumerate(rows):
        r = r[-length:]
        if len(r):
            out[i, length - len(r):] = r
    return out


class TrainBatches:
    """Shuffled next-item training batches from per-user training sequences."""

    def __init__(self, sequences: list[np.ndarray], times: list[np.ndarray] | None, max_len: int,
                 batch_size: int, window: str = "last", seed: int = 0, bucket: int = 16,
                 prefixes: bool = False):
        keep = [i for i, s in enumerate(sequences) if len(s) >= 2]
        self.sequences = [sequences[i] for i in keep]
        self.times = [times[i] for i in keep] if times is not None else None
        self.prefixes = prefixes
        # one example per (sequence, end): the sequence cut at `end` (every prefix, or only the whole)
        self.examples = np.array([(i, end) for i, seq in enumerate(self.sequences)
                                  for end in (range(2, len(seq) + 1) if prefixes else (len(seq),))],
                                 dtype=np.int64).reshape(-1, 2)
        self.max_len = max_len
        self.batch_size = batch_size
        self.window = window
        self.bucket = max(1, bucket)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return (len(self.examples) + self.batch_size - 1) // self.batch_size

    def num_sequences(self) -> int:
        return len(self.sequences)

    def _window(self, n: int) -> tuple[int, int]:
        span = self.max_len + 1
        if n <= span:
            return 0, n
        # a prefix's end is its target, so it is never moved; a whole sequence may be cut anywhere
        end = n if self.window == "last" or self.prefixes else int(self.rng.integers(span, n + 1))
        return end - span, end

    def _batches(self) -> list[np.ndarray]:
        """Shuffled batches of similar-length sequences: users are shuffled, then sorted by length
        inside pools of `bucket` batches, so padding (and its compute) stays small."""
        order = self.rng.permutation(len(self.examples))
        lengths = np.minimum(self.examples[order, 1], self.max_len + 1)
        pool = self.batch_size * self.bucket
        batches = []
        for start in range(0, len(order), pool):
            chunk = order[start : start + pool]
            chunk = chunk[np.argsort(lengths[start : start + pool], kind="stable")]
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        return [batches[i] for i in self.rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for idx in self._batches():
            rows, ends = self.examples[idx, 0], self.examples[idx, 1]
            windows = [self._window(int(end)) for end in ends]
            seqs = [self.sequences[i][a:b] for i, (a, b) in zip(rows, windows, strict=True)]
            length = max(len(s) for s in seqs) - 1
            targets = left_pad([s[1:] for s in seqs], length)
            if self.prefixes:
                targets[:, :-1] = 0  # only the prefix's last item is predicted
            batch = {
                "items": torch.from_numpy(left_pad([s[:-1] for s in seqs], length)),
                "targets": torch.from_numpy(targets),
            }
            if self.times is not None:
                ts = [self.times[i][a:b] for i, (a, b) in zip(rows, windows, strict=True)]
                batch["timestamps"] = torch.from_numpy(left_pad([t[:-1] for t in ts], length, np.float64))
                batch["target_timestamps"] = torch.from_numpy(left_pad([t[1:] for t in ts], length, np.float64))
            yield batch


def history_batch(histories: list[np.ndarray], max_len: int, times: list[np.ndarray] | None = None,
                  query_times: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """An inference batch: the last `max_len` items of each history, left-padded and trimmed."""
    length = max(1, min(max_len, max(len(h) for h in histories)))
    batch = {"items": torch.from_numpy(left_pad(histories, length))}
    if times is not None:
        batch["timestamps"] = torch.from_numpy(left_pad(times, length, np.float64))
    if query_times is not None:
        batch["query_timestamps"] = torch.as_tensor(query_times, dtype=torch.float64)
    return batch

"""Batches: left-padded windows (the last real item is always at the last position).

Every position of a training window is a next-item example (input s[:-1], targets s[1:]);
no prefix augmentation. Batches are trimmed to their longest row, so short logs cost little.
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
                 batch_size: int, window: str = "last", seed: int = 0, bucket: int = 16):
        keep = [i for i, s in enumerate(sequences) if len(s) >= 2]
        self.sequences = [sequences[i] for i in keep]
        self.times = [times[i] for i in keep] if times is not None else None
        self.max_len = max_len
        self.batch_size = batch_size
        self.window = window
        self.bucket = max(1, bucket)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return (len(self.sequences) + self.batch_size - 1) // self.batch_size

    def num_sequences(self) -> int:
        return len(self.sequences)

    def _window(self, n: int) -> tuple[int, int]:
        span = self.max_len + 1
        if n <= span:
            return 0, n
        end = n if self.window == "last" else int(self.rng.integers(span, n + 1))
        return end - span, end

    def _batches(self) -> list[np.ndarray]:
        """Shuffled batches of similar-length sequences: users are shuffled, then sorted by length
        inside pools of `bucket` batches, so padding (and its compute) stays small."""
        order = self.rng.permutation(len(self.sequences))
        lengths = np.minimum(np.array([len(self.sequences[i]) for i in order]), self.max_len + 1)
        pool = self.batch_size * self.bucket
        batches = []
        for start in range(0, len(order), pool):
            chunk = order[start : start + pool]
            chunk = chunk[np.argsort(lengths[start : start + pool], kind="stable")]
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        return [batches[i] for i in self.rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for idx in self._batches():
            windows = [self._window(len(self.sequences[i])) for i in idx]
            seqs = [self.sequences[i][a:b] for i, (a, b) in zip(idx, windows, strict=True)]
            length = max(len(s) for s in seqs) - 1
            batch = {
                "items": torch.from_numpy(left_pad([s[:-1] for s in seqs], length)),
                "targets": torch.from_numpy(left_pad([s[1:] for s in seqs], length)),
            }
            if self.times is not None:
                ts = [self.times[i][a:b] for i, (a, b) in zip(idx, windows, strict=True)]
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

"""Leakage-free splits: leave-one-out (the papers' protocol) and a global temporal cut.

Training sequences never contain a validation or test target. Evaluation sets carry the history
the model sees at prediction time, which is also the set of items masked from the ranking.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from seqrec.data.vocab import Sequences
from seqrec.errors import DataError


@dataclass
class EvalSet:
    users: list[int]  # indices into Sequences.users
    histories: list[np.ndarray]
    history_times: list[np.ndarray]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class SplitData:
    train: list[np.ndarray]
    train_times: list[np.ndarray]
    valid: EvalSet
    test: EvalSet
    num_items: int
    notes: dict = field(default_factory=dict)

    def item_counts(self) -> np.ndarray:
        """Training popularity (index 0 = padding, always 0)."""
        counts = np.zeros(self.num_items + 1, dtype=np.int64)
        if self.train:
            np.add.at(counts, np.concatenate(self.train), 1)
        counts[0] = 0
        return counts

    def summary(self) -> str:
        n_train = sum(len(s) for s in self.train)
        out = (f"split: {n_train:,} training interactions in {sum(len(s) >= 2 for s in self.train):,} sequences; "
               f"{len(self.valid):,} validation and {len(self.test):,} test targets")
        for k, v in self.notes.items():
            out += f"\n  {k}: {v}"
        return out


def leave_one_out(seqs: Sequences) -> SplitData:
    train, train_t = [], []
    valid = EvalSet([], [], [], np.empty(0, np.int64))
    test = EvalSet([], [], [], np.empty(0, np.int64))
    v_t, t_t = [], []
    short = 0
    for u in range(len(seqs)):
        items, times = seqs.item_seq(u), seqs.time_seq(u)
        if len(items) < 3:
            short += 1
            continue
        train.append(items[:-2])
        train_t.append(times[:-2])
        valid.users.append(u)
        valid.histories.append(items[:-2])
        valid.history_times.append(times[:-2])
        v_t.append(items[-2])
        test.users.append(u)
        test.histories.append(items[:-1])
        test.history_times.append(times[:-1])
        t_t.append(items[-1])
    if not valid.users:
        raise DataError("no user has the 3 interactions leave-one-out needs (train, validation, test)")
    valid.targets = np.asarray(v_t, dtype=np.int64)
    test.targets = np.asarray(t_t, dtype=np.int64)
    notes = {}
    if short:
        notes["users with fewer than 3 interactions (not used; set data.min_history = 3 to drop upfront)"] = short
    return SplitData(train, train_t, valid, test, num_items=int(seqs.items.max(initial=0)), notes=notes)


def parse_cutoff(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise DataError(f"data.temporal_cutoff = {value!r} is neither a number nor an ISO date like 2014-01-01") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def temporal(seqs: Sequences, cutoff: float, valid_fraction: float = 0.5, seed: int = 0) -> SplitData:
    """Train on everything before `cutoff`; evaluate each later-active user's first item after it.

    Users active after the cut are divided (seeded) into validation and test users, so model
    selection never looks at test users and nothing after the cut is trained on.
    """
    rng = np.random.default_rng(seed)
    train, train_t = [], []
    sets = {"valid": EvalSet([], [], [], np.empty(0, np.int64)), "test": EvalSet([], [], [], np.empty(0, np.int64))}
    targets = {"valid": [], "test": []}
    cold, post_users = 0, 0
    num_items = int(seqs.items.max(initial=0))
    for u in range(len(seqs)):
        items, times = seqs.item_seq(u), seqs.time_seq(u)
        before = int(np.searchsorted(times, cutoff, side="left"))
        if before:
            train.append(items[:before])
            train_t.append(times[:before])
        if before < len(items):
            post_users += 1
            if before == 0:
                cold += 1
                continue
            which = "valid" if rng.random() < valid_fraction else "test"
            s = sets[which]
            s.users.append(u)
            s.histories.append(items[:before])
            s.history_times.append(times[:before])
            targets[which].append(items[before])
    for k in sets:
        sets[k].targets = np.asarray(targets[k], dtype=np.int64)
    if not len(sets["valid"]) or not len(sets["test"]):
        raise DataError(
            f"temporal cutoff {cutoff} leaves {len(sets['valid'])} validation and {len(sets['test'])} test users; "
            "move the cutoff earlier (data.temporal_cutoff / temporal_quantile)"
        )
    split = SplitData(train, train_t, sets["valid"], sets["test"], num_items=num_items)
    seen = np.zeros(num_items + 1, dtype=bool)
    if train:
        seen[np.concatenate(train)] = True
    cold_items = int((~seen[np.concatenate([sets["valid"].targets, sets["test"].targets])]).sum())
    split.notes["cutoff"] = cutoff
    split.notes["users active after the cutoff"] = post_users
    if cold:
        split.notes["of them with no history before the cutoff (not evaluable, skipped)"] = cold
    if cold_items:
        split.notes["targets that are items never seen in training (kept: count as misses)"] = cold_items
    return split


def split_sequences(seqs: Sequences, method: str, *, cutoff: str | None = None, quantile: float | None = None,
                    valid_fraction: float = 0.5, seed: int = 0) -> SplitData:
    if method == "leave_one_out":
        return leave_one_out(seqs)
    if method == "temporal":
        if cutoff is None and quantile is None:
            raise DataError("the temporal split needs data.temporal_cutoff (a time) or data.temporal_quantile (0..1)")
        if cutoff is not None:
            t = parse_cutoff(cutoff)
        else:
            if not 0 < quantile < 1:
                raise DataError(f"data.temporal_quantile must be between 0 and 1, got {quantile}")
            t = float(np.quantile(seqs.times, quantile))
        return temporal(seqs, t, valid_fraction, seed)
    raise DataError(f"unknown split '{method}'; use leave_one_out or temporal")

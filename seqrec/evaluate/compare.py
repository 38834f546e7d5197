"""Paired comparison of two runs on the same test users.

Two runs' NDCG@10 each carry a standard error of several thousandths on a few thousand users, so a
difference of 0.003 between them means little on its own. Most of that noise is which users happen to
be hard, and it is shared by both runs: pairing each user's metric in run A with the same user's in
run B cancels it, and the standard error of the mean per-user difference is much smaller. The
interval is the normal approximation (fine for the thousands of users of a benchmark); it measures
user sampling only, not seed-to-seed variation, which needs several runs per side.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from seqrec.artifact import load_test_ranks
from seqrec.errors import SeqrecError
from seqrec.evaluate.metrics import per_user


@dataclass
class MetricDifference:
    metric: str
    a: float
    b: float
    difference: float  # b - a
    standard_error: float
    low: float  # 95% interval of the difference
    high: float
    p_value: float  # two-sided, for "no difference"


@dataclass
class Comparison:
    users: int
    b_ranks_higher: int  # users whose target run B ranks above run A
    a_ranks_higher: int
    metrics: list[MetricDifference]

    def to_dict(self) -> dict:
        return asdict(self)


def paired_difference(a: np.ndarray, b: np.ndarray, metric: str) -> MetricDifference:
    """`metric` of per-user ranks `a` and `b` (same users, same order) and the paired test of b - a."""
    va, vb = per_user(a, metric), per_user(b, metric)
    d = vb - va
    n = len(d)
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    diff = float(d.mean())
    if se > 0:
        p = math.erfc(abs(diff / se) / math.sqrt(2))
    else:
        p = 1.0 if diff == 0 else 0.0
    return MetricDifference(metric, float(va.mean()), float(vb.mean()), diff, se, diff - 1.96 * se,
                            diff + 1.96 * se, p)


def compare_runs(run_a: str | Path, run_b: str | Path,
                 metrics: tuple[str, ...] | list[str] = ("hr@10", "ndcg@10", "mrr@10")) -> Comparison:
    """Pair two runs' test ranks by user; the runs must have been tested on the same users and targets."""
    ta, tb = load_test_ranks(run_a), load_test_ranks(run_b)
    users_a, users_b = set(ta["user"].to_list()), set(tb["user"].to_list())
    if users_a != users_b:
        raise SeqrecError(
            f"{run_a} and {run_b} were tested on different users ({len(users_a - users_b):,} only in the first, "
            f"{len(users_b - users_a):,} only in the second); compare runs on the same data, filters and split "
            "(the temporal split also divides users between validation and test by train.seed)")
    if ta["mask_seen"].any() != tb["mask_seen"].any():
        raise SeqrecError(f"one of {run_a} and {run_b} masks seen items and the other does not; "
                          "re-evaluate both the same way (`seqrec evaluate`)")
    joined = ta.join(tb, on="user", suffix="_b")
    mismatched = int((joined["target"] != joined["target_b"]).sum())
    if mismatched:
        raise SeqrecError(f"{run_a} and {run_b} have different test targets for {mismatched:,} users; "
                          "compare runs on the same data, filters and split")
    a = joined["rank"].to_numpy()
    b = joined["rank_b"].to_numpy()
    try:
        diffs = [paired_difference(a, b, m) for m in metrics]
    except ValueError as e:
        raise SeqrecError(str(e)) from None
    return Comparison(len(joined), int((b < a).sum()), int((a < b).sum()), diffs)


def format_comparison(c: Comparison, name_a: str, name_b: str) -> str:
    lines = [f"A = {name_a}", f"B = {name_b}",
             f"{c.users:,} test users paired; B - A with its 95% interval (paired over users)",
             f"{'metric':<10} {'A':>8} {'B':>8} {'B - A':>9}   {'95% interval':<20} {'p':>7}"]
    for m in c.metrics:
        lines.append(f"{m.metric:<10} {m.a:8.4f} {m.b:8.4f} {m.difference:+9.4f}   "
                     f"[{m.low:+.4f}, {m.high:+.4f}]   {m.p_value:7.3g}")
    tied = c.users - c.b_ranks_higher - c.a_ranks_higher
    lines.append(f"target ranked higher by B for {c.b_ranks_higher:,} users, by A for {c.a_ranks_higher:,}, "
                 f"the same for {tied:,}")
    return "\n".join(lines)

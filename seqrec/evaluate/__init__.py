"""Honest evaluation: full-catalogue ranking with seen items masked, metrics at several K."""

from seqrec.evaluate.metrics import metrics_from_ranks
from seqrec.evaluate.ranking import evaluate, evaluate_with_ranks

__all__ = ["evaluate", "evaluate_with_ranks", "metrics_from_ranks"]

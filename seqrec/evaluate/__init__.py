"""Honest evaluation: full-catalogue ranking with seen items masked, metrics at several K."""

from seqrec.evaluate.metrics import metrics_from_ranks
from seqrec.evaluate.ranking import evaluate

__all__ = ["evaluate", "metrics_from_ranks"]

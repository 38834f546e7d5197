"""seqrec: sequential recommendation from an interaction log to a served next-item API."""

__version__ = "0.1.0"

from seqrec.data.io import read_interactions
from seqrec.errors import SeqrecError
from seqrec.evaluate.compare import compare_runs
from seqrec.pipeline import evaluate_run, train
from seqrec.recommender import Recommendation, Recommender

__all__ = ["Recommendation", "Recommender", "SeqrecError", "__version__", "compare_runs", "evaluate_run",
           "read_interactions", "train"]

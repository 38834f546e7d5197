"""Data layer: read logs, preprocess, build vocabularies and leakage-free splits. Never imports models."""

from seqrec.data.io import read_interactions
from seqrec.data.preprocess import PreprocessSummary, preprocess
from seqrec.data.split import EvalSet, SplitData, split_sequences
from seqrec.data.vocab import Sequences, Vocab, build_sequences

__all__ = [
    "EvalSet",
    "PreprocessSummary",
    "Sequences",
    "SplitData",
    "Vocab",
    "build_sequences",
    "preprocess",
    "read_interactions",
    "split_sequences",
]

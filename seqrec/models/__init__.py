"""Models: one file each, built from shared blocks, looked up by name in `registry.MODELS`."""

from seqrec.models.base import SequentialRecommender
from seqrec.models.registry import MODELS, build_model

__all__ = ["MODELS", "SequentialRecommender", "build_model"]

"""Training loop: AdamW, clipping, early stopping on validation, checkpoints, resume, AMP."""

from seqrec.train.trainer import Trainer, TrainResult, resolve_device

__all__ = ["TrainResult", "Trainer", "resolve_device"]

"""Gradient training of learned discretizations on teacher pairs (`train_discretizer`), with one budget rule for
every method (validation patience, plateau learning-rate cuts), several starts chosen on validation
(`train_with_starts`), and resumable checkpoints."""
from .config import TrainConfig, TrainResult, split_indices
from .loop import TrainRun, evaluate_loss, schedule_stats, train_discretizer
from .starts import train_with_starts

__all__ = ["TrainConfig", "TrainResult", "TrainRun", "evaluate_loss", "schedule_stats", "split_indices",
           "train_discretizer", "train_with_starts"]

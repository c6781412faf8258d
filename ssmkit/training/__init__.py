"""Training: a typed config, a warmup + cosine schedule, and a trainer generic over batch source and loss.

from ssmkit.training import TrainConfig, train
result = train(model, make_task("selective_copying"), TrainConfig(steps=500, lr=3e-3, out_dir="runs/sc"))
result.losses, result.metrics["eval_exact_match"]
"""

from .batches import as_batch_source, task_evaluator, token_windows
from .checkpoint import latest_checkpoint, load_checkpoint, load_weights, save_checkpoint
from .config import TrainConfig
from .schedule import warmup_cosine_lr
from .trainer import NonFiniteLossError, Trainer, TrainResult, cross_entropy_loss, train

__all__ = [
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "as_batch_source",
    "cross_entropy_loss",
    "latest_checkpoint",
    "load_checkpoint",
    "load_weights",
    "save_checkpoint",
    "task_evaluator",
    "token_windows",
    "train",
    "warmup_cosine_lr",
]

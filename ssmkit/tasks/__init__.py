"""Synthetic token-level tasks from the seed papers, for training and comparing small language models.

    from ssmkit.tasks import make_task
    task = make_task("selective_copying")                 # or preset="paper", or field overrides
    batch = task.sample(32, torch.Generator().manual_seed(0))
    loss = task.loss(model(batch.inputs), batch)
    task.evaluate(model(batch.inputs), batch)["exact_match"]

Tasks (each module's docstring lists its vocabulary and layout):
    selective_copying   copy scattered data tokens out of noise, in order          (Mamba)
    induction_heads     after the trigger came X; trigger again -> X, length generalisation   (Mamba)
    mqar                multi-query associative recall over key-value pairs        (Zoology)
    needle              "the magic word is X" hidden in filler text; answer X
    fact_recall         "name lives_in city" among distractor facts; answer the queried name's city
"""

from .base import IGNORE_INDEX, Task, TaskBatch
from .fact_recall import FactRecall
from .induction_heads import InductionHeads
from .mqar import MQAR
from .needle import Needle
from .registry import TASKS, make_task
from .selective_copying import SelectiveCopying

__all__ = [
    "IGNORE_INDEX",
    "MQAR",
    "TASKS",
    "FactRecall",
    "InductionHeads",
    "Needle",
    "SelectiveCopying",
    "Task",
    "TaskBatch",
    "make_task",
]

"""lightkit objectives, one LightningModule per file on `lightkit.training.task.BaseTask`.

Importing this package registers every task with the CLI, so configs name them by class name
(`class_path: TokenClassificationTask`).
"""

from lightkit.tasks.causal_lm import CausalLMTask
from lightkit.tasks.distillation import (
    CausalLMDistillation,
    Distillation,
    MaskedLMDistillation,
    SequenceClassificationDistillation,
    TokenClassificationDistillation,
)
from lightkit.tasks.dpo import DPOTask
from lightkit.tasks.grpo import GRPOTask
from lightkit.tasks.masked_lm import MaskedLMTask
from lightkit.tasks.ppo import PPOTask
from lightkit.tasks.reward_model import REWARD_MODEL_TASKS, RewardModelTask
from lightkit.tasks.sequence_classification import SequenceClassificationTask
from lightkit.tasks.token_classification import TokenClassificationTask

__all__ = [
    "CausalLMDistillation",
    "CausalLMTask",
    "DPOTask",
    "Distillation",
    "GRPOTask",
    "MaskedLMDistillation",
    "MaskedLMTask",
    "PPOTask",
    "REWARD_MODEL_TASKS",
    "RewardModelTask",
    "SequenceClassificationDistillation",
    "SequenceClassificationTask",
    "TokenClassificationDistillation",
    "TokenClassificationTask",
]

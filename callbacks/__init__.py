"""lightkit callbacks, one file each, talking to the task only through Lightning hooks."""

from lightkit.callbacks.best_weights import RestoreBestWeights
from lightkit.callbacks.exact_resume import ExactResume
from lightkit.callbacks.generation_metrics import GenerationMetrics
from lightkit.callbacks.last_checkpoint import LastCheckpoint
from lightkit.callbacks.prediction_writer import PredictionWriter
from lightkit.callbacks.qat import QuantizationAwareTraining
from lightkit.callbacks.warmup import LRWarmup, lr_multiplier

__all__ = [
    "ExactResume",
    "GenerationMetrics",
    "LastCheckpoint",
    "LRWarmup",
    "PredictionWriter",
    "QuantizationAwareTraining",
    "RestoreBestWeights",
    "lr_multiplier",
]

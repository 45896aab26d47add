"""lightkit's data layer: a base DataModule on `datasets` and one DataModule per kind of data."""

from lightkit.data.base import BaseDataModule
from lightkit.data.causal_lm import CausalLMDataModule, InstructionDataModule
from lightkit.data.headlines import HeadlineDataModule
from lightkit.data.language_modeling import MaskedLMDataModule
from lightkit.data.preferences import PolicyPreferenceDataModule
from lightkit.data.prompts import PreferenceDataModule, PromptDataModule
from lightkit.data.text_classification import TextClassificationDataModule
from lightkit.data.token_classification import CoNLLDataModule

__all__ = [
    "BaseDataModule",
    "CausalLMDataModule",
    "CoNLLDataModule",
    "HeadlineDataModule",
    "InstructionDataModule",
    "MaskedLMDataModule",
    "PolicyPreferenceDataModule",
    "PreferenceDataModule",
    "PromptDataModule",
    "TextClassificationDataModule",
]

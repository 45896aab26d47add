"""Epoch-exact metrics on torchmetrics: seqeval entities, language-model perplexity and accuracy,
per-class reports with a confusion matrix."""

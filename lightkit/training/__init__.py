"""The training plumbing every objective shares: `BaseTask` (task.py) and what it runs on,
checkpoint files and random state, FSDP2 sharding, precision, the finite-loss guard, epoch means,
QAT fake quantisation."""

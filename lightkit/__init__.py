"""lightkit: a PyTorch Lightning trainer kit for transformer NLP.

The core (this package) owns the plumbing shared by every objective: the base task, the data
layer, packaged resources and the `lightkit` command. Objectives live in `lightkit.tasks`,
callbacks in `lightkit.callbacks`, ONNX export in `lightkit.export`.
"""

__version__ = "0.1.0"

"""Where models and packaged files come from: the Hub/local/packaged resolver (hub.py), packaged
resources and GGUF conversion, loading a trained model inside another task, LoRA adapters."""

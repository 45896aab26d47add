"""Running artifacts: ONNX Runtime sessions in place of a model (sessions.py), the KV-cache decode
loop, serving raw text (serving.py), generation and its refiner, and the commands that run an
artifact: `lightkit evaluate`, `lightkit benchmark`, `lightkit generate`."""

"""ONNX export, parity checks, runtime, serving and decoding refiners.

- `lightkit export` (exporter.py): a checkpoint to checked ONNX forms (fp32, fp16, int8-gpu, int8-cpu,
  qat) with a manifest; parity.py is the gate, placement.py the GPU placement check.
- `lightkit evaluate` (evaluate.py): an artifact scored by the task's own test loop.
- runtime.py: ONNX Runtime sessions that stand in for a transformers model, and the KV-cache
  greedy decode loop; serving.py: raw text in, labels / tags out.
- refiner.py: constrained Viterbi for NER, coordinate-descent refinement for generation.
"""

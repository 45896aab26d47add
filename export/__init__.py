"""ONNX export: builder/ makes checked artifacts from a checkpoint, runtime/ runs them.

- `lightkit export` (builder/exporter.py): fp32, fp16, int8-gpu, int8-cpu and qat forms with a
  manifest, each through the parity gate (builder/parity.py).
- `lightkit evaluate`, `lightkit benchmark`, `lightkit generate` (runtime/): an artifact scored by
  the task's own test loop, timed, or decoding prompts; runtime/serving.py takes raw text in.
"""

"""Building artifacts: a checkpoint to checked ONNX forms with a manifest (`lightkit export`).

exporter.py runs the stages; onnx_export.py traces the graph, or has fused_decoder.py take a
decoder's from onnxruntime-genai's model builder; qdq.py, tied.py, gather_quant.py, weight_only.py,
low_rank.py and decoder_cpu.py make the quantised forms (graph.py holds the graph edits
they share); placement.py checks where a form runs on the GPU; parity.py is the gate every form
passes before it is written."""

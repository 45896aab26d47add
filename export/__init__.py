"""ONNX export, quantisation, runtime and decoding refiners (`lightkit export`, `lightkit evaluate`).

Not built yet: issue 6 adds `onnx.py`, `quantize.py`, `runtime.py` and `refiner.py` here. The
package exists now so that the install layout (`lightkit.export` from the top-level `export/`
folder) is fixed and tested from the start.
"""

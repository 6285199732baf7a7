"""INT8 quantization and N:M sparsity.

ONNX level (post-training): :mod:`edgekit.quantize.ptq` (``quantize``), :mod:`.cpu` (the ORT CPU
target and its sensitivity pass), :mod:`.calibrate` (data and ranges), :mod:`.fidelity` (SQNR and
top-1 agreement), :mod:`.rules` (TensorRT QDQ placement checker). The TensorRT calibration cache
format lives in :mod:`edgekit.trt.calibration_cache` (``.trtcache`` re-exports it).
PyTorch level: :mod:`edgekit.quantize.qat` (quantization-aware training, QDQ export).
Nothing heavy is imported here.
"""

"""What edgekit knows about TensorRT itself, shared by the engine builder, the runners and deploy.

:mod:`.versions` (what differs between TensorRT generations), :mod:`.trtexec` (trtexec command
lines, finding and running trtexec), :mod:`.trtexec_log` (reading trtexec's console log and JSON
exports), :mod:`.manifest` (the engine's sidecar manifest and the compatibility check) and
:mod:`.calibration_cache` (the INT8 calibration cache format). Nothing here imports TensorRT.
"""

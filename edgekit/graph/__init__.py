"""ONNX plumbing shared by every stage: load/save (atomic, external data), editing sessions,
shape inference, FLOPs/params counting and numerical verification."""

from edgekit.graph.io import atomic_output, load_model, model_input_specs, save_model

__all__ = ["atomic_output", "load_model", "model_input_specs", "save_model"]

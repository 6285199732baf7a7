"""The typer CLI: one module per command, each parses, calls one library function, renders.

Modules here import only typer/rich and the standard library at module level; the library (and
through it onnx, torch, TensorRT) is imported inside the command body so `edgekit --help` is instant.
"""

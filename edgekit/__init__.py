"""edgekit: take a trained PyTorch model to a fast engine on an NVIDIA Jetson board.

The package is a library first (every stage is a function ``ModelProto -> (ModelProto, report)``)
with a typer CLI on top. Importing ``edgekit`` is cheap on purpose: torch, TensorRT and pycuda are
only imported inside the functions that need them, so ``edgekit --help`` stays instant.
"""

__version__ = "0.1.0"

from edgekit.errors import EdgekitError  # noqa: E402  (cheap, no heavy deps)

__all__ = ["EdgekitError", "__version__"]

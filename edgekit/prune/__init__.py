"""SPA-style structured pruning at the ONNX graph level.

``prune(model, ratio=...)`` finds every group of coupled channels (``analyze``), scores each with a
criterion (``edgekit.prune.criteria``), removes the weakest and rewrites every tensor a group
touches, in one ``ModelProto -> ModelProto`` pass. See ``graph.py`` for the four nouns, ``handlers``
for the op table, ``apply`` for the rewrite, ``torch_map`` for mapping decisions back to PyTorch.
"""

from edgekit.prune.core import PruneContext, PruneReport, analyze, prune

__all__ = ["prune", "analyze", "PruneReport", "PruneContext"]

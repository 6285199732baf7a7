"""SPA-style structured pruning at the ONNX graph level.

``prune(model, ratio=...)`` finds every group of coupled channels (``analyze``), scores each with a
criterion (``edgekit.prune.criteria``), removes the weakest and rewrites every tensor a group
touches, in one ``ModelProto -> ModelProto`` pass. See ``groups`` for the nouns, ``handlers`` (the
table) and ``ops/`` (one module per op family) for how each op couples channels, ``analysis`` for
the marking pass, ``selection`` for the choice of channels, ``apply`` for the rewrite, ``obspa/``
for the data-free criteria, ``torch/`` for mapping decisions back to PyTorch.
"""

from edgekit.prune.context import PruneContext
from edgekit.prune.core import PruneReport, analyze, prune

__all__ = ["prune", "analyze", "PruneReport", "PruneContext"]

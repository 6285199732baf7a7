"""The op handlers by family; :mod:`edgekit.prune.handlers` holds the ``op_type`` table over them.

``_base`` (annotations, the input-0 guard, shape readers), ``weights`` (from an input to the
stored constant that is cut), ``linear`` (Conv, Gemm, MatMul), ``pointwise`` (activations,
element-wise, pooling, Softmax), ``norm`` (normalisations, reductions), ``layout`` (reshapes,
slicing, concatenation) and ``attention`` (reshapes around attention heads).
"""

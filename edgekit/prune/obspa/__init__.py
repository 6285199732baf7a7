"""``obspa``: prune after training with neither fine-tuning nor data (the ``obspa*`` criteria).

Per coupled channel group, a channel's score is the output error its removal leaves after the best
Optimal-Brain-Surgeon compensation, and the kept channels' consumers absorb that compensation
before the cut. Quantised graphs (QDQ or integer ops) are refused: the update moves weights off
their INT8 grid; prune the float model, then quantise. The modules, lowest first:

* ``moments`` / ``obs``: plain NumPy maths (Gaussian moments through activations; OBS order,
  reconstruction and compensation of one consumer);
* ``layers``: the graph's constants and channel-mixing consumers; ``analytic``: closed-form
  moments from BatchNorm statistics; ``synthetic`` / ``priors`` / ``batch`` / ``measure``: the
  statistics pass on synthetic (smooth noise, or image priors chosen by the network when BN is
  gone) or calibration inputs; ``stats``: :class:`ObspaStats`, which combines them;
  ``reliability``: the report's estimate of a data-free prune without BN;
* ``compensate``: group scores and weight updates; ``seq``: obspa-seq's sequential refit;
  ``criterion``: the criteria the pruner registers.
"""

from edgekit.prune.obspa.batch import free_batch_shapes, with_dynamic_batch
from edgekit.prune.obspa.compensate import (
    ConstUpdate,
    GroupDecision,
    group_scores,
    group_update,
    stats_precision,
)
from edgekit.prune.obspa.layers import Consumer, Moments
from edgekit.prune.obspa.measure import ort_threads, shrink_cov
from edgekit.prune.obspa.stats import DEFAULT_ALPHA, DEFAULT_DAMP, DEFAULT_SPATIAL, ObspaStats, check_not_quantized
from edgekit.prune.obspa.synthetic import (
    DEFAULT_SYNTHETIC,
    DEFAULT_SYNTHETIC_SMOOTH,
    batch_stat_bn,
    bn_batch_stat_names,
    checked_calib,
    has_token_norm,
    input_dtype,
    samples_within,
    smooth_noise,
)

__all__ = [
    "ObspaStats", "Moments", "Consumer", "GroupDecision", "ConstUpdate", "group_scores", "group_update",
    "stats_precision", "check_not_quantized", "with_dynamic_batch",
    "free_batch_shapes", "smooth_noise", "has_token_norm", "batch_stat_bn", "bn_batch_stat_names",
    "input_dtype", "checked_calib", "samples_within", "ort_threads", "shrink_cov",
    "DEFAULT_ALPHA", "DEFAULT_DAMP", "DEFAULT_SPATIAL", "DEFAULT_SYNTHETIC", "DEFAULT_SYNTHETIC_SMOOTH",
]

"""Torch-level sparsity: global magnitude pruning (one-shot or gradual), N:M masks in TensorRT's
layout, and mask-preserving fine-tuning (plain re-masking, or progressive gradient flow).

Masks are plain bool tensors keyed by module name (the module's ``weight``). Every helper here that
fits ``edgekit.models.digits.train(after_step=...)`` is a callable ``hook(model)`` that runs after
each optimizer step.
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from edgekit.errors import InputError, require
from edgekit.sparsity.nm import nm_mask, nm_violations, validate_nm
from edgekit.sparsity.report import LayerSparsity, SparsityReport


def _torch():
    return require("torch", "torch", "prune PyTorch models")


def prunable_layers(model, exclude: Sequence[str] = ()) -> List[Tuple[str, object]]:
    """(name, module) for every Conv1d/2d/3d and Linear with a weight, in module order."""
    torch = _torch()
    nn = torch.nn
    out = []
    for name, mod in model.named_modules():
        if name in exclude:
            continue
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and getattr(mod, "weight", None) is not None:
            out.append((name, mod))
    return out


def _module_kind(mod) -> str:
    return type(mod).__name__


# ---------------------------------------------------------------------------------------------
# N:M masks
# ---------------------------------------------------------------------------------------------

def nm_applicability(mod, m: int) -> Optional[str]:
    """Why N:M does not apply to this module (None when it does).

    Conv weights are ``[K, C/groups, *k]``; TensorRT's sparse kernels cover dense (groups=1) convs
    only, so grouped and depthwise convs are skipped. The reduction length (C, or Linear's
    in_features) must be a multiple of ``m``.
    """
    torch = _torch()
    nn = torch.nn
    if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        if mod.groups != 1:
            kind = "depthwise" if mod.groups == mod.in_channels else "grouped"
            return f"{kind} conv (groups={mod.groups}): TensorRT's 2:4 kernels cover dense convs only"
        c = mod.weight.shape[1]
        if c % m:
            return f"input channels C={c} not a multiple of {m}"
        return None
    if isinstance(mod, nn.Linear):
        c = mod.weight.shape[1]
        if c % m:
            return f"in_features={c} not a multiple of {m}"
        return None
    return f"{_module_kind(mod)} is not a Conv/Linear"


def nm_masks(model, n: int = 2, m: int = 4, exclude: Sequence[str] = ()) -> Tuple[Dict[str, object], SparsityReport]:
    """Compute N:M keep-masks (largest magnitude) for every applicable Conv/Linear weight.

    Groups run along axis 1 of the torch weight (Conv input channels at each (k, r, s); Linear
    in_features). Layers where the pattern does not apply are listed as ``skipped`` with a reason,
    never masked along some other axis.
    """
    torch = _torch()
    validate_nm(n, m)
    masks: Dict[str, object] = {}
    report = SparsityReport(pattern=f"{n}:{m}")
    for name, mod in prunable_layers(model, exclude):
        w = mod.weight.detach()
        shape = tuple(w.shape)
        why = nm_applicability(mod, m)
        if why is not None:
            report.layers.append(LayerSparsity(name, _module_kind(mod), shape, 1, "skipped", why))
            continue
        keep = nm_mask(w.cpu().numpy(), n, m, axis=1)
        masks[name] = torch.from_numpy(keep).to(w.device)
        groups, _ = nm_violations(keep, n, m, axis=1)
        report.layers.append(LayerSparsity(name, _module_kind(mod), shape, 1, "ok", groups=groups,
                                           zero_fraction=float(1.0 - keep.mean()), source="torch"))
    return masks, report


def apply_nm(model, n: int = 2, m: int = 4, exclude: Sequence[str] = ()) -> Tuple["MaskSet", SparsityReport]:
    """One-shot N:M magnitude pruning in place. Returns the masks (a re-masking hook) and a report."""
    masks, report = nm_masks(model, n, m, exclude)
    ms = MaskSet(masks)
    ms.apply(model)
    return ms, report


# ---------------------------------------------------------------------------------------------
# global magnitude pruning
# ---------------------------------------------------------------------------------------------

def global_magnitude_masks(model, sparsity: float, max_layer_sparsity: float = 0.9,
                           exclude: Sequence[str] = (), previous: Optional[Dict[str, object]] = None,
                           ) -> Tuple[Dict[str, object], SparsityReport]:
    """Masks that prune the ``sparsity`` fraction of all Conv/Linear weights with ONE magnitude
    threshold across layers, except that no layer loses more than ``max_layer_sparsity`` of its
    weights (the floor that keeps a layer from collapsing).

    The cap is enforced by water-filling: layers the global threshold would over-prune are pinned at
    the cap and the rest of the budget is re-spread, with a new common threshold, over the other
    layers until no layer exceeds the cap. ``previous`` masks (gradual pruning) stay pruned.
    """
    torch = _torch()
    if not 0.0 <= sparsity < 1.0:
        raise InputError(f"sparsity must be in [0, 1), got {sparsity}")
    if not 0.0 < max_layer_sparsity <= 1.0:
        raise InputError(f"max_layer_sparsity must be in (0, 1], got {max_layer_sparsity}")
    if sparsity > max_layer_sparsity:
        raise InputError(f"global sparsity {sparsity} exceeds the per-layer cap {max_layer_sparsity}",
                         hint="raise max_layer_sparsity or lower the target")
    layers = prunable_layers(model, exclude)
    if not layers:
        raise InputError("the model has no Conv/Linear weights to prune")
    mags = []
    for name, mod in layers:
        a = mod.weight.detach().abs().cpu().numpy().astype(np.float64).ravel()
        if previous is not None and name in previous:
            # already-pruned weights rank below everything else so masks only ever grow
            a = np.where(previous[name].cpu().numpy().ravel(), a, -1.0)
        mags.append(a)
    sizes = np.array([a.size for a in mags])
    caps = np.floor(sizes * max_layer_sparsity).astype(np.int64)
    budget_total = int(round(sparsity * sizes.sum()))

    pruned_counts = np.zeros(len(layers), dtype=np.int64)
    capped = np.zeros(len(layers), dtype=bool)
    while True:
        free = [i for i in range(len(layers)) if not capped[i]]
        budget = budget_total - int(caps[capped].sum())
        pruned_counts[capped] = caps[capped]
        if not free or budget <= 0:
            for i in free:
                pruned_counts[i] = 0
            break
        cat = np.concatenate([mags[i] for i in free])
        owner = np.concatenate([np.full(mags[i].size, i) for i in free])
        budget = min(budget, cat.size)
        # exactly `budget` smallest entries (stable order makes ties deterministic)
        chosen = np.argsort(cat, kind="stable")[:budget]
        counts = np.bincount(owner[chosen], minlength=len(layers))
        over = [i for i in free if counts[i] > caps[i]]
        if not over:
            for i in free:
                pruned_counts[i] = counts[i]
            break
        capped[over] = True

    masks: Dict[str, object] = {}
    report = SparsityReport(pattern=f"global-magnitude {sparsity:.3f} (cap {max_layer_sparsity:.2f})")
    for i, (name, mod) in enumerate(layers):
        k = int(pruned_counts[i])
        keep = np.ones(sizes[i], dtype=bool)
        if k:
            keep[np.argsort(mags[i], kind="stable")[:k]] = False
        keep = keep.reshape(tuple(mod.weight.shape))
        masks[name] = torch.from_numpy(keep).to(mod.weight.device)
        report.layers.append(LayerSparsity(name, _module_kind(mod), tuple(mod.weight.shape), None, "ok",
                                           reason="capped" if capped[i] else "",
                                           zero_fraction=float(1.0 - keep.mean()), source="torch"))
    return masks, report


def global_magnitude_prune(model, sparsity: float, max_layer_sparsity: float = 0.9,
                           exclude: Sequence[str] = ()) -> Tuple["MaskSet", SparsityReport]:
    """One-shot global magnitude pruning in place; returns the masks (a re-masking hook) and a report."""
    masks, report = global_magnitude_masks(model, sparsity, max_layer_sparsity, exclude)
    ms = MaskSet(masks)
    ms.apply(model)
    return ms, report


def cubic_sparsity(step: int, final: float, begin: int, end: int, initial: float = 0.0) -> float:
    """Zhu & Gupta's gradual schedule: s(t) = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0))^3.

    Prunes fast early (when many weights are redundant) and slowly near the end, so the network has
    time to recover before the final sparsity is reached.
    """
    if end <= begin:
        return final if step >= begin else initial
    if step <= begin:
        return initial
    if step >= end:
        return final
    frac = (step - begin) / float(end - begin)
    return final + (initial - final) * (1.0 - frac) ** 3


class MaskSet:
    """Keep-masks keyed by module name; ``apply`` zeroes the pruned weights in place.

    Use the instance itself as the ``after_step`` hook of a training loop: re-applying after every
    optimizer step undoes what momentum or weight decay wrote into pruned positions, so the masks
    survive fine-tuning.
    """

    def __init__(self, masks: Dict[str, object]):
        self.masks = dict(masks)

    def apply(self, model) -> None:
        torch = _torch()
        mods = dict(model.named_modules())
        with torch.no_grad():
            for name, keep in self.masks.items():
                if name not in mods:
                    raise InputError(f"mask refers to layer '{name}' which the model does not have")
                w = mods[name].weight
                w.mul_(keep.to(device=w.device, dtype=w.dtype))

    __call__ = apply

    def sparsity(self) -> float:
        total = sum(int(k.numel()) for k in self.masks.values())
        kept = sum(int(k.sum()) for k in self.masks.values())
        return 1.0 - kept / total if total else 0.0


class GradualMagnitudePruner:
    """Gradual global magnitude pruning as an ``after_step`` hook (Zhu & Gupta's cubic schedule).

    Every ``every`` steps between ``begin`` and ``end`` the masks are recomputed for the scheduled
    sparsity (previously pruned weights stay pruned); after every step the current masks are
    re-applied. ``masks`` holds the latest ``MaskSet``.
    """

    def __init__(self, final_sparsity: float, end: int, begin: int = 0, every: int = 10,
                 max_layer_sparsity: float = 0.9, initial_sparsity: float = 0.0, exclude: Sequence[str] = ()):
        if every < 1:
            raise InputError("every must be >= 1")
        self.final = final_sparsity
        self.initial = initial_sparsity
        self.begin, self.end, self.every = begin, end, every
        self.cap = max_layer_sparsity
        self.exclude = tuple(exclude)
        self.step = 0
        self.masks: Optional[MaskSet] = None
        self.history: List[Tuple[int, float]] = []

    def current_target(self) -> float:
        return cubic_sparsity(self.step, self.final, self.begin, self.end, self.initial)

    def __call__(self, model) -> None:
        self.step += 1
        due = self.step >= self.begin and ((self.step - self.begin) % self.every == 0 or self.step >= self.end)
        if due and (not self.history or self.history[-1][1] < self.final):
            target = self.current_target()
            prev = self.masks.masks if self.masks is not None else None
            masks, _ = global_magnitude_masks(model, target, self.cap, self.exclude, previous=prev)
            self.masks = MaskSet(masks)
            self.history.append((self.step, target))
        if self.masks is not None:
            self.masks.apply(model)


# ---------------------------------------------------------------------------------------------
# progressive gradient flow for N:M
# ---------------------------------------------------------------------------------------------

def _decayed_gradient_fn():
    torch = _torch()

    class _MaskedWeight(torch.autograd.Function):
        """Forward: w * mask. Backward: full gradient on kept weights, ``alpha`` times the gradient
        on pruned ones (a straight-through estimator whose leak to pruned weights is scaled)."""

        @staticmethod
        def forward(ctx, w, keep, alpha):
            ctx.save_for_backward(keep)
            ctx.alpha = float(alpha)
            return w * keep

        @staticmethod
        def backward(ctx, grad):
            (keep,) = ctx.saved_tensors
            scale = keep + (1.0 - keep) * ctx.alpha
            return grad * scale, None, None

    return _MaskedWeight


class ProgressiveNMTrainer:
    """N:M fine-tuning with progressively decaying gradient flow to pruned weights.

    Idea (after Bambhaniya et al., "Progressive Gradient Flow for Robust N:M Sparsity Training"):
    a hard mask from the first step freezes an early, often poor choice of which weights survive;
    letting pruned weights keep receiving (scaled) dense gradients lets them grow back and win their
    group. Here the forward pass always uses the N:M-masked weight, the dense weight is what the
    optimizer updates, the gradient reaching pruned positions is multiplied by ``alpha(t)`` that
    decays from ``alpha_start`` to 0 over ``total_steps`` (cosine or linear), and the mask is
    recomputed from the dense weights every ``mask_every`` steps. When ``alpha`` reaches 0 the mask is
    effectively fixed. ``finalize()`` bakes ``w * mask`` into the weights and removes the hooks.

    Usage::

        pgf = ProgressiveNMTrainer(model, total_steps=steps)   # attaches the parametrisation
        digits.train(model, X, y, epochs=..., after_step=pgf)  # optimizer made after attaching
        masks, report = pgf.finalize()
    """

    def __init__(self, model, total_steps: int, n: int = 2, m: int = 4, alpha_start: float = 1.0,
                 decay: str = "cosine", mask_every: int = 1, exclude: Sequence[str] = ()):
        torch = _torch()
        from torch.nn.utils import parametrize  # lazy: torch is optional

        if decay not in ("cosine", "linear"):
            raise InputError(f"unknown decay '{decay}'", hint="use 'cosine' or 'linear'")
        if total_steps < 1 or mask_every < 1:
            raise InputError("total_steps and mask_every must be >= 1")
        self.model, self.n, self.m = model, n, m
        self.total_steps, self.alpha_start, self.decay, self.mask_every = total_steps, alpha_start, decay, mask_every
        self.step = 0
        masks, self.report = nm_masks(model, n, m, exclude)
        self._fn = _decayed_gradient_fn()
        self._params: Dict[str, object] = {}
        mods = dict(model.named_modules())
        trainer = self

        class _NMParam(torch.nn.Module):
            def __init__(self, keep):
                super().__init__()
                self.register_buffer("keep", keep.float())

            def forward(self, w):
                return trainer._fn.apply(w, self.keep.to(w.dtype), trainer.alpha())

        for name, keep in masks.items():
            p = _NMParam(keep)
            parametrize.register_parametrization(mods[name], "weight", p)
            self._params[name] = p

    def alpha(self) -> float:
        t = min(self.step, self.total_steps) / float(self.total_steps)
        if self.decay == "linear":
            return self.alpha_start * (1.0 - t)
        return self.alpha_start * 0.5 * (1.0 + math.cos(math.pi * t))

    def __call__(self, model=None) -> None:
        torch = _torch()
        self.step += 1
        if self.alpha() > 0 and self.step % self.mask_every == 0:
            mods = dict(self.model.named_modules())
            with torch.no_grad():
                for name, p in self._params.items():
                    dense = mods[name].parametrizations.weight.original
                    keep = nm_mask(dense.detach().cpu().numpy(), self.n, self.m, axis=1)
                    p.keep.copy_(torch.from_numpy(keep).to(p.keep))

    def finalize(self) -> Tuple[MaskSet, SparsityReport]:
        """Remove the parametrisation, leaving ``weight = dense * mask``; returns the fixed masks."""
        from torch.nn.utils import parametrize  # lazy: torch is optional

        mods = dict(self.model.named_modules())
        masks = {}
        for name, p in self._params.items():
            masks[name] = p.keep.bool().clone()
            parametrize.remove_parametrizations(mods[name], "weight", leave_parametrized=False)
        ms = MaskSet(masks)
        ms.apply(self.model)
        self._params = {}
        return ms, self.report


def check_nm_torch(model, n: int = 2, m: int = 4) -> SparsityReport:
    """Per Conv/Linear layer: does ``weight`` hold the N:M pattern in TensorRT's layout?"""
    validate_nm(n, m)
    report = SparsityReport(pattern=f"{n}:{m}")
    for name, mod in prunable_layers(model):
        w = mod.weight.detach().cpu().numpy()
        why = nm_applicability(mod, m)
        if why is not None:
            report.layers.append(LayerSparsity(name, _module_kind(mod), tuple(w.shape), 1, "skipped", why,
                                               zero_fraction=float((w == 0).mean()), source="torch"))
            continue
        groups, bad = nm_violations(w != 0, n, m, axis=1)
        report.layers.append(LayerSparsity(name, _module_kind(mod), tuple(w.shape), 1,
                                           "ok" if bad == 0 else "violates", groups=groups, bad_groups=bad,
                                           zero_fraction=float((w == 0).mean()), source="torch"))
    return report


def check_nm_state_dict(state: Dict[str, object], n: int = 2, m: int = 4) -> SparsityReport:
    """Checker for a bare state_dict (no module types): 2-D weights are Linear-like, 3-5-D are
    conv-like; a conv weight with one input channel per group is assumed depthwise and skipped."""
    validate_nm(n, m)
    report = SparsityReport(pattern=f"{n}:{m}")
    for key, t in state.items():
        if not key.endswith("weight") or not hasattr(t, "dim") or t.dim() < 2 or not t.is_floating_point():
            continue
        w = t.detach().cpu().numpy()
        name = key[: -len(".weight")] if key.endswith(".weight") else key
        op = "Linear" if w.ndim == 2 else f"Conv{w.ndim - 2}d"
        why = None
        if w.ndim > 2 and w.shape[1] == 1:
            why = "one input channel per group (depthwise or C=1): pattern does not apply"
        elif w.shape[1] % m:
            why = f"reduction dim {w.shape[1]} not a multiple of {m}"
        if why:
            report.layers.append(LayerSparsity(name, op, tuple(w.shape), 1, "skipped", why,
                                               zero_fraction=float((w == 0).mean()), source="state_dict"))
            continue
        groups, bad = nm_violations(w != 0, n, m, axis=1)
        report.layers.append(LayerSparsity(name, op, tuple(w.shape), 1, "ok" if bad == 0 else "violates",
                                           groups=groups, bad_groups=bad, zero_fraction=float((w == 0).mean()),
                                           source="state_dict"))
    return report


def recalibrate_bn(model, batches: Iterable) -> int:
    """Re-estimate BatchNorm running statistics after pruning (forward passes only, no gradients).

    Zeroing half the weights shifts every conv's output distribution, so the stored BN means and
    variances are stale; refreshing them is cheap and recovers much of the one-shot loss before any
    fine-tuning. Returns the number of batches used.
    """
    torch = _torch()
    bns = [mod for mod in model.modules() if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    saved = [(bn, bn.momentum) for bn in bns]
    was_training = model.training
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None          # cumulative average over all batches
    model.train()
    seen = 0
    try:
        with torch.no_grad():
            for batch in batches:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(x)
                seen += 1
    finally:
        for bn, mom in saved:
            bn.momentum = mom
        model.train(was_training)
    if seen == 0:
        raise InputError("no batches given to recalibrate BatchNorm")
    return seen

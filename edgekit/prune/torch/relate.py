"""Matching the stored tensors of the ONNX graph to the ``state_dict`` entries they came from.

Every pruned stored tensor (initializer or ``Constant``) is traced back to a module tensor, with the
relation between the two (:class:`Rel`):

* **scope** — both PyTorch exporters record which module a node was called from (TorchScript in the
  node name, ``/layer1/layer1.0/conv1/Conv``; the dynamo exporter in the ``pkg.torch.onnx.name_scopes``
  metadata). A tensor whose value equals a tensor owned by that module is mapped to it. This is what
  tells de-duplicated copies apart (all LayerNorm weights of a fresh model are ones; the exporters
  keep one initializer and every layer reads it).
* **name** — initializers named after the parameter (``fc.weight``; dynamo's ``p_fc_weight``).
* **value** — an initializer with a generated name (``onnx::MatMul_123``, ``val_12``) is matched
  against the module's tensors by value: equal, equal after transposing (a Linear exported as MatMul
  stores ``weight.T``), equal after broadcasting (a class token expanded to the batch), or equal up to
  a per-channel factor (a conv weight with the following BatchNorm folded into it).
* **folded BatchNorm** — when the exporter folded a BN into the conv before it (dynamo always does;
  TorchScript in eval mode with constant folding), the BN's parameters and running statistics are
  not in the graph. The BN that reads the conv's output directly is found by running the module
  once with forward hooks (:func:`find_followers`). The folded bias of such a conv maps to the conv's own
  bias (if any) and to the BN.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from edgekit.errors import TorchMappingError
from edgekit.prune.torch.export import common_depth, node_scope, norm_name, owner, stored_name

# input slot -> parameter name, for the ops whose inputs are a layer's parameters
SLOT_NAMES = {
    "Conv": {1: ("weight",), 2: ("bias",)},
    "ConvTranspose": {1: ("weight",), 2: ("bias",)},
    "Gemm": {1: ("weight",), 2: ("bias",)},
    "MatMul": {1: ("weight",), 0: ("weight",)},
    "BatchNormalization": {1: ("weight",), 2: ("bias",), 3: ("running_mean",), 4: ("running_var",)},
    "LayerNormalization": {1: ("weight",), 2: ("bias",)},
    "GroupNormalization": {1: ("weight",), 2: ("bias",)},
    "InstanceNormalization": {1: ("weight",), 2: ("bias",)},
    "Add": {0: ("bias",), 1: ("bias",)},
}
BIAS_OPS = ("Conv", "ConvTranspose", "Gemm")


# ---- value relations ----------------------------------------------------------------------------

@dataclass
class Rel:
    """How a stored ONNX tensor ``A`` relates to a module tensor ``P``.

    ``perm[i]``: the module axis behind ONNX axis ``i`` (None: a size-1 axis the module tensor lacks).
    Kinds: ``same`` (A == P permuted), ``bcast`` (A == P permuted and broadcast), ``reshape`` (A == P
    with size-1 axes added or dropped), ``scaled`` (A == P permuted times ``scale`` along ``axis``),
    ``named`` (matched by name, value relation unknown), ``bias`` (folded bias of the layer ``layer``:
    cut like the layer's output channels), ``const`` (one repeated value made by the exporter: no
    module tensor).
    """

    key: Optional[str]
    perm: Tuple[int, ...]
    kind: str
    scale: Optional[np.ndarray] = None
    axis: int = 0
    layer: Optional[str] = None      # for kind "bias": the layer (module name) the bias belongs to


def perms(ashape, pshape, allow_bcast: bool):
    """Axis permutations ``perm`` with ``pshape[perm[i]]`` compatible with ``ashape[i]``."""
    n = len(ashape)
    if len(pshape) != n:
        return
    cands = [tuple(range(n)), tuple(range(n))[::-1]]
    if n <= 4:
        cands += [p for p in itertools.permutations(range(n)) if p not in cands]
    for p in cands:
        ok = True
        for i in range(n):
            d = pshape[p[i]]
            if d != ashape[i] and not (allow_bcast and d == 1):
                ok = False
                break
        if ok:
            yield p


def _tol(a: np.ndarray) -> float:
    return 1e-6 * max(1.0, float(np.abs(a).max()) if a.size else 1.0)


def exact(a: np.ndarray, p: np.ndarray) -> Optional[Rel]:
    """``A`` equals ``P`` permuted, broadcast, or with size-1 axes added or dropped; else None."""
    for perm in perms(a.shape, p.shape, allow_bcast=True):
        q = np.transpose(p, perm)
        if q.shape != a.shape:
            try:
                q = np.broadcast_to(q, a.shape)
            except ValueError:
                continue
            kind = "bcast"
        else:
            kind = "same"
        k = min(16, a.size)
        if not np.allclose(a.flat[:k], q.flat[:k], rtol=1e-5, atol=_tol(a)):
            continue  # cheap probe first
        if np.allclose(a, q, rtol=1e-5, atol=_tol(a)):
            return Rel(None, perm, kind)
    if a.ndim != p.ndim and a.size == p.size:
        # the same values with size-1 axes added or dropped (GroupNorm's affine as [C, 1, 1])
        ia = [i for i, d in enumerate(a.shape) if d != 1]
        ip = [j for j, d in enumerate(p.shape) if d != 1]
        if len(ia) == len(ip) and ia:
            r = exact(a.reshape([a.shape[i] for i in ia]), p.reshape([p.shape[j] for j in ip]))
            if r is not None and r.kind == "same":
                perm: List[Optional[int]] = [None] * a.ndim
                for pos, i in enumerate(ia):
                    perm[i] = ip[r.perm[pos]]
                return Rel(None, tuple(perm), "reshape")
    return None


def scaled(a: np.ndarray, p: np.ndarray) -> Optional[Rel]:
    """A == s[c] * P along one axis (a BatchNorm folded into the layer). P as stored, or transposed."""
    if a.size < 2 or a.ndim == 0:
        return None
    n = a.ndim
    for perm in (tuple(range(n)), tuple(range(n))[::-1]) if n > 1 else (tuple(range(n)),):
        if tuple(p.shape[i] for i in perm) != a.shape:
            continue
        q = np.transpose(p, perm)
        for ax in range(n):
            if a.shape[ax] < 2 or a.size == a.shape[ax]:
                continue
            am = np.moveaxis(a, ax, 0).reshape(a.shape[ax], -1)
            qm = np.moveaxis(q, ax, 0).reshape(a.shape[ax], -1)
            # cheap probe on a few columns before the full check
            k = min(8, am.shape[1])
            if _fit(am[:, :k], qm[:, :k]) is None:
                continue
            s = _fit(am, qm)
            if s is not None:
                return Rel(None, perm, "scaled", scale=s, axis=ax)
    return None


def _fit(am: np.ndarray, qm: np.ndarray) -> Optional[np.ndarray]:
    """Per-row factor ``s`` with ``am == s[:, None] * qm``, or None."""
    am = am.astype(np.float64)
    qm = qm.astype(np.float64)
    den = (qm * qm).sum(1)
    s = np.where(den > 0, (am * qm).sum(1) / np.where(den > 0, den, 1.0), 0.0)
    err = np.abs(am - s[:, None] * qm).max() if am.size else 0.0
    if err <= 1e-4 * max(1e-12, float(np.abs(am).max()) if am.size else 0.0):
        return s
    return None


def _fingerprint(a: np.ndarray) -> Tuple[float, float]:
    a = np.asarray(a, dtype=np.float64)
    return float(a.sum()), float((a * a).sum())


# ---- module structure ---------------------------------------------------------------------------

def find_followers(module, example) -> Dict[str, str]:
    """``{conv or linear: batchnorm}`` for every BatchNorm that reads a layer's output directly
    (the pairs an exporter folds), found by running the module once with forward hooks."""
    import torch  # lazy: torch is optional
    from torch import nn

    produced: Dict[int, Tuple[str, object]] = {}
    pairs: Dict[str, str] = {}
    handles = []
    layer_types = (nn.modules.conv._ConvNd, nn.Linear)

    def hook(name):
        def fn(mod, inputs, output):
            if isinstance(mod, layer_types) and torch.is_tensor(output):
                produced[id(output)] = (name, output)  # keep the tensor alive: ids stay unique
            elif isinstance(mod, nn.modules.batchnorm._BatchNorm) and inputs and torch.is_tensor(inputs[0]):
                src = produced.get(id(inputs[0]))
                if src is not None and src[1] is inputs[0]:
                    pairs.setdefault(src[0], name)
        return fn

    for name, mod in module.named_modules():
        if isinstance(mod, layer_types + (nn.modules.batchnorm._BatchNorm,)):
            handles.append(mod.register_forward_hook(hook(name)))
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(example)
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    return pairs


# ---- the matcher --------------------------------------------------------------------------------

class Mapper:
    """The float state_dict of one module, indexed for relating ONNX tensors of ``dg`` to it."""

    def __init__(self, module, dg, example=None):
        self.module = module
        self.dg = dg
        self.example = example
        self.sd = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()
                   if hasattr(v, "is_floating_point") and v.is_floating_point()}
        self.modules = dict(module.named_modules())
        self.by_norm: Dict[str, str] = {}
        for k in self.sd:
            self.by_norm.setdefault(norm_name(k), k)
        self.fp = {k: _fingerprint(v) for k, v in self.sd.items()}
        self.used: Dict[str, str] = {}
        self._followers: Optional[Dict[str, str]] = None

    def followers(self) -> Dict[str, str]:
        """:func:`find_followers` of the module, computed once (empty without an example input)."""
        if self._followers is None:
            self._followers = find_followers(self.module, self.example) if self.example is not None else {}
        return self._followers

    def relate_all(self, tensor: str, node, rels: Dict[str, List[Rel]]) -> Optional[List[Rel]]:
        """One relation per input slot of ``node`` that reads ``tensor`` (exporters let one
        de-duplicated initializer feed e.g. both the bias and the running mean of a BatchNorm)."""
        out = []
        for slot in self.slots(node, tensor) or [-1]:
            r = self.relate(tensor, node, slot, rels)
            if r is None:
                return None
            if all((r.key, r.kind, r.layer) != (q.key, q.kind, q.layer) for q in out):
                out.append(r)
        return out

    def relate(self, tensor: str, node, slot: int, rels: Dict[str, List[Rel]]) -> Optional[Rel]:
        """The relation of one stored tensor, read by ``node`` at input ``slot``, or None."""
        a = np.asarray(self.dg.consts[tensor])
        if not np.issubdtype(a.dtype, np.floating):
            return None
        op = getattr(node, "op_type", "")
        scope = node_scope(node, self.modules) if node is not None else None
        slot_names = SLOT_NAMES.get(op, {}).get(slot, ())
        if op in BIAS_OPS and slot == 2:
            bias = self._folded_bias(a, node, rels)
            if bias is not None:
                return bias
        if scope is not None:
            r = self._by_scope(a, scope, slot_names)
            if r is not None:
                return r
        r = self._by_name(a, tensor, op, slot_names)
        if r is not None:
            return r
        return self._by_unique_value(a, tensor, scope, slot_names)

    def _folded_bias(self, a: np.ndarray, node, rels: Dict[str, List[Rel]]) -> Optional[Rel]:
        """The folded bias of a Conv/Gemm: follows the layer's weight, never matched by value alone."""
        wrel = next((r for r in rels.get(self.weight_tensor(node), ()) if r.key is not None), None)
        if wrel is None:
            return None
        layer = owner(wrel.key)
        bkey = f"{layer}.bias" if layer else "bias"
        if bkey in self.sd and self.sd[bkey].shape == a.shape and wrel.kind != "scaled" \
                and exact(a, self.sd[bkey]) is not None:
            return Rel(bkey, (0,), "same")
        return Rel(bkey if bkey in self.sd else None, (0,), "bias", layer=layer)

    def _by_scope(self, a: np.ndarray, scope: str, slot_names) -> Optional[Rel]:
        """A tensor of the module this node came from (tells de-duplicated copies apart)."""
        own = [k for k in self.sd if owner(k) == scope]
        hits = [(k, r) for k in own for r in [exact(a, self.sd[k])] if r is not None]
        if len(hits) > 1 and slot_names:
            named = [h for h in hits if h[0].rsplit(".", 1)[-1] in slot_names]
            hits = named or hits
        if len(hits) == 1:
            return self._done(hits[0][0], hits[0][1])
        return None

    def _by_name(self, a: np.ndarray, tensor: str, op: str, slot_names) -> Optional[Rel]:
        """The parameter the initializer is named after (not for a private copy of a shared tensor:
        the name belongs to its first reader)."""
        base = stored_name(self.dg, tensor)
        key = base if base in self.sd else self.by_norm.get(norm_name(base))
        leaf = key.rsplit(".", 1)[-1] if key else ""
        op_names = {n for ns in SLOT_NAMES.get(op, {}).values() for n in ns}
        if key is None or base != tensor or (slot_names and leaf in op_names and leaf not in slot_names):
            return None
        p = self.sd[key]
        r = exact(a, p) or scaled(a, p)
        if r is None:
            perm = next(perms(a.shape, p.shape, allow_bcast=True), None)
            if perm is not None:
                r = Rel(None, perm, "named")
        return self._done(key, r) if r is not None else None

    def _by_unique_value(self, a: np.ndarray, tensor: str, scope: Optional[str], slot_names) -> Optional[Rel]:
        """Equal (maybe transposed / broadcast) to exactly one tensor; ties broken by scope.

        A tensor of one repeated value says nothing about where it came from: it is a constant
        the exporter made (InstanceNormalization's unit scale inside a GroupNorm), and the
        module's size attributes carry it.
        """
        if a.size and float(np.ptp(a)) == 0.0:
            return Rel(None, tuple(range(a.ndim)), "const")
        hits = self._by_value(a, equal=True)
        if not hits:
            hits = self._by_value(a, equal=False)
        if not hits:
            return None
        if len(hits) > 1:
            best = max(common_depth(scope, owner(k)) for k, _ in hits)
            hits = [h for h in hits if common_depth(scope, owner(h[0])) == best]
        if len(hits) > 1 and slot_names:
            hits = [h for h in hits if h[0].rsplit(".", 1)[-1] in slot_names] or hits
        if len(hits) > 1:
            fresh = [h for h in hits if h[0] not in self.used]
            if len(fresh) == 1:
                hits = fresh
        if len(hits) > 1:
            raise TorchMappingError(
                f"pruned ONNX tensor {stored_name(self.dg, tensor)} matches several module tensors by value "
                f"({', '.join(k for k, _ in hits[:4])}) and its node does not say which",
                hint="export with the TorchScript or dynamo exporter (they record module scopes), or "
                     "prune the ONNX model instead")
        return self._done(*hits[0])

    def _done(self, key: str, r: Rel) -> Rel:
        r.key = key
        self.used.setdefault(key, "")
        return r

    def _by_value(self, a: np.ndarray, equal: bool):
        """``(key, relation)`` of every module tensor equal to ``a`` (``equal``) or equal up to a
        per-channel factor."""
        out = []
        fa = _fingerprint(a) if equal else None
        for k, p in self.sd.items():
            if p.ndim != a.ndim and (not equal or p.size != a.size):
                continue
            if equal:
                if p.size == a.size:
                    fs, fq = self.fp[k]
                    if abs(fs - fa[0]) > 1e-4 * max(1.0, abs(fq) ** 0.5 * 10) or \
                            abs(fq - fa[1]) > 1e-4 * max(1.0, fq):
                        continue
                elif not any(True for _ in perms(a.shape, p.shape, allow_bcast=True)):
                    continue
                r = exact(a, p)
            else:
                if p.size != a.size:
                    continue
                r = scaled(a, p)
            if r is not None:
                out.append((k, r))
        return out

    def slots(self, node, tensor: str) -> List[int]:
        """The input slots of ``node`` that read the stored tensor ``tensor``."""
        if node is None:
            return []
        priv = getattr(self.dg, "private", {}).get(tensor)
        if priv is not None:
            return [int(i) for i in priv[1]]
        return [i for i, v in enumerate(node.input) if v == tensor or self._through(v) == tensor]

    def slot(self, node, tensor: str) -> int:
        """The first slot of ``node`` reading ``tensor`` (-1: none)."""
        s = self.slots(node, tensor)
        return s[0] if s else -1

    def _through(self, name: str) -> str:
        """The stored tensor behind ``name`` (through Identity / Transpose / Cast / ... chains)."""
        cur = name
        for _ in range(8):
            if cur in self.dg.consts:
                return cur
            prod = self.dg.producer.get(cur)
            if prod is None or not prod.input:
                return cur
            cur = prod.input[0]
        return cur

    def weight_tensor(self, node) -> Optional[str]:
        """The stored weight (input 1) of a layer node, its private copy when it has one."""
        if node is None or len(node.input) < 2:
            return None
        w = self._through(node.input[1])
        for virt, (pnode, slots) in getattr(self.dg, "private", {}).items():
            if pnode is node and 1 in slots:
                return virt
        return w

"""Map a graph-level pruning decision back to a PyTorch ``nn.Module`` ("before training / fine-tuning").

The pruner works on ONNX; a user who wants to fine-tune needs the same cut in the ``nn.Module``.
Every pruned stored tensor of the ONNX graph (initializer or ``Constant``) is traced back to the
``state_dict`` entry it came from, with the relation between the two, then the module's tensors are
sliced along the same channels:

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
  once with forward hooks, and is cut along the conv's output channels. The folded bias of such a
  conv maps to the conv's own bias (if any) and to the BN.
* **attention** — the pruned q/k/v projections tell how many heads and dims per head remain; a
  module holding ``heads`` / ``num_heads`` and ``head_dim`` attributes gets them updated so its own
  reshapes still work (whole heads removed, or the same dims in every head).

API: :func:`prune_module` (export or take a given export, prune, map, check) or, in steps,
:func:`map_decision` (decision -> per-axis keep masks of state_dict entries) and
:func:`apply_mapping` (-> smaller module + state_dict).

Result: a pruned ``state_dict`` (loads into the returned smaller module) and the module itself, ready
to fine-tune and re-export. Weight updates made by the criterion (OBSPA compensation) are carried
back too. A pruned tensor that matches nothing raises :class:`~edgekit.errors.TorchMappingError`
naming it. Module code that hard-codes channel counts (e.g. ``reshape(b, 64, -1)``) cannot follow:
the result is checked against the pruned ONNX model (``check=True``) and a mismatch raises
:class:`~edgekit.errors.ParityError`.
"""

from __future__ import annotations

import ast
import copy
import io
import itertools
import re
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from edgekit.errors import InputError, ParityError, TorchMappingError

EXPORTERS = ("legacy", "torchscript", "dynamo")

# input slot -> parameter name, for the ops whose inputs are a layer's parameters
_SLOT_NAMES = {
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
_BIAS_OPS = ("Conv", "ConvTranspose", "Gemm")
_HEADS_ATTRS = ("heads", "num_heads", "n_heads", "num_attention_heads", "n_head")
_HEAD_DIM_ATTRS = ("head_dim", "dim_head", "head_size", "attention_head_size", "d_head")
_QKV_NAME = re.compile(r"^(q|k|v|qk|kv|qkv|query|key|value|to_q|to_k|to_v|to_kv|to_qkv|wq|wk|wv|wqkv|"
                       r"q_proj|k_proj|v_proj|qkv_proj|in_proj|c_attn)$")
_OUT_NAME = re.compile(r"^(proj|out|out_proj|o_proj|o|to_out|wo|c_proj|dense|output)$")


def _norm(name: str) -> str:
    n = re.sub(r"[^0-9A-Za-z]+", "_", name)
    for pre in ("p_", "b_", "c_"):
        if n.startswith(pre):
            n = n[len(pre):]
    return n


# ---- export -------------------------------------------------------------------------------------

def _export(module, example, exporter: str):
    """``legacy``: TorchScript exporter keeping BatchNorm nodes and parameter names (what data-free
    criteria want); ``torchscript`` / ``dynamo``: exactly what ``edgekit export`` writes (constant
    folding, BatchNorm folded into the convs, generated initializer names)."""
    import onnx
    import torch

    module.eval()
    if exporter == "legacy":
        f = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), f, dynamo=False, opset_version=17,
                              training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
                              input_names=["input"])
        return onnx.load_from_string(f.getvalue())
    from edgekit.exporting import EXPORTERS as _EXP

    return _EXP[exporter](module, [example], None, 18, ["input"], ["output"], False)


# ---- ONNX node -> module scope ------------------------------------------------------------------

def _scope(node, modules: Dict[str, object]) -> Optional[str]:
    """The qualified name of the module ``node`` was exported from, or None when unknown."""
    for p in getattr(node, "metadata_props", ()):
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                break
            for s in reversed(list(scopes)):
                if isinstance(s, str) and s in modules:
                    return s
    name = getattr(node, "name", "") or ""
    if name.startswith("/"):
        # TorchScript: one segment per module level, a container's child named "<attr>.<index>"
        # (/layer2/layer2.0/downsample/downsample.1/BatchNormalization -> layer2.0.downsample.1)
        path, last, best = "", "", None
        for seg in name.split("/")[1:-1]:
            if last and seg.startswith(last + "."):
                path += seg[len(last):]
            else:
                path = f"{path}.{seg}" if path else seg
            last = seg
            if path in modules:
                best = path
        return best
    return None


def _base(dg, tensor: str) -> str:
    """The stored tensor's own name (a private copy of a shared weight is ``name::node:slot``)."""
    return tensor.rsplit("::", 1)[0] if tensor in getattr(dg, "private", {}) else tensor


def _owner(key: str) -> str:
    return key.rsplit(".", 1)[0] if "." in key else ""


def _common(a: Optional[str], b: str) -> int:
    if a is None:
        return 0
    pa, pb = a.split(".") if a else [], b.split(".") if b else []
    n = 0
    for x, y in zip(pa, pb):
        if x != y:
            break
        n += 1
    return n


# ---- value relations ----------------------------------------------------------------------------

@dataclass
class _Rel:
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


def _perms(ashape, pshape, allow_bcast: bool):
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


def _exact(a: np.ndarray, p: np.ndarray) -> Optional[_Rel]:
    for perm in _perms(a.shape, p.shape, allow_bcast=True):
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
            return _Rel(None, perm, kind)
    if a.ndim != p.ndim and a.size == p.size:
        # the same values with size-1 axes added or dropped (GroupNorm's affine as [C, 1, 1])
        ia = [i for i, d in enumerate(a.shape) if d != 1]
        ip = [j for j, d in enumerate(p.shape) if d != 1]
        if len(ia) == len(ip) and ia:
            r = _exact(a.reshape([a.shape[i] for i in ia]), p.reshape([p.shape[j] for j in ip]))
            if r is not None and r.kind == "same":
                perm: List[Optional[int]] = [None] * a.ndim
                for pos, i in enumerate(ia):
                    perm[i] = ip[r.perm[pos]]
                return _Rel(None, tuple(perm), "reshape")
    return None


def _scaled(a: np.ndarray, p: np.ndarray) -> Optional[_Rel]:
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
                return _Rel(None, perm, "scaled", scale=s, axis=ax)
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

def _followers(module, example) -> Dict[str, str]:
    """``{conv or linear: batchnorm}`` for every BatchNorm that reads a layer's output directly
    (the pairs an exporter folds), found by running the module once with forward hooks."""
    import torch
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


# ---- the mapping --------------------------------------------------------------------------------

@dataclass
class TorchMapping:
    """Where every pruned ONNX tensor lives in the module, and the resulting cuts."""

    relations: Dict[str, List[_Rel]] = field(default_factory=dict)   # ONNX tensor -> relations
    cuts: Dict[str, Dict[int, np.ndarray]] = field(default_factory=dict)  # sd key -> {axis: keep}
    folded_bn: Dict[str, str] = field(default_factory=dict)          # layer -> BN folded into it
    notes: List[str] = field(default_factory=list)


class _Mapper:
    def __init__(self, module, dg, example=None):
        self.module = module
        self.dg = dg
        self.example = example
        self.sd = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()
                   if hasattr(v, "is_floating_point") and v.is_floating_point()}
        self.modules = dict(module.named_modules())
        self.by_norm: Dict[str, str] = {}
        for k in self.sd:
            self.by_norm.setdefault(_norm(k), k)
        self.fp = {k: _fingerprint(v) for k, v in self.sd.items()}
        self.used: Dict[str, str] = {}
        self._followers: Optional[Dict[str, str]] = None

    def followers(self) -> Dict[str, str]:
        if self._followers is None:
            self._followers = _followers(self.module, self.example) if self.example is not None else {}
        return self._followers

    def relate_all(self, tensor: str, node, rels: Dict[str, List[_Rel]]) -> Optional[List[_Rel]]:
        """One relation per input slot of ``node`` that reads ``tensor`` (exporters let one
        de-duplicated initializer feed e.g. both the bias and the running mean of a BatchNorm)."""
        out = []
        for slot in self._slots(node, tensor) or [-1]:
            r = self.relate(tensor, node, slot, rels)
            if r is None:
                return None
            if all((r.key, r.kind, r.layer) != (q.key, q.kind, q.layer) for q in out):
                out.append(r)
        return out

    # one stored tensor, read by ``node`` at input ``slot``
    def relate(self, tensor: str, node, slot: int, rels: Dict[str, List[_Rel]]) -> Optional[_Rel]:
        a = np.asarray(self.dg.consts[tensor])
        if not np.issubdtype(a.dtype, np.floating):
            return None
        base = _base(self.dg, tensor)
        virtual = base != tensor
        op = getattr(node, "op_type", "")
        scope = _scope(node, self.modules) if node is not None else None
        slot_names = _SLOT_NAMES.get(op, {}).get(slot, ())

        # the folded bias of a Conv/Gemm: follows the layer's weight, never matched by value alone
        if op in _BIAS_OPS and slot == 2:
            wrel = next((r for r in rels.get(self._weight_tensor(node), ()) if r.key is not None), None)
            if wrel is not None:
                layer = _owner(wrel.key)
                bkey = f"{layer}.bias" if layer else "bias"
                if bkey in self.sd and self.sd[bkey].shape == a.shape and wrel.kind != "scaled" \
                        and _exact(a, self.sd[bkey]) is not None:
                    return _Rel(bkey, (0,), "same")
                return _Rel(bkey if bkey in self.sd else None, (0,), "bias", layer=layer)

        # 1. scope: a tensor of the module this node came from (tells de-duplicated copies apart)
        if scope is not None:
            own = [k for k in self.sd if _owner(k) == scope]
            hits = [(k, r) for k in own for r in [_exact(a, self.sd[k])] if r is not None]
            if len(hits) > 1 and slot_names:
                named = [h for h in hits if h[0].rsplit(".", 1)[-1] in slot_names]
                hits = named or hits
            if len(hits) == 1:
                return self._done(hits[0][0], hits[0][1])
        # 2. name (not for a private copy of a shared tensor: the name belongs to its first reader)
        key = base if base in self.sd else self.by_norm.get(_norm(base))
        leaf = key.rsplit(".", 1)[-1] if key else ""
        op_names = {n for ns in _SLOT_NAMES.get(op, {}).values() for n in ns}
        if key is not None and not virtual and not (slot_names and leaf in op_names and leaf not in slot_names):
            p = self.sd[key]
            r = _exact(a, p) or _scaled(a, p)
            if r is None:
                perm = next(_perms(a.shape, p.shape, allow_bcast=True), None)
                if perm is not None:
                    r = _Rel(None, perm, "named")
            if r is not None:
                return self._done(key, r)
        # 3. value: equal (maybe transposed / broadcast) to exactly one tensor; ties broken by scope.
        # A tensor of one repeated value says nothing about where it came from: it is a constant
        # the exporter made (InstanceNormalization's unit scale inside a GroupNorm), and the
        # module's size attributes carry it.
        if a.size and float(np.ptp(a)) == 0.0:
            return _Rel(None, tuple(range(a.ndim)), "const")
        hits = self._by_value(a, exact=True)
        if not hits:
            hits = self._by_value(a, exact=False)
        if not hits:
            return None
        if len(hits) > 1:
            best = max(_common(scope, _owner(k)) for k, _ in hits)
            hits = [h for h in hits if _common(scope, _owner(h[0])) == best]
        if len(hits) > 1 and slot_names:
            hits = [h for h in hits if h[0].rsplit(".", 1)[-1] in slot_names] or hits
        if len(hits) > 1:
            fresh = [h for h in hits if h[0] not in self.used]
            if len(fresh) == 1:
                hits = fresh
        if len(hits) > 1:
            raise TorchMappingError(
                f"pruned ONNX tensor {base} matches several module tensors by value "
                f"({', '.join(k for k, _ in hits[:4])}) and its node does not say which",
                hint="export with the TorchScript or dynamo exporter (they record module scopes), or "
                     "prune the ONNX model instead")
        return self._done(*hits[0])

    def _done(self, key: str, r: _Rel) -> _Rel:
        r.key = key
        self.used.setdefault(key, "")
        return r

    def _by_value(self, a: np.ndarray, exact: bool):
        out = []
        fa = _fingerprint(a) if exact else None
        for k, p in self.sd.items():
            if p.ndim != a.ndim and (not exact or p.size != a.size):
                continue
            if exact:
                if p.size == a.size:
                    fs, fq = self.fp[k]
                    if abs(fs - fa[0]) > 1e-4 * max(1.0, abs(fq) ** 0.5 * 10) or \
                            abs(fq - fa[1]) > 1e-4 * max(1.0, fq):
                        continue
                elif not any(True for _ in _perms(a.shape, p.shape, allow_bcast=True)):
                    continue
                r = _exact(a, p)
            else:
                if p.size != a.size:
                    continue
                r = _scaled(a, p)
            if r is not None:
                out.append((k, r))
        return out

    def _slots(self, node, tensor: str) -> List[int]:
        if node is None:
            return []
        priv = getattr(self.dg, "private", {}).get(tensor)
        if priv is not None:
            return [int(i) for i in priv[1]]
        return [i for i, v in enumerate(node.input) if v == tensor or self._through(v) == tensor]

    def _slot(self, node, tensor: str) -> int:
        s = self._slots(node, tensor)
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

    def _weight_tensor(self, node) -> Optional[str]:
        if node is None or len(node.input) < 2:
            return None
        w = self._through(node.input[1])
        for virt, (pnode, slots) in getattr(self.dg, "private", {}).items():
            if pnode is node and 1 in slots:
                return virt
        return w


def map_decision(module, dg, keeps, example_input=None) -> TorchMapping:
    """Map the ONNX pruning decision ``keeps`` on ``dg`` (from :func:`~edgekit.prune.core.prune_with_graph`)
    to per-axis keep masks of ``module``'s state_dict entries. ``example_input`` lets folded
    BatchNorms be found (forward hooks); without it they are not cut."""
    from edgekit.prune.apply import tensor_masks

    masks = tensor_masks(dg, keeps)
    mp = _Mapper(module, dg, example_input)
    node_of: Dict[str, object] = {}
    for node, tensor, _axis, _role, _atoms in dg.members:
        node_of.setdefault(tensor, node)
    out = TorchMapping()
    # layers' weights first: their folded biases follow them
    order = sorted(masks, key=lambda t: (getattr(node_of.get(t), "op_type", "") in _BIAS_OPS
                                         and mp._slot(node_of.get(t), t) == 2, t))
    unmapped: List[str] = []
    for tensor in order:
        rel = mp.relate_all(tensor, node_of.get(tensor), out.relations)
        if not rel:
            node = node_of.get(tensor)
            shape = "x".join(str(d) for d in np.shape(dg.consts[tensor])) or "scalar"
            unmapped.append(f"{_base(dg, tensor)} ({shape}, read by {getattr(node, 'name', '?') or node.op_type})")
            continue
        out.relations[tensor] = rel
    if unmapped:
        names = sorted(set(unmapped))
        err = TorchMappingError(
            f"pruned ONNX tensor(s) with no counterpart in the module: {', '.join(names[:6])}"
            + (f" (+{len(names) - 6} more)" if len(names) > 6 else ""),
            hint="the tensor is computed in forward() or belongs to another model; protect the node that "
                 "reads it (protect=[...] / --protect) or prune the ONNX model instead of the module")
        err.tensors = names
        raise err
    cuts = out.cuts

    def cut(key: str, axis: int, keep: np.ndarray) -> None:
        cur = cuts.setdefault(key, {})
        cur[axis] = keep if axis not in cur else (cur[axis] & keep)

    layer_out: Dict[str, np.ndarray] = {}
    for tensor, axes in masks.items():
        for rel in out.relations[tensor]:
            if rel.kind == "bias":
                layer_out.setdefault(rel.layer, axes[0])
                if rel.key is not None:
                    cut(rel.key, 0, axes[0])
                continue
            if rel.kind == "const":
                out.notes.append(f"{_base(dg, tensor)}: a constant made by the exporter (one repeated value), "
                                 "no module tensor to cut")
                continue
            p = mp.sd[rel.key]
            for ax, keep in axes.items():
                pax = rel.perm[ax]
                if pax is None:
                    continue
                if p.shape[pax] != len(keep):
                    if p.shape[pax] == 1:
                        continue  # broadcast axis of the module tensor
                    raise TorchMappingError(f"pruned ONNX tensor {_base(dg, tensor)} axis {ax} ({len(keep)}) "
                                            f"does not line up with {rel.key} {tuple(p.shape)}")
                cut(rel.key, pax, keep)
    # the output channels each layer loses
    from torch import nn

    for key, axes in list(cuts.items()):
        layer = _owner(key)
        mod = mp.modules.get(layer)
        if key.endswith(".weight") and isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)):
            oax = 1 if isinstance(mod, nn.modules.conv._ConvTransposeNd) else 0
            if oax in axes:
                keep = axes[oax]
                if isinstance(mod, nn.modules.conv._ConvTransposeNd) and mod.groups > 1:
                    keep = layer_out.get(layer, keep)
                layer_out.setdefault(layer, keep)
    # which BatchNorms the exporter folded: the module has BN(layer(x)) but the graph has no
    # BatchNormalization reading the layer's node
    layer_node: Dict[str, object] = {}
    for tensor, rels in out.relations.items():
        for rel in rels:
            if rel.key and rel.kind != "bias" and rel.key.endswith(".weight"):
                layer_node.setdefault(_owner(rel.key), node_of.get(tensor))
    readers: Dict[str, List[str]] = {}
    for n in dg.model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n.op_type)
    for layer, bn in (mp.followers() if example_input is not None else {}).items():
        node = layer_node.get(layer)
        if node is not None and "BatchNormalization" not in readers.get(node.output[0], ()):
            out.folded_bn[layer] = bn
    # a BatchNorm reading a layer's output directly loses the same channels, folded or not (when it
    # is in the graph its own tensors were mapped above, to the same channels)
    followers = mp.followers() if (layer_out and example_input is not None) else {}
    for layer, keep in layer_out.items():
        bn = followers.get(layer)
        if bn is None:
            continue
        for k in (k for k in mp.sd if _owner(k) == bn and mp.sd[k].ndim == 1):
            if mp.sd[k].shape[0] == len(keep):
                cut(k, 0, keep)
    return out


# ---- applying the cuts --------------------------------------------------------------------------

def _sliced(t, axes: Dict[int, np.ndarray]):
    import torch

    for ax, keep in axes.items():
        t = t.index_select(ax, torch.as_tensor(np.nonzero(keep)[0], dtype=torch.long))
    return t


def _carry_updates(module, mapping: TorchMapping, sd, updates, new_biases, dg, example=None) -> List[str]:
    """Write criterion weight updates (full-size ONNX values) back into the full-size ``sd``."""
    import torch

    notes: List[str] = []
    mp = _Mapper(module, dg, example)

    def folded(layer: str, node) -> Optional[str]:
        bn = mp.followers().get(layer)
        if bn is None or node is None:
            return mapping.folded_bn.get(layer)
        reads = [n.op_type for n in dg.model.graph.node if node.output[0] in n.input]
        return None if "BatchNormalization" in reads else bn

    def add(key: str, delta) -> None:
        sd[key] = sd[key] + torch.as_tensor(np.asarray(delta), dtype=sd[key].dtype)

    for tensor, value in (updates or {}).items():
        node = next((n for n, t, *_ in dg.members if t == tensor), None)
        rels = mapping.relations.get(tensor)
        if rels is None:
            # updated but not cut (a consumer compensated without losing channels): map it now
            rels = mp.relate_all(tensor, node, mapping.relations) if tensor in dg.consts else None
            if not rels:
                raise TorchMappingError(f"updated ONNX tensor {_base(dg, tensor)} has no counterpart in the module")
            mapping.relations[tensor] = rels
        old = np.asarray(dg.consts[tensor], dtype=np.float64)
        for rel in rels:
            new = np.asarray(value, dtype=np.float64)
            if rel.kind == "bias":
                bn = folded(rel.layer, node)
                if bn is not None and f"{bn}.bias" in sd:
                    add(f"{bn}.bias", new - old)
                elif rel.key is not None:
                    add(rel.key, new - old)
                else:
                    raise TorchMappingError(f"updated folded bias {_base(dg, tensor)} has no BatchNorm or bias "
                                            f"in module {rel.layer}")
                continue
            if rel.kind == "named":
                raise TorchMappingError(f"updated ONNX tensor {_base(dg, tensor)} cannot be related to "
                                        f"{rel.key} by value", hint="use a criterion without weight updates")
            if rel.kind == "scaled":
                sc = np.where(rel.scale != 0, rel.scale, 1.0)
                new = np.moveaxis(np.moveaxis(new, rel.axis, -1) / sc, -1, rel.axis)
            if rel.kind == "const":
                continue
            p = sd[rel.key]
            if rel.kind == "reshape":
                axes_a = [i for i, t in enumerate(rel.perm) if t is not None]
                order = np.argsort([rel.perm[i] for i in axes_a])
                val = np.transpose(new.reshape([new.shape[i] for i in axes_a]), order).reshape(p.shape)
            else:
                val = np.transpose(new, np.argsort(rel.perm))
            if rel.kind == "bcast":
                for ax, d in enumerate(p.shape):
                    if d == 1 and val.shape[ax] != 1:
                        val = val.take([0], axis=ax)
            sd[rel.key] = torch.as_tensor(np.ascontiguousarray(val), dtype=p.dtype).reshape(p.shape)
    for node_name, bias in (new_biases or {}).items():
        node = next((n for n in dg.model.graph.node if n.name == node_name), None)
        wrel = None
        if node is not None:
            wt = mp._weight_tensor(node)
            rels = mapping.relations.get(wt)
            if rels is None and wt in dg.consts:
                rels = mp.relate_all(wt, node, mapping.relations)
            wrel = next((r for r in rels or () if r.key is not None), None)
        if wrel is None:
            raise TorchMappingError(f"a bias added to {node_name} has no layer in the module")
        layer = _owner(wrel.key)
        bn = folded(layer, node)
        b = np.asarray(bias, dtype=np.float64)
        after = mp.followers().get(layer)
        if bn is not None and f"{bn}.bias" in sd:
            add(f"{bn}.bias", b)                     # the graph's bias sits after the folded BN
        elif f"{layer}.bias" in sd:
            add(f"{layer}.bias", b)
        elif after is not None and f"{after}.running_mean" in sd:
            add(f"{after}.running_mean", -b)         # BN(Wx + b) == BN with its mean shifted by -b
        else:
            sd[f"{layer}.bias"] = torch.as_tensor(b, dtype=torch.float32)  # _resize creates the parameter
            notes.append(f"{layer}: bias added (criterion compensation)")
    return notes


def _resize(module, sd, cuts: Dict[str, Dict[int, np.ndarray]]) -> List[str]:
    """Give every layer the shapes of the pruned state_dict (parameters and size attributes)."""
    import torch
    from torch import nn

    notes: List[str] = []
    for name, mod in module.named_modules():
        prefix = f"{name}." if name else ""
        for pname, p in list(mod.named_parameters(recurse=False)):
            new = sd[prefix + pname]
            if tuple(new.shape) != tuple(p.shape):
                setattr(mod, pname, nn.Parameter(torch.empty_like(new), requires_grad=p.requires_grad))
        for bname, b in list(mod.named_buffers(recurse=False)):
            key = prefix + bname
            if key in sd and b is not None and tuple(sd[key].shape) != tuple(b.shape):
                mod._buffers[bname] = torch.empty_like(sd[key])
        if isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)) and getattr(mod, "bias", 0) is None \
                and prefix + "bias" in sd:
            mod.bias = nn.Parameter(torch.empty_like(sd[prefix + "bias"]))
        if isinstance(mod, nn.modules.conv._ConvNd) and getattr(mod, "weight", None) is not None:
            w = mod.weight
            transposed = isinstance(mod, nn.modules.conv._ConvTransposeNd)
            oax = 1 if transposed else 0
            old_out = mod.out_channels
            g = mod.groups
            if g > 1:
                keep = cuts.get(prefix + "weight", {}).get(0)
                if keep is None:
                    keep = np.ones(w.shape[0], dtype=bool)
                if not transposed and mod.in_channels == g:     # depthwise: groups follow the channels
                    mod.groups = w.shape[0] // (old_out // g)
                elif len(keep) % g == 0:                       # whole groups removed, or the same per group
                    per = keep.reshape(g, -1)
                    rows = per.any(1)
                    if (per.all(1) | ~rows).all() and not rows.all():
                        mod.groups = int(rows.sum())
            if transposed:
                mod.in_channels, mod.out_channels = w.shape[0], w.shape[1] * mod.groups
            else:
                mod.out_channels, mod.in_channels = w.shape[oax], w.shape[1] * mod.groups
        elif isinstance(mod, nn.Linear):
            mod.out_features, mod.in_features = mod.weight.shape
        elif isinstance(mod, nn.modules.batchnorm._NormBase):
            src = mod.weight if mod.weight is not None else mod.running_mean
            if src is not None:
                mod.num_features = src.shape[0]
        elif isinstance(mod, nn.LayerNorm):
            if mod.weight is not None:
                mod.normalized_shape = tuple(mod.weight.shape)
        elif isinstance(mod, nn.GroupNorm) and mod.weight is not None:
            old = mod.num_channels
            mod.num_channels = mod.weight.shape[0]
            mod.num_groups = max(1, mod.num_groups * mod.num_channels // old)
        elif isinstance(mod, nn.MultiheadAttention):
            if prefix + "in_proj_weight" in cuts or prefix + "out_proj.weight" in cuts:
                raise TorchMappingError(f"{name}: nn.MultiheadAttention cannot hold pruned projections "
                                        "(its inner width must equal embed_dim)",
                                        hint="write attention with separate Linear layers (like "
                                             "edgekit.models.vit), or --protect it")
        _resize_heads(name, mod, cuts, notes)
    return notes


def _resize_heads(name: str, mod, cuts, notes: List[str]) -> None:
    """Update ``heads`` / ``head_dim`` style attributes from the pruned q/k/v projections."""
    from torch import nn

    h_attr = next((a for a in _HEADS_ATTRS if isinstance(getattr(mod, a, None), int)
                   and not isinstance(getattr(mod, a), bool)), None)
    d_attr = next((a for a in _HEAD_DIM_ATTRS if isinstance(getattr(mod, a, None), int)), None)
    if h_attr is None or d_attr is None or isinstance(mod, nn.MultiheadAttention):
        return
    heads, hd = getattr(mod, h_attr), getattr(mod, d_attr)
    inner = heads * hd
    prefix = f"{name}." if name else ""
    # the head-structured axes: the q/k/v (or fused qkv) projections' outputs, the output
    # projection's inputs; other cuts of those layers (the residual width) say nothing about heads
    linears = [(c, ch) for c, ch in mod.named_children() if isinstance(ch, nn.Linear)]
    keep = None
    for cname, child in linears:
        low = cname.lower()
        if _QKV_NAME.match(low):
            ax = 0
        elif _OUT_NAME.match(low):
            ax = 1
        else:
            continue
        k = cuts.get(f"{prefix}{cname}.weight", {}).get(ax)
        if k is not None and len(k) % inner == 0:
            keep = k.reshape(len(k) // inner, inner)[0]   # fused qkv: one row per projection
            break
    if keep is None and not any(_QKV_NAME.match(c.lower()) or _OUT_NAME.match(c.lower()) for c, _ in linears):
        for cname, child in linears[:-1]:                  # unknown names: the last Linear projects out
            k = cuts.get(f"{prefix}{cname}.weight", {}).get(0)
            if k is not None and len(k) % inner == 0:
                keep = k.reshape(len(k) // inner, inner)[0]
                break
    if keep is None:
        return
    per = keep.reshape(heads, hd)
    counts = per.sum(1)
    if ((counts == 0) | (counts == hd)).all():
        new_heads, new_hd = int((counts == hd).sum()), hd
    elif (counts == counts[0]).all():
        new_heads, new_hd = heads, int(counts[0])
    else:
        raise TorchMappingError(f"{name}: the pruned attention keeps a different number of dims per head "
                                f"({sorted(set(counts.tolist()))}), which {type(mod).__name__} cannot express",
                                hint="prune with --attention heads or head-dims")
    if (new_heads, new_hd) == (heads, hd):
        return
    setattr(mod, h_attr, new_heads)
    setattr(mod, d_attr, new_hd)
    for extra in ("all_head_size", "inner_dim"):
        if isinstance(getattr(mod, extra, None), int) and getattr(mod, extra) == inner:
            setattr(mod, extra, new_heads * new_hd)
    notes.append(f"{name}: {h_attr} {heads}->{new_heads}, {d_attr} {hd}->{new_hd}")


def apply_mapping(module, mapping: TorchMapping, dg=None, updates=None, new_biases=None, example_input=None):
    """A smaller deep copy of ``module`` and its state_dict, cut as ``mapping`` says."""
    sd = {k: v.detach().clone() for k, v in module.state_dict().items()}
    notes: List[str] = []
    if updates or new_biases:
        notes += _carry_updates(module, mapping, sd, updates, new_biases, dg, example_input)
        for k in set(sd) - set(module.state_dict()):  # a bias created for a layer: cut like its outputs
            keep = mapping.cuts.get(_owner(k) + ".weight", {}).get(0)
            if keep is not None and len(keep) == sd[k].shape[0]:
                mapping.cuts[k] = {0: keep}
    new_sd = {}
    for k, v in sd.items():
        new_sd[k] = _sliced(v, mapping.cuts.get(k, {})).clone() if k in mapping.cuts else v
    small = copy.deepcopy(module)
    notes += _resize(small, new_sd, mapping.cuts)
    small.load_state_dict(new_sd)
    small.eval()
    mapping.notes.extend(notes)
    return small, new_sd


# ---- one call -----------------------------------------------------------------------------------

@dataclass
class TorchPruneResult:
    module: object                 # the smaller nn.Module (eval mode)
    state_dict: Dict[str, object]  # pruned shapes
    report: object                 # PruneReport
    onnx_model: object             # the pruned ONNX model (reference)
    mapped: List[str]              # state_dict keys that were cut
    max_abs_diff: float            # pruned module vs pruned ONNX on the example input
    notes: List[str] = field(default_factory=list)


def prune_module(module, example_input, exporter: str = "legacy", check: bool = True, onnx_model=None,
                 **prune_kwargs) -> TorchPruneResult:
    """Prune ``module`` with the graph-level pruner and return a smaller module + state_dict.

    ``exporter``: ``legacy`` (TorchScript, BatchNorm kept: best for bn-scale / obspa criteria),
    ``torchscript`` or ``dynamo`` (exactly what ``edgekit export`` writes, BatchNorm folded).
    ``onnx_model``: an ONNX export of this module (ModelProto or path) to prune instead of exporting
    it here; its input must accept ``example_input``. Other keyword arguments go to
    :func:`edgekit.prune.prune`. ``module`` is never modified.
    """
    import torch

    from edgekit.prune.core import prune_with_graph

    if onnx_model is None:
        if exporter not in EXPORTERS:
            raise InputError(f"unknown exporter {exporter!r}", hint="use " + ", ".join(EXPORTERS))
        was_training = module.training
        try:
            onnx_model = _export(module, example_input, exporter)
        finally:
            module.train(was_training)
    elif isinstance(onnx_model, str) or hasattr(onnx_model, "__fspath__"):
        from edgekit.graph.io import load_model

        onnx_model = load_model(onnx_model)
    pruned_onnx, report, dg = prune_with_graph(onnx_model, **prune_kwargs)
    mapping = map_decision(module, dg, report.keeps, example_input)
    small, new_sd = apply_mapping(module, mapping, dg, getattr(report, "updates", None),
                                  getattr(report, "new_biases", None), example_input)
    diff = 0.0
    if check:
        from edgekit.runtime.verify import run

        try:
            with torch.no_grad():
                got = small(example_input)
        except RuntimeError as exc:
            raise ParityError(f"the pruned module does not run: {str(exc).splitlines()[0][:300]}",
                              hint="its forward() probably makes a tensor with the original channel count; "
                                   "protect the node that reads it (protect=[...] / --protect)") from exc
        got = (got[0] if isinstance(got, (tuple, list)) else got).detach().numpy()
        ref = run(pruned_onnx, {pruned_onnx.graph.input[0].name: example_input.detach().numpy()})[0]
        diff = float(np.abs(got - ref).max())
        if diff > 1e-3 * max(1.0, float(np.abs(ref).max())):
            raise ParityError(f"the pruned module differs from the pruned ONNX model by {diff:.3g}",
                              hint="the module's forward probably hard-codes channel counts")
    return TorchPruneResult(small, new_sd, report, pruned_onnx, sorted(mapping.cuts), diff, mapping.notes)

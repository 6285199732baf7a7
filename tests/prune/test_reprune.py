"""A pruned model is a valid input to the pruner again (issue 17, defect 2).

The pruner names the tensors it makes ``<base>__pruned<k>``; a second prune used to count from 1
again and collide with the first prune's names (onnx-ir: "Initializer ... is already registered").
Each chain below must give a model that passes the ONNX checker and runs under ONNX Runtime with
the original output shapes: prune -> prune, and prune -> quantize (TensorRT Q/DQ) -> prune, on
both exporters."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgekit.prune import prune
from edgekit.runtime.verify import check, random_feeds, run


def _export(name: str, exporter: str):
    pytest.importorskip("torch")
    from edgekit.models.zoo import to_onnx

    return to_onnx(name, exporter=exporter)


def _assert_valid(model, original) -> None:
    """Checker, strict shape inference and one run; outputs shaped as the original's."""
    feeds = random_feeds(original)
    got = check(model, feeds)
    want = run(original, feeds)
    assert [g.shape for g in got] == [w.shape for w in want]
    assert all(np.isfinite(g).all() for g in got)


def _new_names(model) -> list:
    return [t.name for t in model.graph.initializer if "__pruned" in t.name]


def _prune_twice(model):
    once, r1 = prune(model, ratio=0.3)
    twice, r2 = prune(once, ratio=0.2)
    assert r2.params_after < r1.params_after  # the second prune removed channels too
    return once, twice


def test_reprune_vit_torchscript():
    """The quick case: a ViT's head reshapes are rewritten by both prunes."""
    model = _export("vit-tiny", "torchscript")
    once, twice = _prune_twice(model)
    assert _new_names(once) and _new_names(twice)
    names = [t.name for t in twice.graph.initializer]
    assert len(names) == len(set(names))
    _assert_valid(twice, model)


def test_new_names_avoid_every_graph_name():
    """A name the pruner would make is taken by a node output already: it picks another."""
    model = _export("vit-tiny", "torchscript")
    once, _ = prune(model, ratio=0.3)
    made = _new_names(once)[0]
    base = made.rsplit("__pruned", 1)[0]
    # a model whose activations already hold the next few names the pruner would pick
    m = onnx.ModelProto()
    m.CopyFrom(model)
    n = next(n for n in m.graph.node if n.op_type == "Relu" or n.op_type == "Gelu" or n.op_type == "Add")
    old = n.output[0]
    n.output[0] = f"{base}__pruned1"
    for other in m.graph.node:
        other.input[:] = [n.output[0] if i == old else i for i in other.input]
    for o in m.graph.output:
        if o.name == old:
            o.name = n.output[0]
    pruned, _ = prune(m, ratio=0.3)
    outs = {o for node in pruned.graph.node for o in node.output}
    assert not outs & {t.name for t in pruned.graph.initializer}
    _assert_valid(pruned, m)


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2", "vit-tiny"])
def test_prune_prune(name, exporter):
    model = _export(name, exporter)
    _, twice = _prune_twice(model)
    _assert_valid(twice, model)


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("name", ["resnet18", "vit-tiny"])
def test_prune_quantize_prune(name, exporter):
    from edgekit.quantize.ptq import quantize

    model = _export(name, exporter)
    once, _ = prune(model, ratio=0.3)
    q, _ = quantize(once, "synthetic", target="tensorrt", samples=8, method="minmax", measure_fidelity=False)
    assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)
    again, report = prune(q, ratio=0.2)
    assert report.params_after < report.params_before
    _assert_valid(again, model)

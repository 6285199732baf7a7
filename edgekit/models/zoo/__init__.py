"""A corpus of small architectures from many families, used to prove that the graph-level pruner
is general (tests/prune/test_corpus.py, bench/prune_coverage.py).

``CORPUS`` maps a name to ``(factory, input_shape)``: ``factory()`` returns a randomly initialised
``nn.Module`` in eval mode (seeded, so two calls give the same weights) and ``input_shape`` is the
shape of its single input. Widths and inputs are small so export + prune + timing take seconds.
Importing this module does not import torch; calling a factory does.
"""

from __future__ import annotations

import importlib
import io
import logging
import warnings
from typing import Callable, Dict, Tuple

import onnx

from edgekit.errors import InputError
from edgekit.models import create

Shape = Tuple[int, ...]


def _zoo(path: str, **kw: object) -> Callable[[], object]:
    """Factory for a class ``module:Class`` in this package (BN statistics randomised)."""

    def factory():
        import torch  # lazy: torch is optional

        from edgekit.models.zoo.cnn import randomize_bn  # lazy: the corpus modules import torch

        mod, cls = path.split(":")
        torch.manual_seed(0)
        model = getattr(importlib.import_module(f"edgekit.models.zoo.{mod}"), cls)(**kw)
        return randomize_bn(model)

    factory.__name__ = path.replace(":", "_")
    return factory


def _builtin(name: str, **kw: object) -> Callable[[], object]:
    """Factory for one of edgekit's built-in models (edgekit.models.BUILTIN)."""

    def factory():
        import torch  # lazy: torch is optional

        from edgekit.models.zoo.cnn import randomize_bn  # lazy: the corpus modules import torch

        torch.manual_seed(0)
        return randomize_bn(create(name, **kw))

    factory.__name__ = "builtin_" + name.replace("-", "_")
    return factory


IMG: Shape = (1, 3, 64, 64)
# mobile-sized nets get a larger image so ONNX Runtime time is not dominated by per-op overhead
IMG128: Shape = (1, 3, 128, 128)

CORPUS: Dict[str, Tuple[Callable[[], object], Shape]] = {
    # built-in models, shrunk through their own arguments
    "resnet18": (_builtin("resnet18", num_classes=10), IMG),
    "resnet50": (_builtin("resnet50", num_classes=10, base_width=32), IMG),
    "mobilenetv2": (_builtin("mobilenetv2", num_classes=10, width_mult=0.5), IMG128),
    "vit-tiny": (_builtin("vit-tiny", num_classes=10, image_size=64), IMG),
    "yolo-tiny": (_builtin("yolo-tiny", num_classes=4, width=8), (1, 3, 128, 128)),
    # convolutional classifiers
    "resnext": (_zoo("cnn:ResNeXt"), IMG),
    "densenet": (_zoo("cnn:DenseNet"), IMG),
    "shufflenetv2": (_zoo("cnn:ShuffleNetV2"), IMG128),
    "efficientnet": (_zoo("cnn:EfficientNet"), IMG128),
    "mobilenetv3": (_zoo("cnn:MobileNetV3"), IMG128),
    "convnext": (_zoo("cnn:ConvNeXt"), IMG),
    "regnet": (_zoo("cnn:RegNet"), IMG128),
    "squeezenet": (_zoo("cnn:SqueezeNet"), IMG128),
    "inception": (_zoo("cnn:Inception"), IMG),
    "vgg-bn": (_zoo("cnn:VGGBN"), IMG),
    "groupnorm-net": (_zoo("cnn:GroupNormNet"), IMG),
    "instancenorm-net": (_zoo("cnn:InstanceNormNet"), IMG),
    "pixelshuffle-sr": (_zoo("cnn:PixelShuffleSR"), IMG),
    "conv-flatten-linear": (_zoo("cnn:ConvFlattenLinear"), IMG),
    "split-slice-net": (_zoo("cnn:SplitSliceNet"), IMG),
    "subdiv-resnet": (_zoo("cnn:SubDivResNet"), IMG),
    "hrnet": (_zoo("cnn:HRNet"), IMG128),
    "deeplab-aspp": (_zoo("cnn:DeepLabASPP"), IMG),
    "ghostnet": (_zoo("dense:GhostNet"), IMG128),
    "res2net": (_zoo("dense:Res2Net"), IMG),
    "kws-conv1d": (_zoo("dense:KWSConv1d"), (1, 40, 98)),
    # dense prediction
    "unet": (_zoo("dense:UNet"), IMG),
    "fpn": (_zoo("dense:FPN"), IMG128),
    "yolo-neck": (_zoo("dense:YoloNeck"), (1, 3, 128, 128)),
    # attention / token mixing
    "mha-vit": (_zoo("transformer:MHAViT"), IMG),
    "swin": (_zoo("transformer:Swin"), IMG),
    "mlp-mixer": (_zoo("transformer:MLPMixer"), IMG),
    "mobilevit": (_zoo("transformer:MobileViT"), IMG),
}


def names():
    """The corpus model names, sorted."""
    return sorted(CORPUS)


def to_onnx(name: str, exporter: str = "torchscript", opset: int = 17, dynamic_batch: bool = False,
            keep_bn: bool = False):
    """Export corpus model ``name`` to an in-memory ``onnx.ModelProto``.

    exporter: ``torchscript`` (``torch.onnx.export(dynamo=False)``, BN folded by constant folding)
    or ``dynamo`` (``torch.export``-based, optimised by onnxscript). Both name initializers after
    the module's parameters. Static shapes unless ``dynamic_batch`` (TorchScript only: a symbolic
    batch axis on the input and every output, as deployment exports usually have). ``keep_bn``
    (TorchScript only): BatchNorm nodes stay in the graph, with running statistics measured on
    random normal inputs first (as training would leave them, so that BN-based criteria see
    statistics that describe the activations rather than the 0 / 1 of a fresh layer).
    """
    import torch  # lazy: torch is optional

    if name not in CORPUS:
        raise InputError(f"unknown corpus model '{name}'", hint="corpus models: " + ", ".join(names()))
    factory, shape = CORPUS[name]
    model = factory()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    if keep_bn:
        bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # a plain average over the batches below
        model.train()
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for _ in range(4):
                model(torch.randn((8,) + tuple(shape[1:]), generator=g))
        model.eval()
    # Not under no_grad: there nn.MultiheadAttention takes a fused fast path that has no ONNX export.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            buf = io.BytesIO()
            axes = None
            if dynamic_batch:
                with torch.no_grad():
                    y = model(x)
                n_out = len(y) if isinstance(y, (tuple, list)) else 1
                outs = [f"output{i}" for i in range(n_out)]
                axes = {k: {0: "batch"} for k in ["input"] + outs}
            else:
                outs = None
            mode = torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL
            torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=opset, input_names=["input"],
                              output_names=outs, dynamic_axes=axes, training=mode)
            return onnx.load_from_string(buf.getvalue())
        if exporter == "dynamo":
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            program = torch.onnx.export(model, (x,), dynamo=True, opset_version=max(opset, 18),
                                        input_names=["input"], verbose=False)
            return program.model_proto
    raise InputError(f"unknown exporter '{exporter}'", hint="use 'torchscript' or 'dynamo'")

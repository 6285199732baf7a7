"""The torch architectures behind :func:`edgekit.models.digits.build`, sized for 1x16x16 digits.

Imported on first use by ``digits.build`` (this module imports torch), so that loading the digits
data or the cache helpers needs no torch.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from edgekit.models.mobilenetv2 import ConvBNReLU, InvertedResidual, mobilenet_v2
from edgekit.models.resnet import BasicBlock, resnet18
from edgekit.models.vit import VisionTransformer


class DigitsResNet(nn.Module):
    """CIFAR-style ResNet: 3 stages of basic blocks (16, 32, 64 channels)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(BasicBlock(16, 16), BasicBlock(16, 16))
        self.layer2 = nn.Sequential(BasicBlock(16, 32, 2), BasicBlock(32, 32))
        self.layer3 = nn.Sequential(BasicBlock(32, 64, 2), BasicBlock(64, 64))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class DigitsMobileNetV2(nn.Module):
    """Inverted residuals at 16-32 channels with a 128-wide head."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            ConvBNReLU(1, 16, 3, 1),
            InvertedResidual(16, 16, 1, 1),
            InvertedResidual(16, 24, 2, 6), InvertedResidual(24, 24, 1, 6),
            InvertedResidual(24, 32, 2, 6), InvertedResidual(32, 32, 1, 6),
            ConvBNReLU(32, 128, 1),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _vgg_block(cin: int, cout: int) -> "nn.Sequential":
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class DigitsVGG(nn.Module):
    """Plain conv-BN-ReLU stacks (32, 64, 128 channels) and a two-layer classifier."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(_vgg_block(1, 32), _vgg_block(32, 32), nn.MaxPool2d(2),
                                      _vgg_block(32, 64), _vgg_block(64, 64), nn.MaxPool2d(2),
                                      _vgg_block(64, 128))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(128, 64)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        x = torch.flatten(self.pool(self.features(x)), 1)
        return self.fc2(self.relu(self.fc1(x)))


def build(arch: str, num_classes: int, image_size: int) -> Optional[nn.Module]:
    """An untrained model of architecture ``arch`` (see ``digits.ARCHS``), None for an unknown name."""
    if arch == "resnet":
        return DigitsResNet(num_classes)
    if arch == "mobilenetv2":
        return DigitsMobileNetV2(num_classes)
    if arch == "vgg":
        return DigitsVGG(num_classes)
    if arch == "vit":
        return VisionTransformer(image_size=image_size, patch=4, dim=64, depth=4, heads=4, mlp_ratio=2.0,
                                 num_classes=num_classes, in_channels=1)
    if arch.endswith("-imagenet"):
        # The ImageNet architectures themselves (full width, stride 32, 1 input channel, 10
        # classes), for image sizes of 64 and more: data-free pruning studied on the layer shapes
        # of a deployed model (a 2048- or 1280-wide head, 3x3 or larger final maps), with real accuracy.
        if image_size < 64:
            raise ValueError(f"{arch} needs image_size >= 64 (stride 32), got {image_size}")
        if arch == "resnet18-imagenet":
            return resnet18(num_classes=num_classes, in_channels=1)
        if arch == "mobilenetv2-imagenet":
            return mobilenet_v2(num_classes=num_classes, in_channels=1)
    if arch == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(image_size * image_size, 128), nn.ReLU(),
                             nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, num_classes))
    return None

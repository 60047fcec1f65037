"""A small CNN for tiny images (the 8x8 digits): stages of two conv3x3-BN-ReLU and a 2x2 max pool, then global
average pooling, dropout and a linear layer. With widths (32, 64) on 8x8 inputs: 8x8 -> 4x4 -> 2x2, about
65 k parameters. Batch norm on purpose: MPL freezes its statistics for the student's extra forwards."""

from __future__ import annotations

from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int, bn_momentum: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels, momentum=bn_momentum),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Sequential):
    def __init__(self, in_channels: int, num_classes: int, widths=(32, 64), dropout: float = 0.0,
                 bn_momentum: float = 0.1):
        layers: list[nn.Module] = []
        for width in widths:
            layers += [
                conv_bn_relu(in_channels, width, bn_momentum),
                conv_bn_relu(width, width, bn_momentum),
                nn.MaxPool2d(2),
            ]
            in_channels = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(in_channels, num_classes))
        super().__init__(*layers)

"""A small CNN for tiny images (the 8x8 digits): stages of two conv3x3-BN-ReLU and a 2x2 max pool, then global
average pooling, dropout and a linear layer. With widths (32, 64) on 8x8 inputs: 8x8 -> 4x4 -> 2x2, about
65 k parameters. Batch norm on purpose: MPL freezes its statistics for the student's extra forwards."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING
from torch import nn

from mpl_runner.core.checks import MAX_WIDTH, fraction, sizes
from mpl_runner.core.registry import register


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


@dataclass
class SmallCNNConfig:
    name: str = MISSING
    widths: list[int] = MISSING  # channels of each stage; each halves the side
    dropout: float = MISSING
    bn_momentum: float = MISSING  # PyTorch convention


def build(cfg, input_shape: tuple[int, ...], num_classes: int) -> SmallCNN:
    return SmallCNN(input_shape[0], num_classes, list(cfg.widths), cfg.dropout, cfg.bn_momentum)


def check(cfg) -> None:
    sizes(cfg, "model.widths", MAX_WIDTH, "channel counts")
    fraction(cfg, "model.dropout")
    fraction(cfg, "model.bn_momentum", closed=True)


def unfit(cfg, input_shape: tuple[int, ...]) -> tuple[str, str] | None:
    """Images only, and each stage halves the side: at most log2(side) stages."""
    dataset = cfg.dataset.name
    if len(input_shape) != 3:
        return "model", f"mlp for dataset={dataset} (inputs of shape {input_shape}, not images)"
    side = min(input_shape[1:])
    if 2 ** len(cfg.model.widths) > side:
        return "model.widths", (f"at most {side.bit_length() - 1} stages for dataset={dataset} ({side}x{side} images; "
                                "each stage halves the side)")
    return None


register("model", "small_cnn", SmallCNNConfig, build, check=check, unfit=unfit)

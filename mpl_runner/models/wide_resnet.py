"""WideResNet-depth-k for 32 x 32 images, as semi-supervised codebases use it (FixMatch, MPL).

Pre-activation basic blocks with leaky ReLU; dropout only before the final linear layer (the MPL paper's
"dropout 0.2"). WRN-28-2 has about 1.47 M parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING
from torch import nn

from mpl_runner.core.checks import MAX_WIDTH, at_least, count, fraction, positive
from mpl_runner.core.errors import ConfigError
from mpl_runner.core.registry import register


class BasicBlock(nn.Module):
    """BN - act - conv3x3 (stride) - BN - act - conv3x3, plus a shortcut (1x1 conv when the shape changes)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, bn_momentum: float, slope: float,
                 activate_before_residual: bool = False, bn_eps: float = 1e-5):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch, momentum=bn_momentum, eps=bn_eps)
        self.act1 = nn.LeakyReLU(slope)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch, momentum=bn_momentum, eps=bn_eps)
        self.act2 = nn.LeakyReLU(slope)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, padding=1, bias=False)
        same_shape = in_ch == out_ch and stride == 1
        self.shortcut = None if same_shape else nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)
        self.activate_before_residual = activate_before_residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(x))
        # As in the TensorFlow original, conv1 always sees the activated input and the shortcut sees it only in the
        # first block (several PyTorch ports feed conv1 the raw input in the first blocks of groups 2 and 3).
        residual = out if self.activate_before_residual else x
        out = self.conv2(self.act2(self.bn2(self.conv1(out))))
        return out + (residual if self.shortcut is None else self.shortcut(residual))


class WideResNet(nn.Module):
    def __init__(self, num_classes: int, depth: int = 28, widen_factor: int = 2, dropout: float = 0.0,
                 bn_momentum: float = 0.01, leaky_relu_slope: float = 0.1, bn_eps: float = 1e-5,
                 stem_width: int = 16):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {depth}")
        blocks_per_group = (depth - 4) // 6
        # The stem: 16 channels in the WRN paper and most PyTorch ports; 16 * widen_factor in the official MPL code.
        widths = [stem_width, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]

        self.stem = nn.Conv2d(3, widths[0], 3, 1, padding=1, bias=False)
        layers = []
        for group, stride in enumerate((1, 2, 2)):
            for i in range(blocks_per_group):
                layers.append(BasicBlock(
                    widths[group] if i == 0 else widths[group + 1], widths[group + 1], stride if i == 0 else 1,
                    bn_momentum, leaky_relu_slope, bn_eps=bn_eps,
                    # (an identity shortcut, where the stem is as wide as the first group, takes the raw input)
                    activate_before_residual=group == 0 and i == 0 and widths[0] != widths[1],
                ))
        self.blocks = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(widths[3], momentum=bn_momentum, eps=bn_eps)
        self.act = nn.LeakyReLU(leaky_relu_slope)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(widths[3], num_classes)
        self._init_weights(leaky_relu_slope)

    def _init_weights(self, slope: float) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=slope, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.pool(self.act(self.bn(self.blocks(self.stem(x))))).flatten(1)
        return self.fc(self.dropout(features))


@dataclass
class WideResNetConfig:
    name: str = MISSING
    depth: int = MISSING  # 6n + 4
    widen_factor: int = MISSING
    dropout: float = MISSING
    bn_momentum: float = MISSING  # PyTorch convention: 0.99 in TensorFlow terms is 0.01
    bn_eps: float = MISSING
    leaky_relu_slope: float = MISSING
    stem_width: int = MISSING  # channels of the first convolution (the official MPL code: 16 * widen_factor)


def build(cfg, input_shape: tuple[int, ...], num_classes: int) -> WideResNet:
    return WideResNet(num_classes, cfg.depth, cfg.widen_factor, cfg.dropout, cfg.bn_momentum, cfg.leaky_relu_slope,
                      cfg.bn_eps, cfg.stem_width)


def check(cfg) -> None:
    if not isinstance(cfg.model.depth, int) or not 10 <= cfg.model.depth <= 1000 or (cfg.model.depth - 4) % 6:
        raise ConfigError("model.depth", cfg.model.depth, "10, 16, 22, 28, ... (6n + 4) up to 1000")
    count(cfg, "model.widen_factor", 1, MAX_WIDTH // 64, why=" (the last stage has 64 x widen_factor channels)")
    fraction(cfg, "model.dropout")
    fraction(cfg, "model.bn_momentum", closed=True)
    positive(cfg, "model.bn_eps")
    at_least(cfg, "model.leaky_relu_slope", 0)
    count(cfg, "model.stem_width", 1, MAX_WIDTH)


def unfit(cfg, input_shape: tuple[int, ...]) -> tuple[str, str] | None:
    dataset = cfg.dataset.name
    if len(input_shape) != 3:
        return "model", f"mlp for dataset={dataset} (inputs of shape {input_shape}, not images)"
    if input_shape[0] != 3 or min(input_shape[1:]) < 8:
        return "model", (f"small_cnn or mlp for dataset={dataset} (wide_resnet needs 3-channel images of at least "
                         f"8x8, not {'x'.join(map(str, input_shape))})")
    return None


register("model", "wide_resnet", WideResNetConfig, build, check=check, unfit=unfit)

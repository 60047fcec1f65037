"""The official Meta Pseudo Labels RandAugment and cutout for CIFAR-10, on uint8 CHW tensors.

Source: google-research/google-research, ``meta_pseudo_labels/`` at commit 30adf0ec (the line numbers below are of
that version): ``augment.py`` and how ``data_utils.py`` calls it for CIFAR-10 (``cifar10_4000_uda``, the
``cifar10_4000_mpl`` data, data_utils.py:521-584; ``image_size`` 32, flag_utils.py:90).

* Strong view (data_utils.py:557-565): flip + pad-4 crop; ``RandAugment(cutout_const=4, translate_const=4,
  magnitude=M).distort``; ``cutout(pad_size=8, replace=128)``, a 16 x 16 grey square; then flip + crop again.
* ``M`` (``--augment_magnitude=16`` in the README) is the level itself, on a scale whose "max" is ``_MAX_LEVEL = 10``
  (augment.py:58): not a bound that levels are sampled up to, and the same for every image. M = 16 gives 1.6x the
  strengths at the max level.
* Per image (augment.py:644-661): one probability ``p ~ U(0.2, 0.8)`` shared by the layers; each of the
  ``num_layers = 2`` layers (augment.py:598) picks one of the 15 ops of :data:`OPS` uniformly (augment.py:622-626)
  and applies it if ``U(0, 1) <= p``. Rotate, shear and translate take a random sign (augment.py:454-488).
  Identity and SolarizeAdd are not among the ops. Empty pixels and cutouts are grey 128 (augment.py:644).

Where this differs from the official TF code: the colour blends (Color, Brightness, Sharpness: torchvision's; our
Contrast) truncate ``f*x + (1-f)*degenerate`` where TF's ``convert_image_dtype`` scales by 255.5/255 before
truncating, and torchvision rounds the smoothed image of Sharpness where TF truncates: at most one grey level. TF's
``blend`` clips to 0..255 an image scaled to 0..1 (augment.py:114-117), so a factor > 1 can push values past 1.0
into an unsaturated float->uint8 cast (undefined; it wraps on x86); we clamp to 0..255 as its docstring intends.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

MAX_LEVEL = 10  # augment.py:58
MAX_MAGNITUDE = 20  # past 2 * MAX_LEVEL, Posterize would keep more than 8 bits (augment.py:225, 531)
IMAGE_SIZE = 32
TRANSLATE_CONST = CUTOUT_CONST = IMAGE_SIZE // 8  # data_utils.py:560-561
CUTOUT_SIZE = 2 * (IMAGE_SIZE // 4)  # the cutout after RandAugment: pad_size 8 each side (data_utils.py:564)
CROP_PADDING = 4  # the weak view's pad-and-crop (data_utils.py:428-437)


def scaled(pixels: float, side: int) -> float:
    """A strength in pixels, given for CIFAR's 32 x 32 images, at another image side: pixel strengths (translate,
    the in-RandAugment cutout, the cutout after it, the crop padding) are fractions of the side, so they scale
    with ``side / 32`` (the official code sets them for 32 x 32 alone; README, "Fidelity", says so)."""
    return pixels * side / IMAGE_SIZE


def even_pixels(pixels: float, side: int) -> int:
    """:func:`scaled` to an even number of pixels (a square cut out about a centre pixel)."""
    return 2 * int(scaled(pixels, side) // 2)
FILL = 128  # "replace" (augment.py:644, data_utils.py:564)
OPS = (  # augment.py:622-626, in that order
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast",
    "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout",
)
PIXEL_OPS = frozenset({"TranslateX", "TranslateY", "Cutout"})  # strengths in pixels (scale with the side)
SIGNED = frozenset({"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"})  # _randomly_negate_tensor
NEAREST = InterpolationMode.NEAREST  # tf.contrib.image's default interpolation


def _mult(magnitude: float, multiplier: float) -> int:
    """``_mult_to_arg`` (augment.py:491-494): ``float32(level) / 10 * multiplier``, truncated to an int32."""
    return int(np.float32(magnitude) / np.float32(MAX_LEVEL) * np.float32(multiplier))


def _enhance(magnitude: float) -> float:
    return magnitude / MAX_LEVEL * 1.8 + 0.1  # _enhance_level_to_arg (augment.py:473-474)


# Each op's strength at a magnitude, in the units the op below takes; the signed ones before their random sign.
STRENGTH = {
    "Rotate": lambda m: m / MAX_LEVEL * 30.0,  # degrees, counter-clockwise (augment.py:461-464)
    "ShearX": lambda m: m / MAX_LEVEL * 0.3,  # shear factor s: out(x, y) = in(x + s*y, y) (augment.py:266-274, 477-481)
    "ShearY": lambda m: m / MAX_LEVEL * 0.3,  # out(x, y) = in(x, y + s*x) (augment.py:277-285)
    # pixels at a side of 32 (see scaled()): out(x) = in(x + t) (augment.py:254-257, 484-488)
    "TranslateX": lambda m, side=IMAGE_SIZE: m / MAX_LEVEL * scaled(TRANSLATE_CONST, side),
    "TranslateY": lambda m, side=IMAGE_SIZE: m / MAX_LEVEL * scaled(TRANSLATE_CONST, side),  # out(y) = in(y + t)
    # bits kept (augment.py:223-226, 531); TF clamps the shift 8 - bits to 0..7, so 0 bits keeps 1
    "Posterize": lambda m: max(_mult(m, 4), 1),
    # threshold (augment.py:178-181, 532); TF casts the int32 to uint8, so 409 (M = 16) wraps to 153
    "Solarize": lambda m: _mult(m, 256) % 256,
    "Color": _enhance,  # blend factor with the grey image (augment.py:194-197)
    "Contrast": _enhance,  # blend factor with a constant grey, see _contrast (augment.py:200-214)
    "Brightness": _enhance,  # blend factor with black (augment.py:217-220)
    "Sharpness": _enhance,  # blend factor with the smoothed image (augment.py:332-358)
    # side of the square in pixels, 2 * pad_size (augment.py:534), at a side of 32 (see scaled())
    "Cutout": lambda m, side=IMAGE_SIZE: 2 * _mult(m, scaled(CUTOUT_CONST, side)),
}


def strength(op: str, magnitude: float, side: int = IMAGE_SIZE) -> float:
    """The official strength of ``op`` at ``magnitude`` (see :data:`STRENGTH` for the units) on images of ``side``
    pixels (the pixel strengths scale with it: :func:`scaled`)."""
    if op not in STRENGTH:
        raise KeyError(f"{op} takes no strength" if op in OPS else f"{op} is not an official op")
    if op in PIXEL_OPS:
        return float(STRENGTH[op](magnitude, side))
    return float(STRENGTH[op](magnitude))


def _blend(image: torch.Tensor, degenerate: torch.Tensor, factor: float) -> torch.Tensor:
    # torchvision's blend (adjust_brightness & co.): factor 0 gives the degenerate image, 1 the image.
    return (image.float() * factor + degenerate.float() * (1.0 - factor)).clamp_(0, 255).to(torch.uint8)


def _contrast(image: torch.Tensor, factor: float) -> torch.Tensor:
    # The official contrast blends with the mean of the grey *histogram*, i.e. its pixel count / 256 (4 for a
    # 32 x 32 image), as a constant grey; torchvision's adjust_contrast blends with the image's mean grey level.
    level = min(image.shape[-1] * image.shape[-2] / 256.0, 255.0)
    return _blend(image, torch.full_like(image, int(level)), factor)


def _shear(image: torch.Tensor, s: float, fill, axis: int) -> torch.Tensor:
    # TF's projective transform shears about pixel (0, 0); torchvision's `center` counts from the image corner.
    angle = math.degrees(math.atan(s))
    shear = [angle, 0.0] if axis == 0 else [0.0, angle]
    return F.affine(image, angle=0.0, translate=[0.0, 0.0], scale=1.0, shear=shear, interpolation=NEAREST,
                    fill=fill, center=[0.5, 0.5])


def _translate(image: torch.Tensor, t: float, fill, axis: int) -> torch.Tensor:
    # TF translates by [-t, 0]: the content moves left (up) by t pixels for t > 0.
    shift = [-t, 0.0] if axis == 0 else [0.0, -t]
    return F.affine(image, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0], interpolation=NEAREST, fill=fill)


def cutout(image: torch.Tensor, size: int, fill=FILL) -> torch.Tensor:
    """``augment.cutout`` (augment.py:127-175): a square of side ``size`` (``pad_size = size // 2`` each side of a
    centre drawn uniformly over the image, clipped at the borders) set to ``fill``."""
    height, width = image.shape[-2:]
    cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
    pad = size // 2
    out = image.clone()
    out[..., max(0, cy - pad):cy + pad, max(0, cx - pad):cx + pad] = fill
    return out


_APPLY = {
    "AutoContrast": lambda x, s, fill: F.autocontrast(x),
    "Equalize": lambda x, s, fill: F.equalize(x),
    "Invert": lambda x, s, fill: F.invert(x),
    "Rotate": lambda x, s, fill: F.rotate(x, s, interpolation=NEAREST, fill=fill),
    "Posterize": lambda x, s, fill: F.posterize(x, int(s)),
    "Solarize": lambda x, s, fill: F.solarize(x, s),  # pixels >= threshold are inverted, as in TF
    "Color": lambda x, s, fill: F.adjust_saturation(x, s),  # blend with the grey image, as TF's color
    "Contrast": lambda x, s, fill: _contrast(x, s),
    "Brightness": lambda x, s, fill: F.adjust_brightness(x, s),
    "Sharpness": lambda x, s, fill: F.adjust_sharpness(x, s),  # the same 3x3 smoothing kernel and borders as TF
    "ShearX": lambda x, s, fill: _shear(x, s, fill, 0),
    "ShearY": lambda x, s, fill: _shear(x, s, fill, 1),
    "TranslateX": lambda x, s, fill: _translate(x, s, fill, 0),
    "TranslateY": lambda x, s, fill: _translate(x, s, fill, 1),
    "Cutout": lambda x, s, fill: cutout(x, int(s), fill),
}


def apply_op(image: torch.Tensor, op: str, magnitude: float, sign: int = 1, fill=FILL) -> torch.Tensor:
    """``op`` at the official strength for ``magnitude`` (pixel strengths at the image's side, :func:`scaled`);
    ``sign`` (+1 or -1) is that of the signed ops."""
    s = strength(op, magnitude, image.shape[-1]) * (sign if op in SIGNED else 1) if op in STRENGTH else 0.0
    return _APPLY[op](image, s, fill)


class OfficialRandAugment:
    """The official ``RandAugment.distort`` (augment.py:630-664) on a uint8 CHW image; every draw from the global
    torch generator, which the data sets seed per image."""

    def __init__(self, num_ops: int = 2, magnitude: float = 16, fill=FILL):
        self.num_ops, self.magnitude, self.fill = num_ops, magnitude, fill

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if image.dtype != torch.uint8:
            raise TypeError(f"OfficialRandAugment takes uint8 images, got {image.dtype}")
        prob = 0.2 + 0.6 * float(torch.rand(()))  # once per image, shared by the layers (augment.py:645)
        for _ in range(self.num_ops):
            op = OPS[int(torch.randint(len(OPS), ()))]
            if float(torch.rand(())) <= prob:
                sign = (1 if float(torch.rand(())) >= 0.5 else -1) if op in SIGNED else 1
                image = apply_op(image, op, self.magnitude, sign, self.fill)
        return image

    def __repr__(self) -> str:
        return f"OfficialRandAugment(num_ops={self.num_ops}, magnitude={self.magnitude}, fill={self.fill})"


class OfficialCutout:
    """The cutout the official CIFAR-10 strong view applies after RandAugment, always (data_utils.py:564)."""

    def __init__(self, size: int = CUTOUT_SIZE, fill=FILL):
        self.size, self.fill = size, fill

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return cutout(image, self.size, self.fill) if self.size > 0 else image

    def __repr__(self) -> str:
        return f"OfficialCutout(size={self.size}, fill={self.fill})"

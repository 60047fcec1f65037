"""The CIFAR-10 weak and strong views for a whole uint8 batch at once, on the batch's device (CPU or CUDA).

A batched twin of the per-image worker path (``weak_transform``, and ``strong_transform`` with
``randaugment="official"``, in :mod:`mpl_runner.data.image_workers`) and of :mod:`mpl_runner.data.randaugment`,
which defines the official op set, strengths and semantics; this module reuses them (``OPS``, ``SIGNED``,
``strength``, ``apply_op``) rather than restating them. Every image still gets its own draws, but every draw comes
from the explicit ``torch.Generator`` passed in (it must live on the images' device), never from the global RNG.

Draw order, fixed so that one generator state gives one output (bit-identical on CPU). ``N`` is the batch size and
``L`` the number of RandAugment layers; every call draws these whatever the images hold:

* :func:`flip_crop`: ``rand(N)`` (flip if < 0.5; not drawn for ``flip=False``), ``randint(2*padding + 1, (N,))``
  (top offset), the same (left).
* :func:`rand_augment` (:func:`draw_rand_augment`): ``rand(N)`` (p = 0.2 + 0.6 u), ``randint(15, (N, L))`` (ops),
  ``rand(N, L)`` (applied if <= p), ``rand(N, L)`` (sign +1 if >= 0.5), ``randint(H, (N, L))``,
  ``randint(W, (N, L))`` (the in-RandAugment Cutout centres).
* :func:`cutout`: ``randint(H, (N,))``, ``randint(W, (N,))``; nothing for ``size`` 0.
* :func:`weak`: flip_crop; :func:`strong` (on a weak view, as the official code builds it): rand_augment, cutout,
  flip_crop, in that order.

The inputs are never modified; outputs are new tensors (except ``cutout`` with ``size`` 0, which returns its input).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torchvision.transforms.v2 import functional as F

from mpl_runner.data.randaugment import CROP_PADDING, FILL, OPS, SIGNED, apply_op, even_pixels, scaled, strength

PAD_MODES = ("reflect", "grey")  # dataset.pad_mode: grey pads with FILL (data_utils.py:428-437)
_SIGNED_INDEX = [i for i, op in enumerate(OPS) if op in SIGNED]
_CUTOUT_INDEX = OPS.index("Cutout")


def _check(images: torch.Tensor, generator: torch.Generator) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise TypeError(f"expected uint8 images N x C x H x W, got {images.dtype} of shape {tuple(images.shape)}")
    if generator.device.type != images.device.type:
        raise ValueError(f"the generator is on {generator.device}, the images on {images.device}")


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Positions in a reflect-padded axis (``-pad .. size-1+pad``) -> source positions, as ``F.pad(mode="reflect")``
    (the edge pixel is not repeated)."""
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def flip_crop(images: torch.Tensor, generator: torch.Generator, padding: int = 4, flip: bool = True,
              fill: int | None = None) -> torch.Tensor:
    """``RandomHorizontalFlip()`` then ``RandomCrop(H x W, padding, padding_mode="reflect")`` per image (or, with a
    ``fill``, ``padding_mode="constant"`` with that value): each image is flipped with p = 0.5 (never for
    ``flip=False``), then cropped back to H x W from its padded version at a uniform offset in ``0 .. 2*padding``
    on each axis. One gather from computed source indices; no padded copy, no float."""
    _check(images, generator)
    n, c, h, w = images.shape
    if not 0 <= padding < min(h, w):
        raise ValueError(f"padding must be in 0..{min(h, w) - 1}, got {padding}")
    dev = images.device
    if flip:
        flipped = torch.rand(n, generator=generator, device=dev) < 0.5
    else:
        flipped = torch.zeros(n, dtype=torch.bool, device=dev)
    top = torch.randint(2 * padding + 1, (n,), generator=generator, device=dev)
    left = torch.randint(2 * padding + 1, (n,), generator=generator, device=dev)
    return flip_crop_at(images, flipped, top, left, padding, fill)


def flip_crop_at(images: torch.Tensor, flipped: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
                 padding: int = 4, fill: int | None = None) -> torch.Tensor:
    """:func:`flip_crop` with given draws (N each: flip or not, top and left offsets in ``0 .. 2*padding``)."""
    n, c, h, w = images.shape
    dev = images.device
    rows = torch.arange(h, device=dev) + (top - padding)[:, None]  # N x H, positions in the padded axis
    cols = torch.arange(w, device=dev) + (left - padding)[:, None]  # N x W, in the flipped image
    inside = None
    if fill is None:
        rows, cols = _reflect(rows, h), _reflect(cols, w)
    else:
        inside = (((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :])[:, None]
        rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    cols = torch.where(flipped[:, None], w - 1 - cols, cols)
    index = (rows[:, :, None] * w + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    out = images.reshape(n, c, h * w).gather(2, index).view(n, c, h, w)
    return out if inside is None else torch.where(inside, out, _fill_value(images, fill))


def _fill_value(images: torch.Tensor, fill) -> torch.Tensor:
    value = torch.as_tensor(fill, dtype=images.dtype, device=images.device)
    return value.view(-1, 1, 1) if value.ndim == 1 else value


def cutout_at(images: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, size: int, fill=FILL) -> torch.Tensor:
    """:func:`randaugment.cutout` at given centres (``cy``, ``cx``: N each): rows ``max(0, cy-pad) : cy+pad`` and
    columns ``max(0, cx-pad) : cx+pad`` of image i, ``pad = size // 2``, set to ``fill``."""
    pad = size // 2
    h, w = images.shape[-2:]
    rows = torch.arange(h, device=images.device)
    cols = torch.arange(w, device=images.device)
    in_rows = (rows >= (cy - pad)[:, None]) & (rows < (cy + pad)[:, None])  # N x H
    in_cols = (cols >= (cx - pad)[:, None]) & (cols < (cx + pad)[:, None])  # N x W
    mask = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # N x 1 x H x W
    return torch.where(mask, _fill_value(images, fill), images)


def cutout(images: torch.Tensor, generator: torch.Generator, size: int, fill=FILL) -> torch.Tensor:
    """:func:`randaugment.cutout` per image (:class:`randaugment.OfficialCutout`): a square of side ``size`` about
    a centre uniform over the image, clipped at the borders, set to ``fill``. ``size`` 0 is a no-op (no draws)."""
    _check(images, generator)
    if size <= 0:
        return images
    n, _, h, w = images.shape
    cy = torch.randint(h, (n,), generator=generator, device=images.device)
    cx = torch.randint(w, (n,), generator=generator, device=images.device)
    return cutout_at(images, cy, cx, size, fill)


def apply_op_batch(images: torch.Tensor, op: str, magnitude: float, sign: int = 1, fill=FILL,
                   centres: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`randaugment.apply_op` on every image of a batch: the same call, since torchvision's functionals take
    ``... x C x H x W`` and treat each image alone, except Cutout, whose square is centred per image at
    ``centres`` (N x 2: row, column)."""
    if op == "Cutout":
        if centres is None:
            raise ValueError("Cutout needs centres (N x 2)")
        return cutout_at(images, centres[:, 0], centres[:, 1], int(strength(op, magnitude, images.shape[-1])), fill)
    return apply_op(images, op, magnitude, sign, fill)


class RandAugmentDraws(NamedTuple):
    """The per-image draws of the official RandAugment for N images and L layers (see the module's draw order)."""

    prob: torch.Tensor  # N float: p ~ U(0.2, 0.8), shared by the image's layers
    ops: torch.Tensor  # N x L int64: indices into OPS
    applied: torch.Tensor  # N x L bool: U(0, 1) <= p
    signs: torch.Tensor  # N x L int64: +1 or -1 for SIGNED ops, +1 for the others
    centres: torch.Tensor  # N x L x 2 int64: (row, column) of the square, used where the op is Cutout


def draw_rand_augment(generator: torch.Generator, n: int, num_ops: int, height: int, width: int,
                      device: torch.device | str | None = None) -> RandAugmentDraws:
    """The draws :func:`rand_augment` uses, as ``OfficialRandAugment.__call__`` makes them per image: p once per
    image, then per layer an op uniform over :data:`OPS`, applied if ``U(0, 1) <= p``, with a sign for SIGNED ops."""
    device = generator.device if device is None else torch.device(device)
    shape = (n, num_ops)
    prob = 0.2 + 0.6 * torch.rand(n, generator=generator, device=device)
    ops = torch.randint(len(OPS), shape, generator=generator, device=device)
    applied = torch.rand(shape, generator=generator, device=device) <= prob[:, None]
    negative = torch.rand(shape, generator=generator, device=device) < 0.5
    signed = torch.isin(ops, torch.tensor(_SIGNED_INDEX, device=device))
    signs = torch.where(signed & negative, -1, 1)
    cy = torch.randint(height, shape, generator=generator, device=device)
    cx = torch.randint(width, shape, generator=generator, device=device)
    return RandAugmentDraws(prob, ops, applied, signs, torch.stack([cy, cx], dim=-1))


def apply_rand_augment(images: torch.Tensor, draws: RandAugmentDraws, magnitude: float, fill=FILL) -> torch.Tensor:
    """Apply ``draws`` layer by layer. Per layer the images are grouped by (op, sign) with one sort and one
    host sync, and each group goes through :func:`apply_op_batch` at once: a loop over ops, not images."""
    out = images.clone()
    keys = torch.where(draws.applied, 2 * draws.ops + (draws.signs < 0), -1)  # -1: not applied
    for layer in range(keys.shape[1]):
        key = keys[:, layer]
        order = torch.argsort(key, stable=True)
        counts = torch.bincount(key + 1, minlength=2 * len(OPS) + 1).tolist()
        start = counts[0]  # the images this layer leaves alone come first
        for group, count in enumerate(counts[1:]):
            if count == 0:
                continue
            index = order[start:start + count]
            start += count
            op, sign = OPS[group // 2], -1 if group % 2 else 1
            centres = draws.centres[index, layer] if group // 2 == _CUTOUT_INDEX else None
            out[index] = apply_op_batch(out[index], op, magnitude, sign, fill, centres)
    return out


def rand_augment(images: torch.Tensor, generator: torch.Generator, num_ops: int, magnitude: float,
                 fill=FILL) -> torch.Tensor:
    """:class:`randaugment.OfficialRandAugment` on each image of a uint8 N x C x H x W batch, its own draws each."""
    _check(images, generator)
    n, _, h, w = images.shape
    draws = draw_rand_augment(generator, n, num_ops, h, w, images.device)
    return apply_rand_augment(images, draws, magnitude, fill)


def crop_padding(side: int) -> int:
    """The pad of the pad-and-crop: 4 pixels at a side of 32, scaled with the side (:func:`randaugment.scaled`)."""
    return max(1, round(scaled(CROP_PADDING, side)))


def _pad_fill(pad_mode: str, fill=FILL):
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    return fill if pad_mode == "grey" else None


def weak(images: torch.Tensor, generator: torch.Generator, flip: bool = True, pad_mode: str = "reflect"
         ) -> torch.Tensor:
    """The weak view, uint8 (``weak_transform`` before its normalisation): flip + pad-4 crop, the pad reflected or
    grey (``pad_mode``) and scaled with the side."""
    return flip_crop(images, generator, crop_padding(images.shape[-1]), flip=flip, fill=_pad_fill(pad_mode))


def strong(weak_views: torch.Tensor, generator: torch.Generator, num_ops: int, magnitude: float, cutout_size: int,
           fill=FILL, flip: bool = True, pad_mode: str = "reflect") -> torch.Tensor:
    """The official strong view, uint8 (``strong_transform`` with ``randaugment="official"`` before its
    normalisation), built as the official code builds it from the image's weak view (its flipped, padded crop):
    RandAugment, a ``cutout_size`` square of ``fill``, flip + crop again (data_utils.py:557-565); ``flip=False``
    leaves out the flip. ``cutout_size`` and the pad are given for a side of 32 and scale with the images' side
    (:func:`randaugment.scaled`)."""
    side = weak_views.shape[-1]
    images = rand_augment(weak_views, generator, num_ops, magnitude, fill)
    images = cutout(images, generator, even_pixels(cutout_size, side), fill)
    return flip_crop(images, generator, crop_padding(side), flip=flip, fill=_pad_fill(pad_mode, fill))


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 -> float32 in 0..1 -> ``(x - mean) / std`` per channel, on the images' device: the same torchvision
    calls (``ToDtype(float32, scale=True)``, ``Normalize``) as the per-image path."""
    return F.normalize(F.to_dtype(images, torch.float32, scale=True), list(mean), list(std))

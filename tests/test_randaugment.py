"""The official MPL RandAugment (mpl_runner/data/randaugment.py): strengths, effects, per-image draws."""

import collections

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from conftest import compose_cfg
from mpl_runner.data import cifar10, image_workers, randaugment
from mpl_runner.data.randaugment import OPS, OfficialCutout, OfficialRandAugment, apply_op, strength

# Worked by hand from augment.py (commit 30adf0ec) at the official --augment_magnitude=16, _MAX_LEVEL = 10,
# translate_const = cutout_const = image_size // 8 = 4 (data_utils.py:560-561).
AT_16 = {
    "Rotate": 48.0,  # 16/10 * 30
    "ShearX": 0.48,  # 16/10 * 0.3
    "ShearY": 0.48,
    "TranslateX": 6.4,  # 16/10 * 4
    "TranslateY": 6.4,
    "Posterize": 6,  # int(16/10 * 4) = int(6.4)
    "Solarize": 153,  # int(16/10 * 256) = int(409.6) = 409, cast to uint8: 409 - 256
    "Color": 2.98,  # 16/10 * 1.8 + 0.1
    "Contrast": 2.98,
    "Brightness": 2.98,
    "Sharpness": 2.98,
    "Cutout": 12,  # 2 * pad_size, pad_size = int(16/10 * 4) = 6
}


def image(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def tf_transform(img: torch.Tensor, a) -> torch.Tensor:
    """tf.contrib.image.transform, nearest, then unwrap with 128: out(x, y) = in(a0 x + a1 y + a2, a3 x + a4 y + a5),
    rounded half away from zero (std::round); outside the image, 128."""
    x = img.numpy()
    h, w = x.shape[-2:]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    sx, sy = a[0] * xs + a[1] * ys + a[2], a[3] * xs + a[4] * ys + a[5]
    rx, ry = (np.sign(v) * np.floor(np.abs(v) + 0.5) for v in (sx, sy))
    inside = (rx >= 0) & (rx < w) & (ry >= 0) & (ry < h)
    out = np.full_like(x, 128)
    out[:, inside] = x[:, ry[inside].astype(int), rx[inside].astype(int)]
    return torch.from_numpy(out)


def tf_rotate(img: torch.Tensor, degrees: float) -> torch.Tensor:
    """tf.contrib.image.rotate (angles_to_projective_transforms): counter-clockwise about the image centre."""
    h, w = img.shape[-2:]
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    dx = ((w - 1) - (c * (w - 1) - s * (h - 1))) / 2
    dy = ((h - 1) - (s * (w - 1) + c * (h - 1))) / 2
    return tf_transform(img, [c, -s, dx, s, c, dy])


def agree(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a == b).all(dim=0).float().mean().item()


# --- (a) strengths ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", sorted(AT_16))
def test_strength_at_magnitude_16_is_the_official_formula(op):
    assert strength(op, 16) == pytest.approx(AT_16[op], abs=1e-9)


def test_official_constants_and_edge_levels():
    assert len(OPS) == 15 and set(AT_16) | {"AutoContrast", "Equalize", "Invert"} == set(OPS)
    assert randaugment.MAX_LEVEL == 10 and randaugment.FILL == 128 and randaugment.CUTOUT_SIZE == 16
    assert strength("Solarize", 10) == 0  # int(256) cast to uint8: every pixel is inverted
    assert strength("Posterize", 0) == 1  # TF clamps the shift of 8 to 7
    assert strength("Posterize", 20) == 8
    with pytest.raises(KeyError):
        strength("Invert", 16)


# --- (b) effects ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sign", [1, -1])
def test_rotate_turns_by_48_degrees_as_tf_does(sign):
    x = image()
    # Against tf.contrib.image.rotate's mapping written out here (not the torchvision call the code makes).
    # Mutant caught: the other direction, degrees taken as radians, another centre, or a bilinear fill.
    out = apply_op(x, "Rotate", 16, sign)
    assert agree(out, tf_rotate(x, sign * 48.0)) > 0.98  # float grids may round a rare pixel the other way
    assert agree(out, tf_rotate(x, -sign * 48.0)) < 0.5


@pytest.mark.parametrize("op, sign", [("ShearX", 1), ("ShearX", -1), ("ShearY", 1), ("ShearY", -1)])
def test_shear_is_tf_projective_shear_by_0_48(op, sign):
    x, s = image(), sign * 0.48
    out = apply_op(x, op, 16, sign)
    matrix = [1, s, 0, 0, 1, 0] if op == "ShearX" else [1, 0, 0, s, 1, 0]
    assert agree(out, tf_transform(x, matrix)) > 0.99


@pytest.mark.parametrize("sign", [1, -1])
def test_translate_shifts_by_6_4_pixels_nearest_6(sign):
    x = image()
    for op, dim in (("TranslateX", -1), ("TranslateY", -2)):
        out = apply_op(x, op, 16, sign)
        kept, filled = (slice(0, 26), slice(26, 32)) if sign == 1 else (slice(6, 32), slice(0, 6))
        source = slice(6, 32) if sign == 1 else slice(0, 26)
        assert torch.equal(out.narrow(dim, kept.start, 26), x.narrow(dim, source.start, 26))
        assert (out.narrow(dim, filled.start, 6) == 128).all()
        matrix = [1, 0, sign * 6.4, 0, 1, 0] if op == "TranslateX" else [1, 0, 0, 0, 1, sign * 6.4]
        assert torch.equal(out, tf_transform(x, matrix))


def test_posterize_keeps_6_bits_and_solarize_inverts_from_153():
    x = image()
    assert torch.equal(apply_op(x, "Posterize", 16), x & 0b11111100)
    assert torch.equal(apply_op(x, "Solarize", 16), torch.where(x < 153, x, 255 - x))


def test_colour_ops_blend_by_2_98():
    x = image()
    expected = (x.float() * 2.98).clamp(0, 255).to(torch.uint8)
    assert torch.equal(apply_op(x, "Brightness", 16), expected)
    # official contrast: a constant grey of 32*32/256 = 4 (the histogram's mean), not the image's mean
    expected = (x.float() * 2.98 + 4 * (1 - 2.98)).clamp(0, 255).to(torch.uint8)
    assert torch.equal(apply_op(x, "Contrast", 16), expected)



def tf_blend(degenerate: np.ndarray, image: np.ndarray, factor: float) -> np.ndarray:
    """augment.py's blend: degenerate + factor * (image - degenerate), clipped to 0..255, truncated to uint8."""
    return np.clip(degenerate + factor * (image - degenerate), 0, 255).astype(np.uint8).astype(np.float64)


def test_colour_and_sharpness_blend_by_2_98_as_tf_does():
    """Color and Sharpness against augment.py's formulas written out in numpy (not the torchvision calls the code
    makes): within the grey level TF's conversions round differently (a level of the degenerate image becomes
    |1 - 2.98| of the output). Mutant caught: a blend with another degenerate image (the mean colour, a blur of
    other weights), the factor inverted, or the op left out."""
    x = image()
    img = x.numpy().astype(np.float64)
    grey = np.floor(0.2989 * img[0] + 0.587 * img[1] + 0.114 * img[2] + 0.5)  # rgb_to_grayscale, to uint8
    color = tf_blend(np.broadcast_to(grey, img.shape), img, 2.98)
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=np.float64) / 13  # augment.py:339-345
    smooth = img.copy()  # the 1-pixel border keeps the image (augment.py:350-355)
    smooth[:, 1:-1, 1:-1] = sum(kernel[dy, dx] * img[:, dy:dy + 30, dx:dx + 30] for dy in range(3) for dx in range(3))
    sharp = tf_blend(np.clip(smooth, 0, 255).astype(np.uint8).astype(np.float64), img, 2.98)
    for op, reference in (("Color", color), ("Sharpness", sharp)):
        out = apply_op(x, op, 16).numpy().astype(np.float64)
        diff = np.abs(out - reference)
        assert diff.max() <= 3 and diff.mean() < 1, (op, diff.max(), diff.mean())  # (a mutant: 30 and more)
        assert np.abs(out - img).mean() > 10  # the op does change the image: the comparison can fail


def filled_box(out: torch.Tensor) -> tuple[int, int]:
    rows, cols = (out == 128).all(dim=0).nonzero(as_tuple=True)
    assert (out == 128).all(dim=0).sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


@pytest.mark.parametrize("cut, side", [(lambda x: apply_op(x, "Cutout", 16), 12), (OfficialCutout(), 16)])
def test_cutout_is_a_grey_square_clipped_at_the_borders(cut, side):
    sizes = set()
    for seed in range(40):
        torch.manual_seed(seed)
        sizes.add(filled_box(cut(torch.zeros(3, 32, 32, dtype=torch.uint8))))
    assert (side, side) in sizes and all(h <= side and w <= side for h, w in sizes)


# --- selection logic and (c) per-image draws ----------------------------------------------------------------------


def test_layers_pick_ops_uniformly_with_one_probability_per_image(monkeypatch):
    calls = []
    monkeypatch.setattr(randaugment, "apply_op", lambda x, op, m, sign, fill: calls.append((op, sign)) or x)
    torch.manual_seed(0)
    images = 3000
    for _ in range(images):
        OfficialRandAugment(2, 16)(image())
    assert 0.45 < len(calls) / (2 * images) < 0.55  # p ~ U(0.2, 0.8): half the layers apply on average
    counts = collections.Counter(op for op, _ in calls)
    mean = len(calls) / len(OPS)  # about 200 each, binomial sd about 14
    assert set(counts) == set(OPS) and all(0.7 * mean < c < 1.3 * mean for c in counts.values())
    signs = collections.Counter(sign for op, sign in calls if op in randaugment.SIGNED)
    assert abs(signs[1] - signs[-1]) < 0.15 * (signs[1] + signs[-1])
    assert all(sign == 1 for op, sign in calls if op not in randaugment.SIGNED)


def test_each_image_gets_its_own_draw():
    transform, x = OfficialRandAugment(2, 16), image()

    def views(seed):
        torch.manual_seed(seed)
        return torch.stack([transform(x) for _ in range(16)])

    assert torch.equal(views(0), views(0))
    assert not torch.equal(views(0), views(1))
    first = views(0)
    assert len({tuple(view.flatten().tolist()) for view in first}) > 4


# --- (d) dtype and shape ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("magnitude", [0, 5, 10, 16, 20])
def test_every_op_keeps_uint8_and_shape(magnitude):
    x = image()
    for op in OPS:
        for sign in (1, -1):
            out = apply_op(x, op, magnitude, sign)
            assert out.dtype == torch.uint8 and out.shape == x.shape, op
    torch.manual_seed(0)
    out = OfficialCutout()(OfficialRandAugment(2, magnitude)(x))
    assert out.dtype == torch.uint8 and out.shape == x.shape


def test_strong_transform_switch():
    cfg = compose_cfg("dataset=cifar10_4k", "model=wrn28_2").dataset
    assert cfg.randaugment == "official"  # the default
    official = image_workers.strong_transform(cfg, cifar10.MEAN, cifar10.STD)
    cfg.randaugment = "torchvision"
    torchvision = image_workers.strong_transform(cfg, cifar10.MEAN, cifar10.STD)
    assert any(isinstance(t, OfficialRandAugment) for t in official.transforms)
    assert any(isinstance(t, OfficialCutout) for t in official.transforms)
    assert any(isinstance(t, v2.RandAugment) for t in torchvision.transforms)
    torch.manual_seed(0)
    out = official(image())
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32


# --- config -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, message", [
    (["dataset.randaugment=pil"], "one of official, torchvision"),
    (["dataset.randaugment_magnitude=21"], "0 to 20 (the official level"),
    (["dataset.randaugment=torchvision", "dataset.randaugment_magnitude=31"], "0 to 30 (torchvision's scale)"),
    (["dataset.cutout_size=15"], "an even number of pixels from 0 to 32"),
])
def test_magnitude_range_follows_the_switch(make_cfg, overrides, message):
    from mpl_runner.core.errors import ConfigError
    from mpl_runner.gates.validate import validate

    with pytest.raises(ConfigError, match=None) as err:
        validate(make_cfg("dataset=cifar10_4k", *overrides))
    assert message in str(err.value)


def test_presets_default_to_official(make_cfg):
    from mpl_runner.gates.validate import validate

    for preset in ("cifar10_250", "cifar10_1k", "cifar10_4k"):
        cfg = make_cfg(f"dataset={preset}")
        assert cfg.dataset.randaugment == "official" and cfg.dataset.cutout_size == 16
        validate(cfg)
    validate(make_cfg("dataset=cifar10_4k", "dataset.randaugment=torchvision", "dataset.randaugment_magnitude=30"))

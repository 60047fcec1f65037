"""Batched per-image CIFAR augmentation (mpl_runner/data/batched_augment.py) against the per-image path."""

import pytest
import torch
import torch.nn.functional as nnf
from torchvision.transforms import v2

from mpl_runner.data import batched_augment as ba
from mpl_runner.data import cifar10, randaugment
from mpl_runner.data.randaugment import FILL, OPS, SIGNED

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]  # (skipped without CUDA: conftest.py)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors: one intra-op thread is fastest, and robust on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def images(n: int, seed: int = 0, device: str = "cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g).to(device)


def gen(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def candidates(image: torch.Tensor, padding: int = 4, grey: bool = False) -> torch.Tensor:
    """The 2 x 81 flip-then-crop views of one C x H x W image (padded with F.pad's reflect mode, or grey 128)."""
    views = []
    for flipped in (image, image.flip(-1)):
        if grey:
            padded = nnf.pad(flipped[None], [padding] * 4, mode="constant", value=FILL)[0]
        else:
            padded = nnf.pad(flipped[None].float(), [padding] * 4, mode="reflect")[0].to(torch.uint8)
        views += [padded[:, t:t + 32, l:l + 32] for t in range(2 * padding + 1) for l in range(2 * padding + 1)]
    return torch.stack(views)


# --- flip + crop ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_weak_view_is_a_flip_and_reflect_crop_of_its_own_image(device):
    x = images(12, device=device)
    out = ba.weak(x, gen(1, device)).cpu()
    assert out.dtype == torch.uint8 and out.shape == x.shape
    cands = [candidates(image) for image in x.cpu()]
    for i, view in enumerate(out):
        matches = [(view == c).flatten(1).all(1).any().item() for c in cands]
        assert matches[i], f"view {i} is no flip + crop of image {i}"
        assert sum(matches) == 1, f"view {i} also matches another image"


@pytest.mark.parametrize("device", DEVICES)
def test_grey_padding_gives_flips_and_grey_padded_crops_as_the_official_code(device):
    """pad_mode=grey (data_utils.py pads with 128): each view is one of its own image's flips and grey-padded crops,
    the very set torchvision's RandomCrop(padding_mode="constant", fill=128) draws from (the worker pipeline's)."""
    x = images(40, device=device)
    out = ba.weak(x, gen(3, device), pad_mode="grey").cpu()
    crop = v2.Compose([v2.RandomHorizontalFlip(), v2.RandomCrop(32, padding=4, fill=FILL, padding_mode="constant")])
    grey_borders = 0
    for image, view in zip(x.cpu(), out):
        cands = candidates(image, grey=True)
        assert (view == cands).flatten(1).all(1).any(), "not a flip + grey-padded crop of its image"
        torch.manual_seed(0)
        assert (crop(image) == cands).flatten(1).all(1).any()  # the workers' transform: the same set of views
        grey_borders += bool((view[:, 0] == FILL).all() or (view[:, -1] == FILL).all()
                             or (view[:, :, 0] == FILL).all() or (view[:, :, -1] == FILL).all())
    assert grey_borders > 20  # 1 - (1/9)^2 of the views have a grey border row or column: reflect would have none


def test_the_strong_view_is_built_on_the_weak_view():
    """The official strong view starts from the weak view's own crop: with RandAugment and cutout off, it is a
    flip + crop of the weak view (a second flip + crop of the image would not keep the weak view's grey border)."""
    x = torch.zeros(200, 3, 32, 32, dtype=torch.uint8)
    g = gen(4)
    weak = ba.weak(x, g, pad_mode="grey")
    strong = ba.strong(weak, g, num_ops=0, magnitude=16, cutout_size=0, pad_mode="grey")
    for w, s in zip(weak, strong):
        assert (s == candidates(w, grey=True)).flatten(1).all(1).any()
    # a view padded twice can be grey over up to 8 rows: only a strong view built on a padded weak view is
    assert ((strong[:, 0] == FILL).all(-1).sum(-1) > 4).any()


def test_without_flip_the_views_are_crops_only():
    x = images(8)
    out = ba.weak(x, gen(2), flip=False)
    for image, view in zip(x, out):
        found = (view == candidates(image)).flatten(1).all(1).nonzero().flatten().tolist()
        assert found and all(k < 81 for k in found)  # an unflipped crop


def test_flip_and_offsets_are_uniform():
    # A coordinate image (channel 0: row, channel 1: column) shows where every output pixel came from.
    n = 2000
    rows, cols = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    grid = torch.stack([rows, cols, torch.zeros_like(rows)])
    out = ba.flip_crop(grid.to(torch.uint8).expand(n, 3, 32, 32), gen(0)).long()
    flipped = out[:, 1, 0, 5] < out[:, 1, 0, 4]  # columns 4, 5 come from left, left + 1
    assert 0.45 < flipped.float().mean() < 0.55
    # Row 4 of the output is source row top (top - 4 + 4); column 4 is source column left unless flipped.
    top = out[:, 0, 4, 0]
    left = torch.where(flipped, 31 - out[:, 1, 0, 4], out[:, 1, 0, 4])
    for offsets in (top, left):
        counts = torch.bincount(offsets, minlength=9)
        assert len(counts) == 9 and (counts > 0.7 * n / 9).all() and (counts < 1.3 * n / 9).all()


# --- ops: batched == per image ----------------------------------------------------------------------------------


def op_batch() -> torch.Tensor:
    x = images(24, seed=3)
    x[0] = 7  # constant: autocontrast / equalize edge cases
    x[1] = x[1] // 8 + 100  # low contrast
    x[2, :, :16] = 0
    return x


def per_image_cutouts(x, cut) -> tuple[list[list[int]], list[torch.Tensor]]:
    """``cut`` (a per-image cutout, drawing its centre from the global RNG) of each image, seeded by its index; and
    the centre (row, column) each drew."""
    centres, expected = [], []
    for i, image in enumerate(x):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(i)
            centres.append([int(torch.randint(32, ())), int(torch.randint(32, ()))])
            torch.manual_seed(i)
            expected.append(cut(image))
    return centres, expected


@pytest.mark.parametrize("op, sign", [(op, s) for op in OPS for s in ((1, -1) if op in SIGNED else (1,))])
def test_batched_op_equals_apply_op_per_image(op, sign):
    """Each image of a batch gets the op exactly as it gets it alone, whatever its neighbours. For 14 ops
    apply_op_batch hands the whole batch to the very functional apply_op calls, so this checks what that relies on:
    that the functional treats each image of ``N x C x H x W`` alone (the per-op strengths are checked against the
    official formulas in tests/test_randaugment.py). Mutants caught: a batched op computed over the batch as one
    image (AutoContrast's range, Equalize's histogram, Contrast's grey level, the rotation centre of a stacked
    image: checked by stacking the batch into one tall image), or outputs that depend on the neighbours."""
    x = op_batch()
    others = x.clone()
    others[1::2] = images(12, seed=9)  # every other image replaced: the rest must keep their outputs
    for magnitude in (0, 5, 10, 16, 20):
        if op == "Cutout":  # per-image centres: draw each as randaugment.cutout does, from the seeded global RNG
            centres, expected = per_image_cutouts(x, lambda image: randaugment.apply_op(image, op, magnitude, sign))
            out = ba.apply_op_batch(x, op, magnitude, sign, centres=torch.tensor(centres))
            out_others = ba.apply_op_batch(others, op, magnitude, sign, centres=torch.tensor(centres))
        else:
            expected = [randaugment.apply_op(image, op, magnitude, sign) for image in x]
            out = ba.apply_op_batch(x, op, magnitude, sign)
            out_others = ba.apply_op_batch(others, op, magnitude, sign)
        assert out.dtype == torch.uint8 and torch.equal(out, torch.stack(expected)), (op, sign, magnitude)
        assert torch.equal(out_others[0::2], out[0::2]), (op, sign, magnitude)


def test_rand_augment_equals_the_per_image_chain_under_the_same_draws():
    x, num_ops, magnitude = images(300, seed=4), 2, 16
    draws = ba.draw_rand_augment(gen(5), len(x), num_ops, 32, 32)
    # Centres as randaugment.cutout draws them from a seeded global RNG, so the reference can replay them.
    seeds = torch.arange(len(x) * num_ops).view(len(x), num_ops)
    with torch.random.fork_rng(devices=[]):
        centres = []
        for seed in seeds.flatten().tolist():
            torch.manual_seed(seed)
            centres.append([int(torch.randint(32, ())), int(torch.randint(32, ()))])
    draws = draws._replace(centres=torch.tensor(centres).view(len(x), num_ops, 2))
    out = ba.apply_rand_augment(x, draws, magnitude)
    for i, image in enumerate(x):
        for layer in range(num_ops):
            if draws.applied[i, layer]:
                op = OPS[draws.ops[i, layer]]
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(int(seeds[i, layer]))
                    image = randaugment.apply_op(image, op, magnitude, int(draws.signs[i, layer]))
        assert torch.equal(out[i], image), i


# --- per-image draws, determinism -------------------------------------------------------------------------------


def test_each_image_of_a_batch_gets_its_own_views():
    x = images(1).expand(64, 3, 32, 32)
    views = ba.strong(x, gen(0), 2, 16, 16)
    assert len({tuple(v.flatten().tolist()) for v in views}) > 40
    weak = ba.weak(x, gen(0))
    assert len({tuple(v.flatten().tolist()) for v in weak}) > 30  # 162 possible views


@pytest.mark.parametrize("device", DEVICES)
def test_same_seed_same_views_and_the_global_rng_is_untouched(device):
    x = images(32, device=device)
    state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state() if device == "cuda" else None

    def views(seed):
        g = gen(seed, device)
        return ba.weak(x, g), ba.strong(x, g, 2, 16, 16)

    first, again, other = views(0), views(0), views(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not any(torch.equal(a, b) for a, b in zip(first, other))
    assert torch.equal(torch.get_rng_state(), state)
    if cuda_state is not None:
        assert torch.equal(torch.cuda.get_rng_state(), cuda_state)
    assert all(v.device == x.device and v.dtype == torch.uint8 and v.shape == x.shape for v in first)


def test_generator_must_be_on_the_images_device_and_images_uint8():
    with pytest.raises(TypeError):
        ba.weak(images(2).float(), gen(0))
    if torch.cuda.is_available():
        with pytest.raises(ValueError):
            ba.weak(images(2, device="cuda"), gen(0))


# --- the probability structure ------------------------------------------------------------------------------------


def test_layers_apply_with_one_probability_per_image_and_uniform_ops():
    n = 4000
    x = images(n, seed=6)
    x[:, :, 0, 0], x[:, :, 0, 1] = 0, 255  # every channel spans 0..255: AutoContrast leaves it as is
    draws = ba.draw_rand_augment(gen(7), n, 2, 32, 32)
    assert ((draws.prob >= 0.2) & (draws.prob <= 0.8)).all()
    sd = (0.25 / n) ** 0.5
    assert abs(draws.applied.float().mean() - 0.5) < 3 * sd  # E[p] = 0.5
    # p is shared by the layers: P(no layer) = E[(1 - p)^2] = 0.28 for p ~ U(0.2, 0.8) (0.25 if drawn per layer)
    none = ~draws.applied.any(1)
    assert abs(none.float().mean() - 0.28) < 0.021
    counts = torch.bincount(draws.ops.flatten(), minlength=len(OPS))
    assert (counts > 0.8 * 2 * n / 15).all() and (counts < 1.2 * 2 * n / 15).all()
    signed = torch.isin(draws.ops, torch.tensor([OPS.index(op) for op in SIGNED]))
    assert (draws.signs[~signed] == 1).all() and abs(draws.signs[signed].float().mean()) < 0.06

    # Every op but AutoContrast changes these images at magnitude 16, and only Invert twice undoes one: the images
    # left unchanged are exactly those the draws predict, about E[(1 - 14p/15)^2] + E[p^2] / 225 = 0.3118 of them.
    out = ba.apply_rand_augment(x, draws, 16)
    unchanged = (out == x).flatten(1).all(1)
    applied_op = torch.where(draws.applied, draws.ops, -1)
    no_effect = (applied_op == -1) | (applied_op == OPS.index("AutoContrast"))
    predicted = no_effect.all(1) | (applied_op == OPS.index("Invert")).all(1)
    assert torch.equal(unchanged, predicted)
    assert abs(unchanged.float().mean() - 0.3118) < 0.022


# --- cutout and normalisation -----------------------------------------------------------------------------------


def test_cutout_is_one_grey_square_per_image_clipped_at_the_borders():
    n, size = 400, 16
    out = ba.cutout(torch.zeros(n, 3, 32, 32, dtype=torch.uint8), gen(0), size)
    assert set(out.unique().tolist()) == {0, FILL} and (out == FILL).all(1).eq((out == FILL).any(1)).all()
    full = 0
    for view in (out[:, 0] == FILL):
        rows, cols = view.nonzero(as_tuple=True)
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert view.sum() == (r1 - r0) * (c1 - c0)  # one filled rectangle
        assert r1 - r0 <= size and c1 - c0 <= size
        assert r1 - r0 == size or r0 == 0 or r1 == 32  # shorter only where the border clips it
        assert c1 - c0 == size or c0 == 0 or c1 == 32
        full += (r1 - r0 == size) and (c1 - c0 == size)
    assert 0.15 * n < full < 0.35 * n  # centre in 8..24 on both axes: (17/32)^2 = 0.28 of the time
    assert torch.equal(ba.cutout(out, gen(0), 0), out)


def test_cutout_matches_official_cutout_at_the_same_centres():
    x = images(40, seed=8)
    centres, expected = per_image_cutouts(x, randaugment.OfficialCutout(16))
    cy, cx = torch.tensor(centres).T
    assert torch.equal(ba.cutout_at(x, cy, cx, 16), torch.stack(expected))


def test_normalize_matches_the_per_image_transform():
    x = images(8)
    transform = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(cifar10.MEAN, cifar10.STD)])
    expected = torch.stack([transform(image) for image in x])
    out = ba.normalize(x, cifar10.MEAN, cifar10.STD)
    assert out.dtype == torch.float32 and torch.equal(out, expected)

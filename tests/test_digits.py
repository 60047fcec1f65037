"""The 8x8 digits benchmark: splits that follow the validation protocol, per-image views, runs end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import compose_cfg, group_overrides
from mpl_runner.data.digits import IMAGES as DIGITS_IMAGES
from mpl_runner.data.digits import build, digit_images, split, strong_view, translate, weak_view
from mpl_runner.core.errors import ConfigError
from mpl_runner.loop.run import run
from mpl_runner.gates.validate import validate

CPU = torch.device("cpu")
FAST = ["trainer.steps=20", "trainer.eval_interval=10", "trainer.log_interval=10", "trainer.num_threads=1",
        "trainer.checkpoint_interval=null", "trainer.progress=false", "device=cpu"]


def digits_cfg(**overrides):
    """``conf/dataset/digits.yaml`` (run seed 0) with ``overrides``."""
    return compose_cfg("dataset=digits", "model=small_cnn", *group_overrides("dataset", **overrides)).dataset


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return digit_images()[1].numpy()


def shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``image`` (C, H, W) moved down by dy and right by dx, zeros where it leaves the frame."""
    out = torch.zeros_like(image)
    h, w = image.shape[1:]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        image[:, max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def is_translation(view: torch.Tensor, image: torch.Tensor, max_shift: int) -> bool:
    shifts = range(-max_shift, max_shift + 1)
    return any(torch.equal(view, shifted(image, dy, dx)) for dy in shifts for dx in shifts)


def test_images_are_the_sklearn_set_scaled_to_unit_range():
    x, y = digit_images()
    assert x.shape == (DIGITS_IMAGES, 1, 8, 8) and x.dtype == torch.float32
    assert x.min() == 0 and x.max() == 1 and set(y.tolist()) == set(range(10))


def test_splits_are_disjoint_balanced_and_cover_the_pool(labels):
    s = split(labels, digits_cfg(split_seed=3))
    assert len(s.test) == 500 and len(s.pool) == DIGITS_IMAGES - 500
    assert not set(s.pool) & set(s.test) and set(s.pool) | set(s.test) == set(range(DIGITS_IMAGES))
    labeled, val, unlabeled = set(s.labeled), set(s.val), set(s.unlabeled.tolist())
    assert len(labeled) == 50 and len(val) == 200
    assert not labeled & val and not val & unlabeled
    assert labeled <= unlabeled and unlabeled | val == set(range(len(s.pool)))  # pool positions
    pool_labels = labels[s.pool]
    assert np.bincount(pool_labels[s.labeled], minlength=10).tolist() == [5] * 10
    assert np.bincount(pool_labels[s.val], minlength=10).tolist() == [20] * 10
    assert s.labeled == sorted(s.labeled) and s.val == sorted(s.val)
    # the test set is stratified: each class about its share of 500
    share = np.bincount(labels, minlength=10) * 500 / len(labels)
    assert np.all(np.abs(np.bincount(labels[s.test], minlength=10) - share) <= 1)


def test_split_seed_moves_labeled_and_val_but_not_test(labels):
    a, b = split(labels, digits_cfg(split_seed=0)), split(labels, digits_cfg(split_seed=1))
    assert np.array_equal(a.test, b.test) and np.array_equal(a.pool, b.pool)
    assert a.labeled != b.labeled and a.val != b.val
    assert split(labels, digits_cfg(split_seed=1)).labeled == b.labeled  # reproducible
    assert not np.array_equal(split(labels, digits_cfg(test_seed=1)).test, a.test)


def test_build_hands_out_the_split_images_with_their_labels():
    x_all, y_all = digit_images()
    cfg = digits_cfg(split_seed=2, weak_shift=0, unlabeled_batch_size=None)
    s = split(y_all.numpy(), cfg)
    data = build(cfg, CPU)
    assert data.labeled_indices == s.labeled and data.val_indices == s.val
    assert data.info == {"pool_images": 1297, "labeled_images": 50, "unlabeled_images": 1097, "val_images": 200,
                         "test_images": 500}
    (x_val, y_val), = data.eval_splits["val"]
    (x_test, y_test), = data.eval_splits["test"]
    assert torch.equal(x_val, x_all[s.pool[s.val]]) and torch.equal(y_val, y_all[s.pool[s.val]])
    assert torch.equal(x_test, x_all[s.test]) and torch.equal(y_test, y_all[s.test])
    batch = next(data.train_batches())
    assert torch.equal(batch.x_l, x_all[s.pool[s.labeled]]) and torch.equal(batch.y_l, y_all[s.pool[s.labeled]])
    assert torch.equal(batch.x_uw, x_all[s.pool[s.unlabeled]])


def test_labels_of_a_random_labeled_batch_match_its_images():
    x_all, y_all = digit_images()
    cfg = digits_cfg(weak_shift=0, labeled_batch_size=16)
    s = split(y_all.numpy(), cfg)
    images, labels = x_all[s.pool[s.labeled]].flatten(1), y_all[s.pool[s.labeled]]
    torch.manual_seed(0)
    batch = next(build(cfg, CPU).train_batches())
    assert batch.x_l.shape == (16, 1, 8, 8)
    for x, y in zip(batch.x_l.flatten(1), batch.y_l):
        same = (images == x).all(dim=1)
        assert same.any() and (labels[same] == y).all()


def test_weak_view_is_a_translation_of_each_image_with_its_own_shift():
    x_all, y_all = digit_images()
    cfg = digits_cfg(weak_shift=1)
    s = split(y_all.numpy(), cfg)
    originals = x_all[s.pool[s.labeled]]
    torch.manual_seed(0)
    views = next(build(cfg, CPU).train_batches()).x_l
    assert all(is_translation(v, x, 1) for v, x in zip(views, originals))
    assert sum(not torch.equal(v, x) for v, x in zip(views, originals)) > 25  # 8 in 9 are moved
    copies = x_all[:1].repeat(64, 1, 1, 1)
    moved = translate(copies, 2)
    assert all(is_translation(v, copies[0], 2) for v in moved)
    assert len({tuple(v.flatten().tolist()) for v in moved}) > 10  # each image its own draw


def test_strong_views_change_images_each_with_its_own_draw():
    cfg = digits_cfg()
    copies = digit_images()[0][:1].repeat(64, 1, 1, 1)
    torch.manual_seed(0)
    strong = strong_view(copies, cfg)
    assert strong.min() >= 0 and strong.max() <= 1
    assert not any(torch.equal(v, copies[0]) for v in strong)
    assert len({tuple(v.flatten().tolist()) for v in strong}) == 64
    assert not torch.equal(weak_view(copies, cfg), strong)


def test_batches_follow_the_global_rng_and_shard_over_ranks():
    cfg = digits_cfg()
    data = build(cfg, CPU)
    torch.manual_seed(5)
    first = next(data.train_batches())
    state = torch.get_rng_state()
    second = next(data.train_batches())
    torch.set_rng_state(state)
    again = next(data.train_batches())
    for a, b in zip((second.x_l, second.x_uw, second.x_us), (again.x_l, again.x_uw, again.x_us)):
        assert torch.equal(a, b)
    assert not torch.equal(first.x_us, second.x_us)
    torch.set_rng_state(state)
    shard = next(data.train_batches(0, 1, 2))
    assert torch.equal(shard.x_us, second.x_us[1::2]) and len(shard.x_uw) == 128
    labeled_only = next(data.train_batches(views="labeled", labeled_batch_size=20))
    assert labeled_only.x_uw is None and labeled_only.x_us is None and labeled_only.x_l.shape == (20, 1, 8, 8)


@pytest.mark.parametrize(
    "method", [["method=supervised"], ["method=uda"], ["method=mpl", "method.student_wait_steps=5",
                                                       "method.finetune.steps=5", "method.finetune.batch_size=20"]],
    ids=["supervised", "uda", "mpl"],
)
def test_tiny_run_completes(make_cfg, tmp_path, method):
    cfg = make_cfg("dataset=digits", "model=small_cnn", *method, *FAST)
    validate(cfg)
    record = run(cfg, tmp_path)
    assert record["status"] == "completed"
    assert 0 <= record["test/acc"] <= 1
    assert (tmp_path / "labeled_indices.json").is_file() and (tmp_path / "views.png").is_file()


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["model=small_cnn"], "model"),  # two moons: points, not images
        (["dataset=digits", "model=wrn28_2"], "model"),
        (["dataset=digits", "model=small_cnn", "model.widths=[8,8,8,8]"], "model.widths"),
        (["dataset=digits", "dataset.num_labeled=55"], "dataset.num_labeled"),
        (["dataset=digits", "dataset.num_labeled=1300"], "dataset.num_labeled"),
        (["dataset=digits", "dataset.num_val=15"], "dataset.num_val"),
        (["dataset=digits", "dataset.test_size=5"], "dataset.test_size"),
        (["dataset=digits", "dataset.weak_shift=4"], "dataset.weak_shift"),
        (["dataset=digits", "dataset.strong_shift=-1"], "dataset.strong_shift"),
        (["dataset=digits", "dataset.cutout_size=9"], "dataset.cutout_size"),
        (["dataset=digits", "dataset.strong_jitter=1.0"], "dataset.strong_jitter"),
        (["dataset=digits", "dataset.unlabeled_batch_size=0"], "dataset.unlabeled_batch_size"),
    ],
)
def test_bad_settings_are_refused(make_cfg, overrides, key):
    with pytest.raises(ConfigError) as err:
        validate(make_cfg(*overrides))
    assert err.value.key == key


def test_too_many_labels_for_a_class_are_refused(labels, make_cfg):
    # 1290 labeled images fit the pool of 1297, but not 129 of each class (the fewest, 8s, number 126)
    validate(make_cfg("dataset=digits", "dataset.num_labeled=1290", "dataset.num_val=0"))
    with pytest.raises(ConfigError, match="at most 126"):
        split(labels, digits_cfg(num_labeled=1290, num_val=0))

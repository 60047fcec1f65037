"""CIFAR-10 reader, split, transforms and batches, on a tiny fake data set in the real layout (no network)."""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from conftest import compose_cfg, group_overrides
from mpl_runner.data import cifar10, image_workers
from mpl_runner.data.cifar10 import build, read_cifar10
from mpl_runner.data.image_sets import to_chw, unlabeled_indices
from mpl_runner.core.errors import ConfigError, DataError
from mpl_runner.gates.validate import validate

REAL_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
PER_BATCH = 20  # 2 images of each class per file: 100 training images, 20 test images


def write_fake_cifar10(root: Path, seed: int = 0) -> dict[str, dict]:
    """Write ``root/cifar-10-batches-py`` as the official release does (minus ``filenames``); return the dicts."""
    rng = np.random.default_rng(seed)
    folder = root / cifar10.FOLDER
    folder.mkdir(parents=True)
    written = {}
    for name in (*cifar10.TRAIN_FILES, cifar10.TEST_FILE):
        labels = rng.permutation(np.repeat(np.arange(10), PER_BATCH // 10)).tolist()
        entry = {b"batch_label": name.encode(), b"labels": labels,
                 b"data": rng.integers(0, 256, size=(PER_BATCH, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        written[name] = entry
    return written


@pytest.fixture
def fake(tmp_path) -> tuple[Path, dict[str, dict]]:
    return tmp_path, write_fake_cifar10(tmp_path)


def full_config(root: Path, **overrides):
    """``dataset=cifar10_4k`` (run seed 0) on the fake set, small batches, with ``overrides`` of dataset keys."""
    fields = dict(root=str(root), num_labeled=30, num_val=0, labeled_batch_size=4, unlabeled_ratio=2, num_workers=0,
                  eval_batch_size=8, pipeline="workers")
    return compose_cfg("dataset=cifar10_4k", "model=wrn28_2", *group_overrides("dataset", **{**fields, **overrides}))


def config(root: Path, **overrides):
    return full_config(root, **overrides).dataset


# --- reading -------------------------------------------------------------------------------------------------


def test_reader_round_trips_pixels_and_labels_in_hwc_order(fake):
    root, written = fake
    train_x, train_y, test_x, test_y = read_cifar10(root)
    assert train_x.shape == (100, 32, 32, 3) and train_x.dtype == np.uint8
    assert test_x.shape == (20, 32, 32, 3) and train_y.dtype == np.int64
    assert train_y.tolist() == sum((written[name][b"labels"] for name in cifar10.TRAIN_FILES), [])
    assert test_y.tolist() == written[cifar10.TEST_FILE][b"labels"]

    raw = written["data_batch_3"][b"data"][5]  # image 2 * 20 + 5 of the training set
    row, col = 7, 19
    rgb = [raw[channel * 1024 + row * 32 + col] for channel in range(3)]
    assert train_x[45, row, col].tolist() == rgb
    assert np.array_equal(test_x.reshape(20, -1, 3).transpose(0, 2, 1).reshape(20, 3072),
                          written[cifar10.TEST_FILE][b"data"])


def test_chw_tensor_matches_the_raw_rows(fake):
    root, written = fake
    images = to_chw(read_cifar10(root)[0])
    assert images.shape == (100, 3, 32, 32) and images.is_contiguous()
    assert torch.equal(images[0].flatten(), torch.from_numpy(written["data_batch_1"][b"data"][0]))


def test_missing_folder_says_how_to_fix(tmp_path):
    with pytest.raises(DataError, match="dataset.root") as err:
        read_cifar10(tmp_path)
    assert str(tmp_path / cifar10.FOLDER) in str(err.value) and "dataset.download=true" in str(err.value)


def _one_line_error_naming(path: Path, match: str, root: Path) -> None:
    with pytest.raises(DataError, match=match) as err:
        read_cifar10(root)
    message = str(err.value)
    assert str(path) in message and "\n" not in message


def test_missing_batch_file_is_named(fake):
    root, _ = fake
    path = root / cifar10.FOLDER / "data_batch_3"
    path.unlink()
    _one_line_error_naming(path, "is missing", root)


def test_truncated_batch_file_is_named(fake):
    root, _ = fake
    path = root / cifar10.FOLDER / "data_batch_3"
    path.write_bytes(path.read_bytes()[:5000])
    _one_line_error_naming(path, "truncated or not a CIFAR-10 pickle", root)


@pytest.mark.parametrize("content", [b"", b"not a pickle at all\n"])
def test_non_pickle_file_is_named(fake, content):
    root, _ = fake
    path = root / cifar10.FOLDER / cifar10.TEST_FILE
    path.write_bytes(content)
    _one_line_error_naming(path, "truncated or not a CIFAR-10 pickle", root)


@pytest.mark.parametrize(
    "entry, match",
    [
        ({b"data": np.zeros((20, 3000), np.uint8), b"labels": [0] * 20}, "shape"),
        ({b"data": np.zeros((20, 3072), np.float32), b"labels": [0] * 20}, "dtype float32"),
        ({b"data": np.zeros((20, 3072), np.uint8), b"labels": [0] * 19}, "19 labels"),
        ({b"data": np.zeros((20, 3072), np.uint8), b"labels": [10] * 20}, "outside"),
        ({b"labels": [0] * 20}, "b'data'"),
        ([1, 2, 3], "b'data'"),
    ],
)
def test_wrong_content_is_named(fake, entry, match):
    root, _ = fake
    path = root / cifar10.FOLDER / "data_batch_2"
    path.write_bytes(pickle.dumps(entry))
    _one_line_error_naming(path, match, root)


def test_pickle_that_refers_to_other_code_is_refused(fake):
    root, _ = fake
    path = root / cifar10.FOLDER / "data_batch_1"
    path.write_bytes(pickle.dumps(OrderedDict(data=1)))
    _one_line_error_naming(path, "collections.OrderedDict", root)


@pytest.mark.skipif(not REAL_ROOT.is_dir(), reason="no real CIFAR-10 copy on this machine")
@pytest.mark.slow
def test_real_cifar10_loads_with_the_published_statistics():
    train_x, train_y, test_x, test_y = read_cifar10(REAL_ROOT)
    assert train_x.shape == (50000, 32, 32, 3) and test_x.shape == (10000, 32, 32, 3)
    assert np.bincount(train_y).tolist() == [5000] * 10 and np.bincount(test_y).tolist() == [1000] * 10
    means = train_x.reshape(-1, 3).mean(axis=0) / 255
    assert np.allclose(means, cifar10.MEAN, atol=1e-3)


# --- download -------------------------------------------------------------------------------------------------


def test_present_data_is_not_downloaded(fake, monkeypatch):
    root, _ = fake
    monkeypatch.setattr(cifar10, "download_and_extract_archive", lambda **_: pytest.fail("downloaded"))
    cifar10.ensure_cifar10(root, download=True)


def test_absent_data_without_download_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10, "download_and_extract_archive", lambda **_: pytest.fail("downloaded"))
    with pytest.raises(DataError, match="dataset.download=true"):
        cifar10.ensure_cifar10(tmp_path, download=False)


def test_absent_data_is_fetched_from_the_official_archive(tmp_path, monkeypatch):
    calls = []

    def fake_download(**kwargs):
        calls.append(kwargs)
        write_fake_cifar10(Path(kwargs["download_root"]))

    monkeypatch.setattr(cifar10, "download_and_extract_archive", fake_download)
    data = build(config(tmp_path, download=True), torch.device("cpu"))
    assert calls == [{"url": cifar10.URL, "download_root": str(tmp_path), "md5": "c58f30108f718f92721af3b95e74349a"}]
    assert data.info["train_images"] == 100


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    def offline(**_):
        raise URLError("no network")

    monkeypatch.setattr(cifar10, "download_and_extract_archive", offline)
    with pytest.raises(DataError, match="could not download CIFAR-10"):
        cifar10.ensure_cifar10(tmp_path, download=True)


# --- split, transforms, batches --------------------------------------------------------------------------------


def test_labeled_split_is_balanced_and_follows_its_seed(fake):
    root, _ = fake
    train_y = read_cifar10(root)[1]
    first = build(config(root), torch.device("cpu")).labeled_indices
    assert first == sorted(first) and len(set(first)) == 30
    assert np.bincount(train_y[first], minlength=10).tolist() == [3] * 10
    assert build(config(root), torch.device("cpu")).labeled_indices == first
    assert build(config(root, split_seed=1), torch.device("cpu")).labeled_indices != first


def test_unlabeled_rest_excludes_the_labeled_images(fake):
    root, _ = fake
    labeled = [3, 10, 57]
    rest = unlabeled_indices(100, labeled, "rest")
    assert len(rest) == 97 and not set(rest.tolist()) & set(labeled)
    assert unlabeled_indices(100, labeled, "all").tolist() == list(range(100))
    assert build(config(root, unlabeled="rest"), torch.device("cpu")).info["unlabeled_images"] == 70
    assert build(config(root), torch.device("cpu")).info["unlabeled_images"] == 100


@pytest.mark.parametrize("unlabeled", ["all", "rest"])
def test_validation_images_are_balanced_and_never_trained_on(fake, unlabeled):
    root, _ = fake
    train_y = read_cifar10(root)[1]
    data = build(config(root, num_val=20, unlabeled=unlabeled), torch.device("cpu"))
    labeled, val = data.labeled_indices, data.val_indices
    assert np.bincount(train_y[val], minlength=10).tolist() == [2] * 10 and not set(val) & set(labeled)
    unlabeled_rows = unlabeled_indices(100, labeled, unlabeled, val)
    assert not set(unlabeled_rows.tolist()) & set(val)
    assert data.info["unlabeled_images"] == len(unlabeled_rows) == (80 if unlabeled == "all" else 50)
    assert sum(len(y) for _, y in data.eval_splits["val"]) == 20
    # the labeled draw is the same with or without a validation split (a split seed means one labeled set)
    assert build(config(root), torch.device("cpu")).labeled_indices == labeled


def test_transforms_give_normalised_float_images():
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    cfg, mean, std = config(Path("unused")), cifar10.MEAN, cifar10.STD
    transforms = [image_workers.weak_transform(mean, std), image_workers.strong_transform(cfg, mean, std),
                  image_workers.eval_transform(mean, std)]
    for transform in transforms:
        out = transform(image)
        assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    mean, std = torch.tensor(cifar10.MEAN)[:, None, None], torch.tensor(cifar10.STD)[:, None, None]
    assert torch.allclose(image_workers.eval_transform(cifar10.MEAN, cifar10.STD)(image), (image / 255 - mean) / std,
                          atol=1e-5)


def test_train_batches_have_the_configured_shapes_across_epochs(fake):
    root, _ = fake
    data = build(config(root), torch.device("cpu"))
    assert data.num_classes == 10 and data.input_shape == (3, 32, 32) and data.class_names[0] == "airplane"
    batches = data.train_batches(0)
    for _ in range(10):  # 30 labeled images make 7 batches of 4: this crosses an epoch
        batch = next(batches)
        assert batch.x_l.shape == (4, 3, 32, 32) and batch.x_l.dtype == torch.float32
        assert batch.y_l.shape == (4,) and batch.y_l.dtype == torch.int64
        assert batch.x_uw.shape == batch.x_us.shape == (8, 3, 32, 32)
        assert not torch.equal(batch.x_uw, batch.x_us)


def test_test_split_is_every_test_image_in_order_each_time(fake):
    root, written = fake
    data = build(config(root), torch.device("cpu"))
    passes = [list(data.eval_splits["test"]) for _ in range(2)]
    labels = [torch.cat([y for _, y in batches]) for batches in passes]
    assert labels[0].tolist() == written[cifar10.TEST_FILE][b"labels"] and torch.equal(labels[0], labels[1])
    assert torch.equal(torch.cat([x for x, _ in passes[0]]), torch.cat([x for x, _ in passes[1]]))


@pytest.mark.parametrize(
    "overrides, key",
    [({"num_labeled": 35}, "dataset.num_labeled"), ({"unlabeled": "some"}, "dataset.unlabeled")],
)
def test_settings_no_data_set_allows_are_refused_before_reading(overrides, key):
    with pytest.raises(ConfigError, match=key):
        validate(full_config(Path("unused"), **overrides))


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"num_labeled": 110}, "dataset.num_labeled"),
        ({"num_labeled": 50, "num_val": 60}, "dataset.num_labeled"),
        ({"num_labeled": 10, "labeled_batch_size": 16}, "dataset.labeled_batch_size"),
        ({"unlabeled": "rest", "labeled_batch_size": 8, "unlabeled_ratio": 9}, "dataset.unlabeled_ratio"),
    ],
)
def test_impossible_settings_are_config_errors(fake, overrides, key):
    root, _ = fake
    with pytest.raises(ConfigError, match=key):
        build(config(root, **overrides), torch.device("cpu"))

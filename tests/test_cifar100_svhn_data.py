"""CIFAR-100 and SVHN: readers, downloads, splits, batches, presets and a 2-step run, on tiny fake data sets
written in the real layouts (no network)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import scipy.io
import torch
from conftest import compose_cfg, group_overrides
from omegaconf import OmegaConf

from mpl_runner.data import cifar100, svhn
from mpl_runner.core.errors import DataError
from mpl_runner.gates.validate import validate

PER_CLASS_C100 = 3  # 300 CIFAR-100 training images, 100 test images
PER_CLASS_SVHN = 6  # 60 SVHN training images, 20 test images
FINE_NAMES = [f"class_{i:02d}" for i in range(100)]


# --- fake data sets in the real layouts ------------------------------------------------------------------------


def write_fake_cifar100(root: Path, seed: int = 0) -> dict[str, dict]:
    """``root/cifar-100-python/{train,test,meta}`` as the official release holds them (protocol-2 pickles)."""
    rng = np.random.default_rng(seed)
    folder = root / cifar100.FOLDER
    folder.mkdir(parents=True)
    written = {}
    for name, per_class in ((cifar100.TRAIN_FILE, PER_CLASS_C100), (cifar100.TEST_FILE, 1)):
        fine = rng.permutation(np.repeat(np.arange(100), per_class)).tolist()
        entry = {b"filenames": [b"x.png"] * len(fine), b"batch_label": name.encode(), b"fine_labels": fine,
                 b"coarse_labels": [label // 5 for label in fine],
                 b"data": rng.integers(0, 256, size=(len(fine), 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        written[name] = entry
    meta = {b"fine_label_names": [n.encode() for n in FINE_NAMES],
            b"coarse_label_names": [f"super_{i}".encode() for i in range(20)]}
    (folder / cifar100.META_FILE).write_bytes(pickle.dumps(meta, protocol=2))
    return written


def write_fake_svhn(root: Path, seed: int = 0) -> dict[str, dict]:
    """``root/{train,test}_32x32.mat`` as the Stanford files hold them: X uint8 32 x 32 x 3 x N, y uint8 N x 1 in
    1..10 (10 for the digit 0)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, per_class in ((svhn.TRAIN_FILE, PER_CLASS_SVHN), (svhn.TEST_FILE, 2)):
        digits = rng.permutation(np.repeat(np.arange(10), per_class))
        entry = {"X": rng.integers(0, 256, size=(32, 32, 3, len(digits)), dtype=np.uint8),
                 "y": np.where(digits == 0, 10, digits).astype(np.uint8).reshape(-1, 1)}
        scipy.io.savemat(root / name, entry)
        written[name] = entry
    return written


def cfg_for(dataset: str, root: Path, *more: str, **fields):
    values = dict(root=str(root), num_val=0, labeled_batch_size=4, unlabeled_ratio=2, num_workers=0,
                  eval_batch_size=16, pipeline="workers")
    return compose_cfg(f"dataset={dataset}", "model=wrn28_2", *group_overrides("dataset", **{**values, **fields}),
                       *more)


def one_line(err: pytest.ExceptionInfo, *parts: str) -> str:
    message = str(err.value)
    assert "\n" not in message and all(part in message for part in parts), message
    return message


CPU = torch.device("cpu")


# --- CIFAR-100 -------------------------------------------------------------------------------------------------


def test_cifar100_reader_round_trips_pixels_labels_and_class_names(tmp_path):
    written = write_fake_cifar100(tmp_path)
    train_x, train_y, test_x, test_y, names = cifar100.read_cifar100(tmp_path)
    assert train_x.shape == (300, 32, 32, 3) and train_x.dtype == np.uint8 and test_x.shape == (100, 32, 32, 3)
    assert train_y.dtype == np.int64 and train_y.tolist() == written["train"][b"fine_labels"]
    assert test_y.tolist() == written["test"][b"fine_labels"] and names == FINE_NAMES
    raw, (row, col) = written["train"][b"data"][123], (5, 30)
    assert train_x[123, row, col].tolist() == [raw[c * 1024 + row * 32 + col] for c in range(3)]


@pytest.mark.parametrize("pipeline", ["workers", "device"])
def test_cifar100_build_gives_balanced_labels_and_the_batch_shapes(tmp_path, pipeline):
    write_fake_cifar100(tmp_path)
    data = cifar100.build(cfg_for("cifar100_10k", tmp_path, num_labeled=200, num_val=100,
                                  pipeline=pipeline).dataset, CPU)
    train_y = cifar100.read_cifar100(tmp_path)[1]
    assert np.bincount(train_y[data.labeled_indices], minlength=100).tolist() == [2] * 100
    assert np.bincount(train_y[data.val_indices], minlength=100).tolist() == [1] * 100
    assert data.num_classes == 100 and data.class_names == FINE_NAMES and data.info["pipeline"] == pipeline
    batch = next(data.train_batches(0))
    assert batch.x_l.shape == (4, 3, 32, 32) and batch.y_l.shape == (4,) and batch.x_us.shape == (8, 3, 32, 32)
    assert sum(len(y) for _, y in data.eval_splits["test"]) == 100


def test_cifar100_missing_data_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar100, "download_and_extract_archive", lambda **_: pytest.fail("downloaded"))
    with pytest.raises(DataError) as err:
        cifar100.build(cfg_for("cifar100_10k", tmp_path / "nowhere").dataset, CPU)
    one_line(err, "dataset.root", "dataset.download=true", str(tmp_path / "nowhere" / cifar100.FOLDER))
    write_fake_cifar100(tmp_path)
    (tmp_path / cifar100.FOLDER / "meta").unlink()  # the class names are required, not guessed
    with pytest.raises(DataError) as err:
        cifar100.ensure_cifar100(tmp_path, download=False)
    one_line(err, "dataset.root", "dataset.download=true", str(tmp_path / cifar100.FOLDER / "meta"))


def test_cifar100_is_fetched_from_the_official_archive(tmp_path, monkeypatch):
    calls = []

    def fake_download(**kwargs):
        calls.append(kwargs)
        write_fake_cifar100(Path(kwargs["download_root"]))

    monkeypatch.setattr(cifar100, "download_and_extract_archive", fake_download)
    data = cifar100.build(cfg_for("cifar100_10k", tmp_path, num_labeled=100, download=True).dataset, CPU)
    assert calls == [{"url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                      "download_root": str(tmp_path), "md5": "eb9058c3a382ffc7106e4002c42a8d85"}]
    assert data.info["train_images"] == 300
    cifar100.ensure_cifar100(tmp_path, download=True)  # present now: no second download
    assert len(calls) == 1

    monkeypatch.setattr(cifar100, "download_and_extract_archive", lambda **_: (_ for _ in ()).throw(URLError("off")))
    with pytest.raises(DataError) as err:
        cifar100.ensure_cifar100(tmp_path / "empty", download=True)
    one_line(err, "could not download CIFAR-100", cifar100.URL)


@pytest.mark.parametrize("name, content", [("train", None), ("meta", b"not a pickle\n"),
                                           ("test", pickle.dumps({b"data": np.zeros((2, 3072), np.uint8),
                                                                  b"fine_labels": [0, 100]}, protocol=2))])
def test_cifar100_corrupt_file_is_one_line_naming_it(tmp_path, name, content):
    write_fake_cifar100(tmp_path)
    path = tmp_path / cifar100.FOLDER / name
    path.write_bytes(path.read_bytes()[:5000] if content is None else content)
    with pytest.raises(DataError) as err:
        cifar100.read_cifar100(tmp_path)
    one_line(err, str(path))


# --- SVHN -------------------------------------------------------------------------------------------------------


def test_svhn_reader_round_trips_pixels_and_maps_10_to_0(tmp_path):
    written = write_fake_svhn(tmp_path)
    train_x, train_y, test_x, test_y = svhn.read_svhn(tmp_path)
    assert train_x.shape == (60, 32, 32, 3) and train_x.dtype == np.uint8 and test_x.shape == (20, 32, 32, 3)
    raw_y = written[svhn.TRAIN_FILE]["y"].reshape(-1)
    assert train_y.dtype == np.int64 and train_y.tolist() == [0 if y == 10 else int(y) for y in raw_y]
    assert sorted(set(train_y.tolist())) == list(range(10)) and np.bincount(test_y).tolist() == [2] * 10
    row, col = 3, 17
    assert train_x[7, row, col].tolist() == written[svhn.TRAIN_FILE]["X"][row, col, :, 7].tolist()
    assert np.array_equal(test_x, written[svhn.TEST_FILE]["X"].transpose(3, 0, 1, 2))
    assert svhn.CLASS_NAMES == [str(d) for d in range(10)]


@pytest.mark.parametrize("pipeline", ["workers", "device"])
def test_svhn_build_gives_balanced_labels_and_the_batch_shapes(tmp_path, pipeline):
    write_fake_svhn(tmp_path)
    cfg = cfg_for("svhn_1k", tmp_path, num_labeled=20, num_val=10, pipeline=pipeline)
    assert cfg.dataset.flip is False and cfg.dataset.name == "svhn"
    data = svhn.build(cfg.dataset, CPU)
    train_y = svhn.read_svhn(tmp_path)[1]
    assert np.bincount(train_y[data.labeled_indices], minlength=10).tolist() == [2] * 10
    assert np.bincount(train_y[data.val_indices], minlength=10).tolist() == [1] * 10
    assert data.num_classes == 10 and data.input_shape == (3, 32, 32) and data.info["pipeline"] == pipeline
    batches = data.train_batches(0)
    for _ in range(6):  # 20 labeled images make 5 batches of 4: this crosses an epoch
        batch = next(batches)
        assert batch.x_l.shape == (4, 3, 32, 32) and batch.x_l.dtype == torch.float32
        assert batch.y_l.shape == (4,) and batch.x_uw.shape == batch.x_us.shape == (8, 3, 32, 32)
    assert torch.cat([y for _, y in data.eval_splits["test"]]).tolist() == svhn.read_svhn(tmp_path)[3].tolist()


def test_svhn_missing_files_say_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(svhn, "download_url", lambda **_: pytest.fail("downloaded"))
    with pytest.raises(DataError) as err:
        svhn.build(cfg_for("svhn_1k", tmp_path).dataset, CPU)
    one_line(err, "dataset.root", "dataset.download=true", str(tmp_path / svhn.TRAIN_FILE))
    write_fake_svhn(tmp_path)
    (tmp_path / svhn.TEST_FILE).unlink()
    with pytest.raises(DataError) as err:
        svhn.ensure_svhn(tmp_path, download=False)
    one_line(err, "dataset.root", "dataset.download=true", str(tmp_path / svhn.TEST_FILE))


def test_svhn_is_fetched_from_the_official_files(tmp_path, monkeypatch):
    calls = []
    fake = write_fake_svhn(tmp_path / "fake")

    def fake_download(**kwargs):
        calls.append(kwargs)
        Path(kwargs["root"]).mkdir(exist_ok=True)  # (download_url makes root)
        scipy.io.savemat(Path(kwargs["root"]) / kwargs["filename"], fake[kwargs["filename"]])

    monkeypatch.setattr(svhn, "download_url", fake_download)
    data = svhn.build(cfg_for("svhn_1k", tmp_path / "data", num_labeled=20, download=True).dataset, CPU)
    root = str(tmp_path / "data")
    assert calls == [
        {"url": "http://ufldl.stanford.edu/housenumbers/train_32x32.mat", "root": root,
         "filename": "train_32x32.mat", "md5": "e26dedcc434d2e4c54c9b2d4a06d0373"},
        {"url": "http://ufldl.stanford.edu/housenumbers/test_32x32.mat", "root": root,
         "filename": "test_32x32.mat", "md5": "eb5a983be6a315427106f1b164d9cef3"},
    ]
    assert data.info["train_images"] == 60 and data.info["test_images"] == 20

    def offline(**_):
        raise URLError("no network")

    monkeypatch.setattr(svhn, "download_url", offline)
    with pytest.raises(DataError) as err:
        svhn.ensure_svhn(tmp_path / "empty", download=True)
    one_line(err, "could not download SVHN", "train_32x32.mat")


@pytest.mark.parametrize("content, match", [
    (None, "truncated or not an SVHN .mat file"),
    (b"", "truncated or not an SVHN .mat file"),
    ({"X": np.zeros((32, 32, 3, 4), np.uint8)}, "expected the variables X and y"),
    ({"X": np.zeros((4, 32, 32, 3), np.uint8), "y": np.ones((4, 1), np.uint8)}, "expected uint8 32 x 32 x 3 x N"),
    ({"X": np.zeros((32, 32, 3, 4), np.float32), "y": np.ones((4, 1), np.uint8)}, "dtype float32"),
    ({"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.ones((3, 1), np.uint8)}, "for 4 images"),
    ({"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.array([[1], [2], [11], [3]], np.uint8)}, "outside 1..10"),
    ({"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.array([[1], [2], [0], [3]], np.uint8)}, "outside 1..10"),
])
def test_svhn_corrupt_file_is_one_line_naming_it(tmp_path, content, match):
    write_fake_svhn(tmp_path)
    path = tmp_path / svhn.TRAIN_FILE
    if content is None:
        path.write_bytes(path.read_bytes()[:20000])
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        scipy.io.savemat(path, content)
    with pytest.raises(DataError, match=match) as err:
        svhn.read_svhn(tmp_path)
    one_line(err, str(path))


# --- presets and a run -----------------------------------------------------------------------------------------


def test_presets_compose_and_validate():
    svhn_cfg = compose_cfg("experiment=svhn_1k_mpl")
    c100_cfg = compose_cfg("experiment=cifar100_10k_mpl")
    for cfg in (svhn_cfg, c100_cfg):
        validate(cfg)
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert (svhn_cfg.dataset.name, svhn_cfg.dataset.num_labeled, svhn_cfg.dataset.flip) == ("svhn", 1000, False)
    assert (svhn_cfg.model.widen_factor, svhn_cfg.model.stem_width) == (2, 32)
    assert (c100_cfg.dataset.name, c100_cfg.dataset.num_labeled, c100_cfg.dataset.flip) == ("cifar100", 10000, True)
    assert (c100_cfg.model.widen_factor, c100_cfg.model.stem_width) == (8, 128)
    for cfg in (svhn_cfg, c100_cfg):  # the rest is cifar10_4k_mpl's
        assert (cfg.method.name, cfg.trainer.steps, cfg.optim.lr, cfg.dataset.labeled_batch_size) == \
            ("mpl", 305000, 0.05, 128)
        assert (cfg.dataset.num_val, cfg.method.uda.weight, cfg.method.finetune.steps) == (0, 8.0, 5000)


def test_two_mpl_steps_on_fake_svhn_finish(tmp_path):
    from mpl_runner.loop.run import run

    write_fake_svhn(tmp_path / "data")
    cfg = compose_cfg(
        "experiment=svhn_1k_mpl", f"dataset.root={tmp_path / 'data'}", "device=cpu",
        *group_overrides("dataset", num_labeled=20, num_val=10, labeled_batch_size=4, unlabeled_ratio=2,
                         num_workers=0, eval_batch_size=16, pipeline="device"),
        *group_overrides("model", depth=10, widen_factor=1, stem_width=16),
        *group_overrides("method", student_wait_steps=0, **{"finetune.steps": 1, "finetune.batch_size": 4}),
        *group_overrides("trainer", steps=2, eval_interval=2, log_interval=1, checkpoint_interval=2,
                         channels_last=False, amp="none"),
        "optim.warmup_steps=0", "method.student_warmup_steps=0",
    )
    validate(cfg)
    record = run(cfg, tmp_path / "run")
    assert record["status"] == "completed" and 0 <= record["test/acc"] <= 1
    assert sum(map(sum, record["test/confusion"])) == 20 and "test/class_acc/0" in record
    split = json.loads((tmp_path / "run" / "labeled_indices.json").read_text())
    assert len(split["labeled"]) == 20 and len(split["validation"]) == 10

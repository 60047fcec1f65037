"""``dataset=image_folder``: a user's own images, in folders or with a labels file, in any format Pillow reads, at
any size; bad files skipped and counted, bad layouts one line; a decoded cache reused by the next run; nothing
written under ``dataset.root``."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import cli_in_process
from mpl_runner.data import batched_augment, image_folder, randaugment
from mpl_runner.data.image_files import read_image

CLASSES = ("cat", "dog")
COLOURS = {"cat": (200, 40, 40), "dog": (40, 40, 200)}  # one colour a class (with noise): easy to learn
SIDE = 24  # not 32: the views, the models and the figures at another size
SMALL = ["model=small_cnn", "model.widths=[8,16]", f"dataset.image_size={SIDE}", "dataset.labeled_batch_size=4",
         "dataset.unlabeled_ratio=2", "dataset.eval_batch_size=16", "dataset.decode_workers=1",
         "trainer.steps=6", "trainer.eval_interval=3", "trainer.log_interval=3", "trainer.num_threads=1",
         "device=cpu"]


def picture(rng: np.random.Generator, name: str, size=(30, 40)) -> Image.Image:
    base = np.array(COLOURS[name], dtype=np.int16)
    noise = rng.integers(-30, 30, (size[1], size[0], 3))
    return Image.fromarray((base + noise).clip(0, 255).astype(np.uint8))


def save_odd(image: Image.Image, path: Path, kind: int) -> None:
    """``image`` in one of eight formats and modes, by ``kind``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = path.with_suffix("")
    if kind == 0:
        image.save(stem.with_suffix(".png"))
    elif kind == 1:
        image.save(stem.with_suffix(".jpg"), quality=95)
    elif kind == 2:
        image.convert("RGBA").save(stem.with_suffix(".png"))
    elif kind == 3:
        image.convert("CMYK").save(stem.with_suffix(".jpeg"), quality=95)
    elif kind == 4:
        image.save(stem.with_suffix(".webp"), lossless=True)
    elif kind == 5:
        image.save(stem.with_suffix(".bmp"))
    elif kind == 6:
        image.save(stem.with_suffix(".tiff"))
    else:
        image.convert("P").save(stem.with_suffix(".gif"))


def make_folder(root: Path, labeled: int = 8, unlabeled: int = 20, test: int = 6, val: int = 0) -> Path:
    rng = np.random.default_rng(0)
    for name in CLASSES:
        for i in range(labeled):
            save_odd(picture(rng, name), root / "labeled" / name / f"{i}", i)
        for i in range(test):
            picture(rng, name).save((root / "test" / name).mkdir(parents=True, exist_ok=True) or
                                    root / "test" / name / f"{i}.png")
        for i in range(val):
            picture(rng, name).save((root / "val" / name).mkdir(parents=True, exist_ok=True) or
                                    root / "val" / name / f"{i}.png")
    for i in range(unlabeled):
        save_odd(picture(rng, CLASSES[i % 2]), root / "unlabeled" / f"batch{i % 3}" / "deeper" / f"u{i}", i)
    return root


def tree(root: Path) -> dict:
    return {p: (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


def run(tmp: Path, root: Path, *args: str, monkeypatch, capsys, name: str = "run") -> tuple[int, str]:
    status, _out, err = cli_in_process(["dataset=image_folder", f"dataset.root={root}", *SMALL, *args,
                                        f"hydra.run.dir={tmp / name}"], tmp, monkeypatch, capsys)
    return status, err


def log_of(run_dir: Path) -> str:
    return (run_dir / "run.log").read_text()


@pytest.mark.parametrize("method, pipeline", [("mpl", "device"), ("mpl", "workers"), ("supervised", "auto")])
def test_an_image_folder_trains_end_to_end_and_nothing_is_written_under_it(tmp_path, method, pipeline, monkeypatch,
                                                                           capsys):
    root = make_folder(tmp_path / "images")
    (root / "unlabeled" / "notes.txt").write_text("not an image")  # a bad file: skipped, counted
    (root / "unlabeled" / "cut.png").write_bytes((root / "labeled" / "cat" / "0.png").read_bytes()[:100])
    os.symlink(root / "nowhere.png", root / "unlabeled" / "broken.png")
    before = tree(root)
    status, err = run(tmp_path, root, f"method={method}", f"dataset.pipeline={pipeline}", "dataset.num_workers=0",
                      monkeypatch=monkeypatch, capsys=capsys)
    assert status == 0, err
    assert tree(root) == before  # nothing written, touched or moved under dataset.root
    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and 0 <= metrics["test/acc"] <= 1 and "val/acc" in metrics
    assert len(metrics["test/confusion"]) == 2 and sum(map(sum, metrics["test/confusion"])) == 12
    split = json.loads((run_dir / "labeled_indices.json").read_text())
    # num_val null: a fifth of the fewest labeled images of a class, per class (8 // 5 = 1), never trained on
    assert len(split["validation"]) == 2 and not set(split["validation"]) & set(split["labeled"])
    assert len(split["labeled"]) == 14 and all(p.startswith("labeled/") for p in split["labeled"])
    assert "skipped 3 file(s) that are not readable images" in log_of(run_dir)
    assert (run_dir / "confusion_matrix.png").is_file() and (run_dir / "augmentations.png").is_file()
    if method == "mpl":  # fewer than 32 unlabeled images: the pseudo-label figure draws what there is
        assert (run_dir / "pseudo_labels.png").is_file()


def test_the_decoded_cache_is_reused_and_a_changed_file_makes_a_new_one(tmp_path, monkeypatch, capsys):
    root = make_folder(tmp_path / "images")
    cache = tmp_path / "cache"
    args = ("method=supervised", f"dataset.cache_dir={cache}", "trainer.steps=1")
    assert run(tmp_path, root, *args, monkeypatch=monkeypatch, capsys=capsys, name="a")[0] == 0
    assert "decoding" in log_of(tmp_path / "a") and len(list(cache.glob("*.npy"))) == 2  # images + sums
    assert run(tmp_path, root, *args, monkeypatch=monkeypatch, capsys=capsys, name="b")[0] == 0
    assert "decoded before" in log_of(tmp_path / "b") and "decoding" not in log_of(tmp_path / "b")
    picture(np.random.default_rng(1), "cat").save(root / "unlabeled" / "new.png")
    assert run(tmp_path, root, *args, monkeypatch=monkeypatch, capsys=capsys, name="c")[0] == 0
    assert "decoding" in log_of(tmp_path / "c") and len(list(cache.glob("*.npy"))) == 4


def test_a_labels_file_and_a_val_folder(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    rows = ["path,label"]
    for i in range(12):
        name = CLASSES[i % 2]
        picture(rng, name).save((root / "pics").mkdir(parents=True, exist_ok=True) or root / "pics" / f"{i}.png")
        if i < 8:
            rows.append(f"pics/{i}.png,{name}")  # 4, 5 ... 11: not listed, so unlabeled
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    make_folder(tmp_path / "other", labeled=1, unlabeled=0, test=0, val=2)
    os.rename(tmp_path / "other" / "val", root / "val")
    status, err = run(tmp_path, root, "dataset.labels=labels.csv", "dataset.unlabeled=rest",
                      monkeypatch=monkeypatch, capsys=capsys)
    assert status == 0, err
    text = log_of(tmp_path / "run")
    assert "8 labeled, 4 unlabeled, 4 validation, 0 test images" in text  # val/ is the validation split
    assert "no test/ folder: the run reports validation accuracy only" in text
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "test/acc" not in metrics and 0 <= metrics["val/acc"] <= 1 and "val/confusion" in metrics


def loop(root: Path) -> None:
    os.symlink(root / "unlabeled", root / "unlabeled" / "batch0" / "again")


def labels_file(text: str):
    return lambda root: (root / "labels.csv").write_text(text)


BAD = {
    "no labeled folder": (lambda root: os.rename(root / "labeled", root / "tagged"), [], "has no labeled/ folder"),
    "empty class folder": (lambda root: (root / "labeled" / "bird").mkdir(), [], "labeled/bird holds no files"),
    "a file beside the class folders": (lambda root: (root / "labeled" / "x.png").write_bytes(b""), [],
                                        "is not in a class folder"),
    "too many labeled": (lambda root: None, ["dataset.num_labeled=40"], "dataset.num_labeled=40 is not allowed"),
    "num_labeled not balanced": (lambda root: None, ["dataset.num_labeled=3"], "a multiple of the 2 classes"),
    "too many validation": (lambda root: None, ["dataset.num_val=16"], "dataset.num_val=16 is not allowed"),
    "a symlink loop": (loop, [], "is a link back to"),
    "a test class that is no class": (lambda root: (root / "test" / "cow").mkdir(), [], "test/cow is not a class"),
    "no unlabeled images for mpl": (lambda root: os.rename(root / "unlabeled", root / "later"), ["method=mpl"],
                                    "holds no unlabeled images: method=mpl learns from unlabeled images"),
    "a listed file that does not exist": (labels_file("labeled/cat/0.png,cat\nmissing.png,dog\n"),
                                          ["dataset.labels=labels.csv"], "1 listed file(s) do not exist"),
    "a labels row that is not path,label": (labels_file("labeled/cat/0.png\n"), ["dataset.labels=labels.csv"],
                                            "expected 'path,label'"),
    "a labels file that does not exist": (lambda root: None, ["dataset.labels=nope.csv"], "no such file"),
    "one class": (lambda root: os.rename(root / "labeled" / "dog", root / "dogs_later"), [], "needs 2 or more"),
    "unreadable labeled images only": (lambda root: [p.write_bytes(b"junk") for p in (root / "labeled" / "dog").iterdir()],
                                       [], "class 'dog' has no readable labeled image"),
    "no test and no validation": (lambda root: os.rename(root / "test", root / "exam"), ["dataset.num_val=0"],
                                  "no test/ folder and no validation split"),
    "cache inside the root": (lambda root: None, ["dataset.cache_dir={root}/cache"], "a folder outside dataset.root"),
    "cache whose parent is missing": (lambda root: None, ["dataset.cache_dir={root}/../no/such/cache"],
                                      "a folder whose parent exists"),
    "a missing root": (lambda root: None, ["dataset.root={root}/../nothing"], "does not exist"),
    "an image size too small": (lambda root: None, ["dataset.image_size=4"], "dataset.image_size=4 is not allowed"),
    "an unknown resize": (lambda root: None, ["dataset.resize=squash"], "one of crop, stretch, pad"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_folders_and_values_are_one_line_before_training(case, tmp_path, monkeypatch, capsys):
    damage, overrides, expected = BAD[case]
    root = make_folder(tmp_path / "images", labeled=6, unlabeled=6, test=2)
    damage(root)
    status, err = run(tmp_path, root, *[o.format(root=root) for o in overrides], "method=supervised"
                      if "method=mpl" not in overrides else "trainer.steps=1", monkeypatch=monkeypatch,
                      capsys=capsys)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and expected in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_supervised_trains_on_a_folder_without_unlabeled_images(tmp_path, monkeypatch, capsys):
    root = make_folder(tmp_path / "images", unlabeled=0)
    status, err = run(tmp_path, root, "method=supervised", monkeypatch=monkeypatch, capsys=capsys)
    assert status == 0, err


def test_the_stream_pipeline_reads_the_files_and_auto_picks_it_when_memory_is_short(tmp_path, monkeypatch, capsys):
    root = make_folder(tmp_path / "images")
    monkeypatch.setattr(image_folder, "_available_memory", lambda: 1000)  # bytes: nothing fits
    status, err = run(tmp_path, root, "method=mpl", monkeypatch=monkeypatch, capsys=capsys)
    assert status == 0, err
    text = log_of(tmp_path / "run")
    assert "pipeline stream (the decoded images" in text and "would take over half the free memory" in text
    assert not list((tmp_path / "outputs" / "cache").glob("????????????????????????.npy"))  # no pixels kept


def test_normalisation_is_the_training_images_mean_and_std(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "images", labeled=4, unlabeled=4, test=2)
    from mpl_runner.cli.config import compose_config

    cfg = compose_config("dataset=image_folder", f"dataset.root={root}", f"dataset.cache_dir={tmp_path / 'c'}",
                         f"dataset.image_size={SIDE}", "dataset.labeled_batch_size=2", "dataset.unlabeled_ratio=1",
                         "dataset.decode_workers=1")
    data = image_folder.build(cfg.dataset, torch.device("cpu"))
    training = [p for folder in ("labeled", "unlabeled") for p in (root / folder).rglob("*.*")]
    pixels = torch.stack([read_image(p, SIDE) for p in training]).float() / 255
    mean, std = pixels.mean(dim=(0, 2, 3)), pixels.std(dim=(0, 2, 3), correction=0)
    assert data.preprocess["mean"] == pytest.approx(mean.tolist(), abs=1e-5)
    assert data.preprocess["std"] == pytest.approx(std.tolist(), abs=1e-5)
    assert data.preprocess["image_size"] == SIDE and data.input_shape == (3, SIDE, SIDE)


def test_pixel_strengths_scale_with_the_side():
    assert randaugment.strength("TranslateX", 10, 64) == 2 * randaugment.strength("TranslateX", 10, 32) == 8
    assert randaugment.strength("Cutout", 10, 96) == 3 * randaugment.strength("Cutout", 10)
    assert randaugment.strength("Rotate", 10, 96) == randaugment.strength("Rotate", 10)  # not a pixel strength
    assert batched_augment.crop_padding(32) == 4 and batched_augment.crop_padding(64) == 8
    assert randaugment.even_pixels(16, 64) == 32 and randaugment.even_pixels(16, 24) == 12


def test_odd_formats_decode_to_the_same_pixels(tmp_path):
    rng = np.random.default_rng(0)
    image = picture(rng, "cat", size=(SIDE, SIDE))
    expected = torch.from_numpy(np.asarray(image)).permute(2, 0, 1)
    for kind in (0, 2, 4, 5, 6):  # lossless: PNG, RGBA PNG, WebP, BMP, TIFF
        save_odd(image, tmp_path / f"k{kind}", kind)
    for path in tmp_path.iterdir():
        assert torch.equal(read_image(path, SIDE), expected), path.name
    grey16 = (np.arange(SIDE * SIDE, dtype=np.uint16).reshape(SIDE, SIDE) * 97)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    assert torch.equal(read_image(tmp_path / "g16.png", SIDE)[0], torch.from_numpy((grey16 >> 8).astype(np.uint8)))
    ramp = np.linspace(0, 250, SIDE).astype(np.uint8)
    smooth = np.stack([np.tile(ramp, (SIDE, 1)), np.tile(ramp[:, None], (1, SIDE)), np.zeros((SIDE, SIDE), np.uint8)],
                      axis=-1)  # red grows to the right, green downwards: a turn shows
    gradient = Image.fromarray(smooth)
    exif = gradient.getexif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    gradient.save(tmp_path / "turned.jpg", exif=exif, quality=100)
    upright = read_image(tmp_path / "turned.jpg", SIDE).float()
    turned = torch.rot90(torch.from_numpy(smooth).permute(2, 0, 1), -1, dims=(1, 2)).float()
    assert (upright - turned).abs().mean() < 3  # (JPEG loses a little)

"""README's "Your own data" walkthrough, small: make an image folder with scripts/make_image_folder.py, train on it
with ``mpl-run``, label its test folder with ``mpl-predict``, export it with ``mpl-export``; the labels reproduce
the run's test accuracy exactly."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from conftest import REPO, cli_in_process
from mpl_runner.cli import predict

spec = importlib.util.spec_from_file_location("make_image_folder", REPO / "scripts" / "make_image_folder.py")
make_image_folder = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_image_folder)


def test_make_a_folder_train_on_it_and_label_its_test_images(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "digits_folder"
    make_image_folder.main(["--out", str(folder), "--source", "digits", "--labeled", "50", "--unlabeled", "300",
                            "--test", "120", "--size", "16", "--format", "jpg"])
    assert len(list((folder / "labeled").rglob("*.jpg"))) == 50 and len(list((folder / "test").rglob("*.jpg"))) == 120
    with pytest.raises(SystemExit):  # never writes into a folder that exists
        make_image_folder.main(["--out", str(folder), "--source", "digits"])
    status, _out, err = cli_in_process(
        ["dataset=image_folder", f"dataset.root={folder}", "dataset.image_size=16", "dataset.flip=false",
         "model=small_cnn", "method=mpl", "dataset.labeled_batch_size=10", "dataset.unlabeled_ratio=2",
         "trainer.steps=20", "trainer.eval_interval=10", "trainer.log_interval=10", "trainer.num_threads=1",
         "device=cpu", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, monkeypatch, capsys)
    assert status == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    result = predict.predict(tmp_path / "run", [folder / "test"], batch=7)
    assert result.labeled == 120 and result.unreadable == 0
    assert result.accuracy == pytest.approx(metrics["test/acc"], abs=1e-12)  # the same pixels, the same model
    model = json.loads((tmp_path / "run" / "model.json").read_text())
    assert model["class_names"] == [str(c) for c in range(10)] and model["preprocess"]["image_size"] == 16

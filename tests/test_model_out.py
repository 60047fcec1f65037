"""The trained model out of a run: model.safetensors + model.json, loaded without Hydra; mpl-predict on image files
(the run's test images as PNG folders reproduce its test/acc) and mpl-export to ONNX; the one-line refusals."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, cli_in_process as run_cli, finished_in_process
from mpl_runner.cli import export, predict
from mpl_runner.loop import engine
from mpl_runner.record import model_file
from mpl_runner.loop import run_record as record_module, run as run_module
from mpl_runner.data import cifar10
from mpl_runner.data.image_sets import to_chw
from mpl_runner.data.batched_augment import normalize
from test_cifar10_data import write_fake_cifar10
from test_signals import fallback, send_during  # noqa: F401  (fallback: a fixture)

CIFAR = [
    "dataset=cifar10_4k", "dataset.num_labeled=20", "dataset.num_val=20", "dataset.labeled_batch_size=4",
    "dataset.unlabeled_ratio=2", "dataset.num_workers=0", "dataset.eval_batch_size=8", "model=wrn28_2",
    "model.depth=10", "model.widen_factor=1", "trainer.steps=2", "trainer.eval_interval=2", "trainer.log_interval=2",
    "trainer.progress=false", "device=cpu", "method=mpl", "method.ema_decay=0.9",
]
MOONS = ["trainer.steps=4", "trainer.eval_interval=2", "trainer.log_interval=2", "trainer.progress=false",
         "device=cpu"]
ONNX = importlib.util.find_spec("onnxruntime") is not None


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A finished tiny MPL run on a fake CIFAR-10 and its test images written as ``test/<class>/<i>.png``:
    (run dir, data root, test folder)."""
    tmp = tmp_path_factory.mktemp("cifar")
    write_fake_cifar10(tmp / "data")
    run_dir = finished_in_process(tmp, *CIFAR, f"dataset.root={tmp / 'data'}")
    test = tmp / "test"
    for i, (image, label) in enumerate(zip(*_test_images(tmp / "data"))):
        path = test / cifar10.CLASS_NAMES[label] / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
    return run_dir, tmp / "data", test


def _test_images(root: Path) -> tuple[np.ndarray, list[int]]:
    entry = pickle.loads((root / cifar10.FOLDER / cifar10.TEST_FILE).read_bytes())
    return entry[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), entry[b"labels"]


@pytest.fixture(scope="module")
def moons(tmp_path_factory) -> Path:
    return finished_in_process(tmp_path_factory.mktemp("moons"), *MOONS)


def main_of(module, args: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        module.main([str(a) for a in args])
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    out, err = capsys.readouterr()
    return status, out, err


def refused(module, args, capsys) -> str:
    """The one line ``module``'s command refuses ``args`` with (exit status 2)."""
    status, out, err = main_of(module, args, capsys)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"{module.PROG}: error: "), err
    return lines[0]


# --- the model files ------------------------------------------------------------------------------------------


def test_a_finished_run_leaves_a_model_that_loads_without_hydra_and_gives_the_runs_logits(cifar):
    run_dir, root, _ = cifar
    meta = json.loads((run_dir / "model.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert meta["handed_out"] == metrics["handed_out"] == "student_ema" and meta["method"] == "mpl"
    assert meta["class_names"] == list(cifar10.CLASS_NAMES) and meta["num_classes"] == 10
    assert meta["input_shape"] == [3, 32, 32] and meta["model"]["name"] == "wide_resnet"
    assert meta["preprocess"] == {"image_size": 32, "resize": "crop", "mean": list(cifar10.MEAN),
                                  "std": list(cifar10.STD)}
    assert meta["metrics"] == {"val/acc": metrics["val/acc"], "test/acc": metrics["test/acc"]}
    assert meta["provenance"]["git_commit"] == metrics["provenance/git_commit"]

    model, _ = model_file.load_model(run_dir)
    assert not model.training
    # The run's own handed-out model: the EMA student of the final checkpoint (taken after the last step).
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    ema = {k.removeprefix("module."): v for k, v in state["method"]["ema"].items() if k.startswith("module.")}
    assert set(ema) == set(model.state_dict())
    assert all(torch.equal(ema[k], v) for k, v in model.state_dict().items())
    images, labels = _test_images(root)
    x = normalize(to_chw(images), cifar10.MEAN, cifar10.STD)
    with torch.inference_mode():
        logits = model(x)
    correct = int((logits.argmax(1) == torch.tensor(labels)).sum())
    assert correct / len(labels) == metrics["test/acc"]


def test_the_weights_are_plain_contiguous_tensors_of_their_own():
    from safetensors.torch import load, save

    model = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    tensors = model_file.weights(model)
    assert all(t.is_contiguous() and t.device.type == "cpu" and not t.requires_grad for t in tensors.values())
    assert torch.equal(load(save(tensors))["weight"], model.weight.detach())  # (channels_last in, values kept)
    tensors["weight"].add_(1)  # its own memory: the model's weight is untouched
    assert not torch.equal(tensors["weight"], model.weight.detach())


def test_a_two_moons_run_writes_a_model_with_no_preprocessing_which_mpl_predict_refuses(moons, tmp_path, capsys):
    meta = json.loads((moons / "model.json").read_text())
    assert meta["preprocess"] is None and meta["input_shape"] == [2] and meta["dataset"] == "two_moons"
    model, _ = model_file.load_model(moons)
    assert model(torch.zeros(3, 2)).shape == (3, 2)
    image = tmp_path / "a.png"
    Image.new("RGB", (4, 4)).save(image)
    line = refused(predict, [moons, image], capsys)
    assert "takes no image files" in line and "two_moons" in line


def test_an_interrupted_run_leaves_no_model_even_where_an_earlier_run_left_one(moons, tmp_path, monkeypatch, capsys,
                                                                               fallback):  # noqa: F811
    run_dir = tmp_path / "run"
    shutil.copytree(moons, run_dir)
    assert (run_dir / "model.json").exists()
    send_during(monkeypatch, engine, "evaluate", when=lambda *a, splits=("test",), **k: "val" in splits)
    status, _, _ = run_cli([*MOONS, "trainer.auto_resume=false", f"hydra.run.dir={run_dir}"], tmp_path, monkeypatch,
                           capsys)
    assert status == 128 + signal.SIGTERM
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"
    assert not (run_dir / "model.json").exists() and not (run_dir / "model.safetensors").exists()
    monkeypatch.undo()
    line = refused(predict, [run_dir, tmp_path], capsys)
    assert "has no model yet: it was interrupted (SIGTERM)" in line and f"trainer.resume={run_dir}" in line


def test_a_failed_run_leaves_no_model(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("the figure broke")

    monkeypatch.setattr(record_module, "confusion_figure", broken)
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="the figure broke"):  # (in-process mpl-run re-raises it)
        run_cli([*MOONS, f"hydra.run.dir={run_dir}"], tmp_path, monkeypatch, capsys)
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "failed"
    assert not (run_dir / "model.json").exists() and not (run_dir / "model.safetensors").exists()
    line = refused(predict, [run_dir, tmp_path], capsys)
    assert "has no model: it failed (RuntimeError: the figure broke)" in line


def test_a_finished_run_without_its_model_gets_it_when_its_command_goes_on(moons, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(moons, run_dir)
    (run_dir / "model.json").unlink()
    (run_dir / "model.safetensors").unlink()
    line = refused(predict, [run_dir, tmp_path], capsys)
    assert "made before mpl-runner wrote models" in line
    status, _, err = run_cli([*MOONS, f"hydra.run.dir={run_dir}"], tmp_path, monkeypatch, capsys)
    assert status == 0, err
    assert (run_dir / "model.safetensors").read_bytes() == (moons / "model.safetensors").read_bytes()
    assert json.loads((run_dir / "model.json").read_text()) == json.loads((moons / "model.json").read_text())


# --- mpl-predict ----------------------------------------------------------------------------------------------


def test_mpl_predict_on_the_test_folder_reproduces_test_acc_and_lists_unreadable_files(cifar, tmp_path, capsys):
    run_dir, root, test = cifar
    folder = tmp_path / "test"
    shutil.copytree(test, folder)
    (folder / "cat" / "notes.txt").write_text("not an image")
    png = next((folder / "dog").iterdir()).read_bytes()
    (folder / "dog" / "truncated.png").write_bytes(png[: len(png) // 2])
    status, _, err = main_of(predict, [run_dir, folder, "--out", tmp_path / "preds.csv", "--top-k", "3",
                                       "--batch", "7"], capsys)
    assert status == 0, err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    lines = err.strip().splitlines()
    assert lines[0] == "20 images labeled, 2 unreadable"
    right = round(20 * metrics["test/acc"])
    assert lines[-1] == f"accuracy {100 * metrics['test/acc']:.2f}% on 20 images whose folder names their class " \
                        f"({right} right)"

    rows = list(csv.DictReader(io.StringIO((tmp_path / "preds.csv").read_text())))
    assert list(rows[0]) == ["path", "status", "class", "probability", "class_2", "probability_2", "class_3",
                             "probability_3", "reason"]
    bad = {Path(r["path"]).name: r for r in rows if r["status"] == "unreadable"}
    assert set(bad) == {"notes.txt", "truncated.png"} and all(r["reason"] and not r["class"] for r in bad.values())
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 20 and [r["path"] for r in rows] == sorted(r["path"] for r in rows)  # sorted by path
    correct = sum(Path(r["path"]).parent.name == r["class"] for r in ok)
    assert correct / 20 == metrics["test/acc"]  # exactly the run's test/acc

    # Each row is the model's own prediction on that image (normalised as the run's evaluation does).
    model, _ = model_file.load_model(run_dir)
    images, _ = _test_images(root)
    with torch.inference_mode():
        probs = torch.softmax(model(normalize(to_chw(images), cifar10.MEAN, cifar10.STD)), dim=1)
    for row in ok:
        p = probs[int(Path(row["path"]).stem)]
        top = p.topk(3)
        assert row["class"] == cifar10.CLASS_NAMES[int(p.argmax())]
        assert [row[k] for k in ("class_2", "class_3")] == [cifar10.CLASS_NAMES[int(c)] for c in top.indices[1:]]
        assert float(row["probability"]) == pytest.approx(float(top.values[0]), abs=1e-6)
        assert float(row["probability"]) >= float(row["probability_2"]) >= float(row["probability_3"])


def test_mpl_predict_through_the_console_script(cifar, tmp_path):
    run_dir, _, test = cifar
    files = sorted(test.rglob("*.png"))[:3]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["mpl-predict"] == "mpl_runner.cli.predict:main"
    assert scripts["mpl-export"] == "mpl_runner.cli.export:main"
    script = Path(sys.executable).with_name("mpl-predict")  # (absent in a checkout installed before it existed)
    command = [str(script)] if script.exists() else [sys.executable, "-m", "mpl_runner.cli.predict"]
    result = subprocess.run([*command, str(run_dir), *map(str, files), "--top-k", "1"], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["path", "status", "class", "probability", "reason"]
    assert [r[0] for r in rows[1:]] == [str(f) for f in files] and all(r[1] == "ok" for r in rows[1:])
    assert result.stderr.splitlines()[0] == "3 images labeled, 0 unreadable"


def test_mpl_predict_gives_no_accuracy_when_a_folder_is_not_a_class(cifar, tmp_path, capsys):
    run_dir, _, test = cifar
    image = tmp_path / "new" / "x.png"
    image.parent.mkdir()
    shutil.copy(next(test.rglob("*.png")), image)
    status, out, err = main_of(predict, [run_dir, image], capsys)
    assert status == 0 and "accuracy" not in err and len(out.splitlines()) == 2


def test_mpl_predict_refuses_each_mistake_in_one_line(cifar, tmp_path, capsys, monkeypatch):
    run_dir, data, test = cifar
    image = next(test.rglob("*.png"))
    empty = tmp_path / "empty"
    empty.mkdir()
    running = tmp_path / "running"  # a run dir before its first record: still running, or killed
    (running / ".hydra").mkdir(parents=True)
    cases = {
        "does not exist": [tmp_path / "nope", image],
        "is not a run dir": [data, image],
        "has no model yet: it has not finished (no metrics.json": [running, image],
        f"{tmp_path / 'missing.png'} does not exist": [run_dir, tmp_path / "missing.png"],
        "holds no files": [run_dir, empty],
        "--batch 0: give at least 1": [run_dir, image, "--batch", "0"],
        "--top-k 0: give at least 1": [run_dir, image, "--top-k", "0"],
        "the following arguments are required": [run_dir],
        "invalid choice: 'tpu'": [run_dir, image, "--device", "tpu"],
        f"--out {tmp_path} is a folder": [run_dir, image, "--out", tmp_path],
    }
    for message, args in cases.items():
        assert message in refused(predict, args, capsys), message
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "CUDA is not available" in refused(predict, [run_dir, image, "--device", "cuda"], capsys)


def test_damaged_weights_are_one_line(cifar, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(cifar[0], run_dir)
    (run_dir / "model.safetensors").write_bytes(b"garbage")
    assert "cannot be loaded" in refused(predict, [run_dir, next(cifar[2].rglob("*.png"))], capsys)


# --- mpl-export -----------------------------------------------------------------------------------------------


@pytest.mark.skipif(not ONNX, reason="onnxruntime is not installed (pip install 'mpl-runner[onnx]')")
def test_onnx_export_round_trip_matches_pytorch(cifar, tmp_path, capsys):
    import onnx
    import onnxruntime

    run_dir, root, _ = cifar
    before = sorted(p.name for p in run_dir.iterdir())
    out = tmp_path / "model.onnx"
    status, stdout, err = main_of(export, [run_dir, "--onnx", out], capsys)
    assert status == 0, err
    assert stdout.startswith(f"wrote {out}; onnxruntime matches PyTorch: max |difference| ")
    assert sorted(p.name for p in run_dir.iterdir()) == before  # nothing written into the run dir

    proto = onnx.load(out)
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert meta["class_names"] == list(cifar10.CLASS_NAMES) and meta["preprocess"]["mean"] == list(cifar10.MEAN)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("images", ["batch", 3, 32, 32])]
    assert session.get_outputs()[0].name == "logits"
    model, _ = model_file.load_model(run_dir)
    images, _ = _test_images(root)
    for rows in (slice(0, 1), slice(0, 20)):  # any batch size
        x = normalize(to_chw(images[rows]), cifar10.MEAN, cifar10.STD)
        with torch.inference_mode():
            expected = model(x)
        got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
        assert got.shape == expected.shape and float((got - expected).abs().max()) <= export.TOLERANCE


def test_mpl_export_without_onnx_says_how_to_install_it(cifar, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # (import onnxruntime raises ImportError)
    line = refused(export, [cifar[0], "--onnx", tmp_path / "m.onnx"], capsys)
    assert "pip install 'mpl-runner[onnx]'" in line and not (tmp_path / "m.onnx").exists()


def test_mpl_export_refuses_a_run_without_a_model_in_one_line(tmp_path, capsys):
    assert "does not exist" in refused(export, [tmp_path / "nope", "--onnx", tmp_path / "m.onnx"], capsys)
    assert "the following arguments are required: --onnx" in refused(export, [tmp_path], capsys)

"""CIFAR-10 through ``mpl-run`` on a tiny data set in the real layout (no network), and the real data (slow)."""

from __future__ import annotations

import json

import pytest

from conftest import mpl_run
from test_cifar10_data import REAL_ROOT, write_fake_cifar10

TINY_CIFAR = [
    "dataset=cifar10_4k", "dataset.num_labeled=20", "dataset.num_val=20", "dataset.labeled_batch_size=4",
    "dataset.unlabeled_ratio=2",
    "dataset.num_workers=0", "dataset.eval_batch_size=8", "model=wrn28_2", "model.depth=10",
    "model.widen_factor=1", "trainer.steps=4", "trainer.eval_interval=2", "trainer.log_interval=2", "device=cpu",
]


@pytest.mark.parametrize("extra", [["method=mpl", "method.ema_decay=0.9", "method.finetune.steps=1",
                                    "method.finetune.batch_size=4"],
                                   ["method=supervised", "trainer.channels_last=true"],
                                   ["method=uda", "trainer.amp=bf16"]], ids=["mpl", "supervised", "uda"])
def test_tiny_cifar_run_through_the_cli(tmp_path, extra):
    write_fake_cifar10(tmp_path / "data")
    run_dir = tmp_path / "run"
    result = mpl_run(*TINY_CIFAR, *extra, f"dataset.root={tmp_path / 'data'}", f"hydra.run.dir={run_dir}",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and 0 <= metrics["test/acc"] <= 1
    assert len(metrics["test/confusion"]) == 10 and sum(map(sum, metrics["test/confusion"])) == 20  # fake test set
    assert all(f"test/class_acc/{c}" in metrics for c in range(10))
    assert (run_dir / "confusion_matrix.png").exists()
    if "method=supervised" not in extra:
        assert (run_dir / "pseudo_labels.png").exists()
    if "method=mpl" in extra:
        assert metrics["handed_out"] == "student_ema"
        assert {"test/teacher/acc", "test/student/acc", "test/student_ema/acc"} <= set(metrics)
    split = json.loads((run_dir / "labeled_indices.json").read_text())
    labeled, val = split["labeled"], split["validation"]
    assert len(labeled) == 20 and len(set(labeled)) == 20 and len(set(val)) == 20 and not set(labeled) & set(val)
    assert 0 <= metrics["val/acc"] <= 1 and metrics["val/acc"] == metrics[f"val/{metrics['handed_out']}/acc"]


@pytest.mark.slow
@pytest.mark.skipif(not REAL_ROOT.exists(), reason="real CIFAR-10 not present at ../shared/data/cifar10")
def test_smoke_preset_on_real_data_beats_chance(tmp_path):
    run_dir = tmp_path / "run"
    result = mpl_run("experiment=cifar10_smoke", f"dataset.root={REAL_ROOT}", f"hydra.run.dir={run_dir}",
                     "device=cpu", cwd=tmp_path, timeout=1800)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test/teacher/acc"] > 0.2 and metrics["test/acc"] > 0.15  # chance is 0.1

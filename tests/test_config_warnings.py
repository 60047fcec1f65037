"""Settings that ``mpl-run`` used to accept in silence: each is now warned about once in the run's log (it runs,
but hardly as meant) or refused with one line (it cannot be what was meant). ``mpl-run`` runs in-process here."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import TINY, cli_in_process as run_cli
from mpl_runner.gates.validate import config_warnings




def files(root: Path) -> dict[Path, tuple[int, int] | None]:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None for p in root.rglob("*")}


WARNED = {
    "trainer.amp=fp16": "trainer.amp=fp16 on the CPU: float16 autocast is slower there than float32",
    "trainer.sync_batchnorm=true": "trainer.sync_batchnorm=true on one process: there is nothing to synchronise",
    "optim.warmup_steps=30": "optim.warmup_steps=30 >= the 30 steps its lr schedule spans (trainer.steps)",
    "method.student_warmup_steps=28": "method.student_warmup_steps=28 >= the student's 28 steps",
}


def test_settings_that_run_but_hardly_as_meant_are_warned_once_in_the_log(tmp_path, monkeypatch, capsys):
    status, _, _ = run_cli([*TINY, "device=cpu", "method.student_wait_steps=2", *WARNED, "hydra.run.dir=run"],
                           tmp_path, monkeypatch, capsys)
    assert status == 0
    log = (tmp_path / "run" / "run.log").read_text()
    for warning in WARNED.values():
        assert log.count(warning) == 1, warning
        assert f"[WARNING] - {warning}" in log
    assert '"status": "completed"' in (tmp_path / "run" / "metrics.json").read_text()


@pytest.mark.parametrize("overrides,expected", [
    ([], []),
    (["trainer.amp=fp16"], ["trainer.amp=fp16 on the CPU"]),
    (["trainer.amp=bf16"], []),
    (["optim.warmup_steps=499"], []),
    (["optim.warmup_steps=500"], ["optim.warmup_steps=500 >= the 500 steps"]),  # (one line: the student's too)
    (["optim.warmup_steps=450", "method.student_wait_steps=100"],
     ["optim.warmup_steps=450 (the student's too: method.student_warmup_steps=null) >= the student's 400 steps"]),
    (["method.student_warmup_steps=450", "method.student_wait_steps=100"],
     ["method.student_warmup_steps=450 >= the student's 400 steps"]),
    (["method.finetune.steps=100", "optim.warmup_steps=400", "method.finetune.warmup_steps=100"],
     ["optim.warmup_steps=400 >= the 400 steps its lr schedule spans (trainer.steps - method.finetune.steps)",
      "method.finetune.warmup_steps=100 >= method.finetune.steps=100"]),
    (["method=supervised", "optim.warmup_steps=500"], ["optim.warmup_steps=500 >= the 500 steps"]),
    (["trainer.num_threads=1024"], ["trainer.num_threads=1024 > the "]),  # (it ran 20x slower, in silence)
    (["trainer.num_threads=1"], []),
], ids=lambda value: " ".join(value) if value and isinstance(value[0], str) and "=" in value[0] else "")
def test_which_settings_are_warned_about(make_cfg, overrides, expected):
    found = config_warnings(make_cfg(*overrides), "cpu", "fp16" if "trainer.amp=fp16" in overrides else "none",
                            distributed=False)
    assert len(found) == len(expected), found
    assert all(line.startswith(start) for line, start in zip(found, expected)), found


def test_sync_batchnorm_is_warned_about_on_one_process_only(make_cfg):
    cfg = make_cfg("trainer.sync_batchnorm=true")
    assert len(config_warnings(cfg, "cuda", "bf16", distributed=False)) == 1
    assert config_warnings(cfg, "cuda", "bf16", distributed=True) == []


REFUSED = {
    "nan lr": (["optim.lr=nan"], "optim.lr=nan is not allowed: a finite number > 0"),
    "infinite lr": (["optim.lr=inf"], "optim.lr=inf is not allowed: a finite number > 0"),
    "infinite student lr": (["method.student_lr=inf"], "method.student_lr=inf is not allowed: a finite number > 0"),
    "labeled batch above the labeled set": (
        ["dataset.labeled_batch_size=13"],
        "dataset.labeled_batch_size=13 is not allowed: 1 to 12 (dataset.num_labeled: a batch is drawn from them)"),
    "digits labeled batch above the labeled set": (
        ["dataset=digits", "model=small_cnn", "dataset.labeled_batch_size=60"],
        "dataset.labeled_batch_size=60 is not allowed: 1 to 50"),
    "empty run dir": (["hydra.run.dir="], "hydra.run.dir='' is not allowed: a directory"),
    "empty run dir, quoted": (["hydra.run.dir=''"], "hydra.run.dir='' is not allowed: a directory"),
    "empty sweep dir": (["-m", "seed=0,1", "hydra.sweep.dir="], "hydra.sweep.dir='' is not allowed: a directory"),
    "an unknown preset": (["experiment=nope"], "experiment=nope is not an option; choose one of: cifar100_10k_mpl, cifar10_4k_mpl, "),
    "a sweep without -m": (["method=supervised,mpl"],
                           "Ambiguous value for argument 'method=supervised,mpl'; 1. To use it as a list"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_settings_that_cannot_be_meant_are_refused_with_one_line(case, tmp_path, monkeypatch, capsys):
    overrides, message = REFUSED[case]
    run_dir = [] if any(o.startswith("hydra.") for o in overrides) else [f"hydra.run.dir={tmp_path / 'run'}"]
    before = files(tmp_path)
    status, _, stderr = run_cli([*overrides, *TINY, *run_dir], tmp_path, monkeypatch, capsys)
    assert status == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mpl-run: error: {message}"), stderr
    assert files(tmp_path) == before  # nothing written, in the working dir either
    assert "_common" not in lines[0] and "schema_" not in lines[0]  # (what presets share is no option)
    if case == "a sweep without -m":
        assert lines[0].endswith("3. To sweep over it, add --multirun to your command line")  # Hydra's own hint


def test_help_lists_the_options_to_choose_not_schemas_or_shared_parts(make_cfg, tmp_path, monkeypatch, capsys):
    status, out, _ = run_cli(["--help"], tmp_path, monkeypatch, capsys)
    assert status == 0
    groups = dict(line.split(": ", 1) for line in out.split("== Configuration groups ==")[1]
                  .split("== Config ==")[0].splitlines() if ": " in line)
    assert groups["method"] == "mpl, pseudo_labels, supervised, uda"
    assert groups["dataset"] == ("cifar100_10k, cifar10_1k, cifar10_250, cifar10_4k, digits, image_folder, svhn_1k, "
                                 "two_moons")
    assert "schema_" not in out and "_common" not in out
    assert "cifar10_4k_mpl" in groups["experiment"] and "digits_mpl" in groups["experiment"]
    assert out.startswith("mpl-run: ") and "method:\n  name: mpl" in out  # the header, and the config below
    for preset in ("cifar10_4k_mpl", "digits_uda", "two_moons_paper_supervised"):  # the presets still compose
        assert make_cfg(f"experiment={preset}").method.name in preset


def test_a_data_set_smaller_than_the_official_one_is_warned_about_once(make_cfg, tmp_path, caplog):
    """A CIFAR folder holding fewer training images than the release trained without a word."""
    import torch

    from mpl_runner.data import build_dataset
    from test_cifar10_data import PER_BATCH, write_fake_cifar10
    from test_cifar10_run import TINY_CIFAR

    write_fake_cifar10(tmp_path)
    build_dataset(make_cfg(*TINY_CIFAR, f"dataset.root={tmp_path}").dataset, torch.device("cpu"))
    warned = [r.getMessage() for r in caplog.records if "training images" in r.getMessage()]
    assert warned == [f"dataset.root={tmp_path} holds {5 * PER_BATCH} cifar10 training images, not the 50000 of the "
                      "official release: a copy cut short or a subset, whose results do not compare with the data "
                      "set's"]

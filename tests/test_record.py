"""What a run's record and console tell: best.pt chosen on val/acc, a finished run extended, the tags every method
shares, val beside test on the console, and the HParams columns of an ``experiment=`` sweep. ``mpl-run`` runs
in-process on two moons, a few steps."""

from __future__ import annotations

import json
import re

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.metadata import EXPERIMENT_TAG, SESSION_START_INFO_TAG
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from conftest import TINY, cli_in_process, job_dirs
from mpl_runner.loop import engine
from mpl_runner.record import checkpoint
from mpl_runner.core.distributed import World
from mpl_runner.loop.run_record import RunRecord

ARGS = [*TINY, "trainer.progress=true", "device=cpu"]
SHORT = ["trainer.steps=10", "trainer.eval_interval=5", "trainer.log_interval=5", "trainer.progress=true",
         "device=cpu"]


def mpl_run(args, tmp_path, monkeypatch, capsys) -> tuple[int, str]:
    status, _, err = cli_in_process(args, tmp_path, monkeypatch, capsys)
    return status, err


def scalar_tags(run_dir) -> set[str]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return set(events.Tags()["scalars"])


def test_best_pt_follows_val_acc_never_test(tmp_path, monkeypatch, capsys):
    """Evaluations at steps 10, 20, 30 (final) with val/acc 0.5, 0.9, 0.7 and test/acc rising: best.pt is step 20."""
    val, test = iter([0.5, 0.9, 0.7]), iter([0.1, 0.2, 0.3])
    evaluate = engine.evaluate

    def scripted(*args, **kwargs):
        out = evaluate(*args, **kwargs)
        v, t = next(val), next(test)
        return {**out, "val/acc": v, "test/acc": t}

    monkeypatch.setattr(engine, "evaluate", scripted)
    run_dir = tmp_path / "run"
    status, err = mpl_run([*ARGS, "method=supervised", f"hydra.run.dir={run_dir}"], tmp_path, monkeypatch, capsys)
    assert status == 0, err
    best = checkpoint.load(run_dir / checkpoint.BEST_PATH, torch.device("cpu"))
    last = checkpoint.load(run_dir / checkpoint.RELATIVE_PATH, torch.device("cpu"))
    assert best["step"] == 20 and best["loop"]["best_val"] == 0.9
    assert last["step"] == 30
    assert not torch.equal(best["method"]["models"]["model"]["1.weight"], last["method"]["models"]["model"]["1.weight"])


def test_no_best_pt_without_a_validation_split(tmp_path, make_cfg):
    """The record chooses on val/acc alone: an evaluation without it writes no best.pt."""
    record = RunRecord(tmp_path, make_cfg(*TINY), World(), {})
    record.evaluated(10, {"test/acc": 0.9, "test/model/acc": 0.9}, {"train_seconds": 0.0, "stats": {}})
    assert not (tmp_path / checkpoint.BEST_PATH).exists() and record.best_val is None


def test_a_finished_run_extended_reaches_the_new_total_and_says_so(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    short = [*SHORT, "method=supervised"]
    status, err = mpl_run([*short, f"hydra.run.dir={run_dir}"], tmp_path, monkeypatch, capsys)
    assert status == 0, err
    status, err = mpl_run([*short, "trainer.steps=20", f"trainer.resume={run_dir}"], tmp_path, monkeypatch, capsys)
    assert status == 0, err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps"] == 20
    assert checkpoint.load(run_dir / checkpoint.RELATIVE_PATH, torch.device("cpu"))["step"] == 20
    log = (run_dir / "run.log").read_text()
    assert re.search(rf"trainer.steps 10 -> 20: {re.escape(str(run_dir))} goes on from step 10; the schedules .* "
                     r"recomputed for 20 steps", log)
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/acc")] == [5, 10, 15, 20]  # every evaluation once

    status, err = mpl_run([*short, "trainer.steps=15", f"trainer.resume={run_dir}"], tmp_path, monkeypatch, capsys)
    assert status == 2
    line = err.strip().splitlines()[-1]
    assert "is at step 20: trainer.steps=15 is fewer steps than the run has taken" in line


def test_the_schedules_of_an_extended_run_are_the_new_totals(make_cfg):
    """After loading a checkpoint of another trainer.steps, the next step's learning rate is the new schedule's."""
    from mpl_runner.methods import build_method
    from mpl_runner.models import build_model

    cfg = make_cfg("method=supervised", "optim.schedule=cosine", "optim.warmup_steps=0")

    def method(steps):
        return build_method(cfg.method, cfg.optim, steps, lambda role: build_model(cfg.model, (2,), 2))

    short, long = method(30), method(60)
    for _ in range(20):
        short.optimizers["model"].step()
        short.schedulers["model"].step()
    long.load_state_dict(short.state_dict())
    assert long.lr("model") == pytest.approx(short.lr("model"))  # the old schedule's rate, as loaded
    checkpoint.recompute_schedules(long)
    fresh = method(60)
    for _ in range(20):
        fresh.optimizers["model"].step()
        fresh.schedulers["model"].step()
    assert long.lr("model") == pytest.approx(fresh.lr("model")) and long.lr("model") > short.lr("model")


@pytest.mark.parametrize("method, models", [("supervised", ["model"]), ("mpl", ["teacher", "student"])])
def test_every_method_logs_eval_acc_and_val_acc_and_the_console_shows_val_beside_test(method, models, tmp_path,
                                                                                      monkeypatch, capsys):
    run_dir = tmp_path / "run"
    status, err = mpl_run([*ARGS, f"method={method}", f"hydra.run.dir={run_dir}"], tmp_path, monkeypatch, capsys)
    assert status == 0, err
    tags = scalar_tags(run_dir)
    assert {"eval/acc", "val/acc"} <= tags
    assert {f"eval/{m}/acc" for m in models} | {f"val/{m}/acc" for m in models} <= tags
    log = (run_dir / "run.log").read_text()
    progress = [line for line in log.splitlines() if "step 10/30" in line][0]
    for split in ("val", "test"):
        assert re.search(rf"\| {split} acc: " + "  ".join(rf"{m} \d+\.\d%" for m in models), progress), progress
    final = [line for line in log.splitlines() if "metrics in" in line][0]
    assert re.search(r"val/acc \d+\.\d\d%, test/acc \d+\.\d\d%", final), final
    for m in models:
        assert re.search(rf"{m} val \d+\.\d\d% test \d+\.\d\d%", final), final
    assert "final evaluation: " + ", ".join(models) in log


def test_an_experiment_sweep_shows_the_choices_first_the_seed_after_and_short_trial_names(tmp_path, monkeypatch,
                                                                                          capsys):
    sweep = tmp_path / "sweep"
    status, err = mpl_run(["-m", "experiment=two_moons_supervised,two_moons_mpl", "seed=range(0,1)", *SHORT,
                           f"hydra.sweep.dir={sweep}"], tmp_path, monkeypatch, capsys)
    assert status == 0, err
    for job, experiment in zip(job_dirs(sweep), ("two_moons_supervised", "two_moons_mpl")):
        events = EventAccumulator(str(job), size_guidance={"tensors": 0})
        events.Reload()
        content = events.PluginTagToContent("hparams")
        infos = HParamsPluginData.FromString(content[EXPERIMENT_TAG]).experiment.hparam_infos
        # TensorBoard lists what differs first, then by name, and shows the first five
        shown = [i.name for i in sorted(infos, key=lambda i: (not i.differs, i.name))]
        assert shown[:4] == ["dataset.name", "experiment", "method.name", "model.name"]
        assert not {i.name: i.differs for i in infos}["seed"]
        start = HParamsPluginData.FromString(content[SESSION_START_INFO_TAG]).session_start_info
        assert start.hparams["experiment"].string_value == experiment
        assert start.group_name == f"{job.name.split('_')[0]} {experiment} seed=0"  # (the dir: 0_experiment=...)

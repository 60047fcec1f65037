"""Checkpoint contents, atomic writes, RNG round trips, the NaN watch, skipped updates and stop signals
(in-process; tests/test_resume.py kills real runs)."""

from __future__ import annotations

import json
import os
import random
import re
import signal

import numpy as np
import pytest
import torch

from mpl_runner.record import checkpoint
from mpl_runner.data import Batch
from mpl_runner.loop.engine import NonFiniteLoss, NonFiniteWatch
from mpl_runner.methods import build_method
from mpl_runner.models import build_model
from mpl_runner.loop.run import execute
from mpl_runner.core.signals import StopSignals


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_rng_state_round_trips_every_generator():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    np.random.randn()  # leaves a cached Gaussian in numpy's state
    state = checkpoint.rng_state()
    expected = _draws()
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    checkpoint.set_rng_state(state)
    assert _draws() == expected


def _method(make_cfg, *overrides):
    cfg = make_cfg("method.ema_decay=0.9", "method.baseline_decay=0.5", *overrides)
    torch.manual_seed(0)
    return cfg, build_method(cfg.method, cfg.optim, cfg.trainer.steps,
                             lambda role: build_model(cfg.model, (2,), 2))


def _batch(seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 2, generator=g)
    return Batch(x_l=x[:4], y_l=torch.tensor([0, 1, 0, 1]), x_uw=x, x_us=x + 0.1)


def test_a_checkpoint_restores_a_method_that_then_takes_the_same_steps(make_cfg, tmp_path):
    cfg, method = _method(make_cfg)
    for step in range(3):
        method.train_step(_batch(step), step)
    path = tmp_path / checkpoint.RELATIVE_PATH
    checkpoint.save(path, 3, cfg, method, {"train_seconds": 1.0, "stats": {}})
    after = [method.train_step(_batch(step), step) for step in (3, 4)]

    _, fresh = _method(make_cfg)
    state = checkpoint.load(path, torch.device("cpu"))
    checkpoint.check_config(state, cfg, path)
    checkpoint.restore(state, fresh, path)
    assert state["step"] == 3 and state["loop"]["train_seconds"] == 1.0
    again = [fresh.train_step(_batch(step), step) for step in (3, 4)]
    assert [{k: float(v) for k, v in s.items()} for s in again] == [{k: float(v) for k, v in s.items()} for s in after]
    for name in ("teacher", "student", "student_ema"):
        before, after = method.eval_models()[name].state_dict(), fresh.eval_models()[name].state_dict()
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(method.baseline, fresh.baseline)


def test_a_crash_while_saving_keeps_the_previous_checkpoint(make_cfg, tmp_path, monkeypatch):
    cfg, method = _method(make_cfg)
    path = tmp_path / checkpoint.RELATIVE_PATH
    checkpoint.save(path, 1, cfg, method, {})
    before = path.read_bytes()

    def crash(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, 2, cfg, method, {})
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp file left behind


def test_free_keys_may_differ_and_others_may_not(make_cfg, tmp_path):
    cfg, method = _method(make_cfg)
    path = tmp_path / "last.pt"
    checkpoint.save(path, 1, cfg, method, {})
    state = checkpoint.load(path, torch.device("cpu"))
    checkpoint.check_config(state, make_cfg("method.ema_decay=0.9", "method.baseline_decay=0.5",
                                            "trainer.progress=false", "device=cpu"), path)
    other = make_cfg("method.ema_decay=0.9", "method.baseline_decay=0.5", "optim.lr=0.5")
    with pytest.raises(checkpoint.CheckpointError, match="optim.lr=0.5 here but 0.1 there"):
        checkpoint.check_config(state, other, path)


def test_a_key_added_since_the_checkpoint_passes_at_its_default(make_cfg, tmp_path):
    cfg, method = _method(make_cfg)
    path = tmp_path / "last.pt"
    checkpoint.save(path, 1, cfg, method, {})
    state = checkpoint.load(path, torch.device("cpu"))
    del state["config"]["trainer.skip_nonfinite"]  # as written by a version without that key
    defaults = make_cfg()  # what the options give before any key override: the key's default in conf/
    checkpoint.check_config(state, cfg, path, defaults)
    changed = make_cfg("method.ema_decay=0.9", "method.baseline_decay=0.5", "trainer.skip_nonfinite=true")
    with pytest.raises(checkpoint.CheckpointError, match="trainer.skip_nonfinite=True here but '\\(absent\\)' there"):
        checkpoint.check_config(state, changed, path, defaults)


def test_watch_names_the_first_non_finite_step():
    watch = NonFiniteWatch(torch.device("cpu"))
    watch.observe(1, {"a": torch.tensor(1.0)})
    watch.check(1, {"a": 1.0})
    watch.observe(2, {"a": torch.tensor(float("nan"))})
    watch.observe(3, {"a": torch.tensor(float("inf"))})
    with pytest.raises(NonFiniteLoss, match=r"step 3: train/a = inf \(first non-finite at step 2\)"):
        watch.check(3, {"a": float("inf")})


def test_skip_nonfinite_drops_the_update_and_counts_it(make_cfg):
    cfg = make_cfg("method=supervised")
    method = build_method(cfg.method, cfg.optim, cfg.trainer.steps, lambda role: build_model(cfg.model, (2,), 2))
    method.skip_nonfinite = True
    model = method.models["model"]
    before = [p.detach().clone() for p in model.parameters()]
    loss = model(torch.randn(4, 2)).sum() * float("nan")
    method.update("model", loss)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert method.skipped == {"model": 1}
    assert method.schedulers["model"].last_epoch == 1  # the lr schedule keeps pace with the run
    method.update("model", model(torch.randn(4, 2)).sum())
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert method.skipped == {"model": 1}


def test_sigterm_becomes_a_request_and_a_second_one_acts_as_before():
    received = []
    previous = signal.signal(signal.SIGTERM, lambda s, f: received.append(s))
    try:
        with StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.received == signal.SIGTERM and received == []
            os.kill(os.getpid(), signal.SIGTERM)  # the handler from before ours is back
            assert received == [signal.SIGTERM]
        os.kill(os.getpid(), signal.SIGTERM)
        assert received == [signal.SIGTERM] * 2
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_divergence_stops_keeps_the_last_good_checkpoint_and_marks_the_run_failed(make_cfg, tmp_path):
    cfg = make_cfg("method=supervised", "optim.lr=1000", "trainer.steps=50", "trainer.log_interval=10",
                   "trainer.checkpoint_interval=2")
    with pytest.raises(NonFiniteLoss, match=r"step \d+: train/model/loss = nan \(first non-finite at step (\d+)\)"):
        execute(cfg, tmp_path)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "failed" and "NonFiniteLoss" in record["error"]
    state = checkpoint.load(tmp_path / checkpoint.RELATIVE_PATH, torch.device("cpu"))
    first_bad = int(re.search(r"first non-finite at step (\d+)", record["error"]).group(1))
    assert state["step"] == record["checkpoint_step"] < first_bad
    assert all(torch.isfinite(t).all() for t in state["method"]["models"]["model"].values())


def test_skip_nonfinite_finishes_the_run_and_reports_the_count(make_cfg, tmp_path):
    cfg = make_cfg("method=supervised", "optim.lr=1000", "trainer.steps=50", "trainer.skip_nonfinite=true")
    record = execute(cfg, tmp_path).record
    assert record["status"] == "completed" and record["skipped/model"] > 0


def test_starting_over_in_a_used_run_dir_shows_only_the_new_run(make_cfg, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tiny = ["trainer.steps=20", "trainer.log_interval=10", "trainer.eval_interval=10"]
    execute(make_cfg("method=mpl", *tiny), tmp_path)
    execute(make_cfg("method=supervised", *tiny, "trainer.auto_resume=false"), tmp_path)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    shown = {tag for tag in events.Tags()["scalars"] if events.Scalars(tag)}  # (a purged tag stays, empty)
    assert "train/model/loss" in shown and not any(tag.startswith("train/teacher/") for tag in shown)
    assert json.loads((tmp_path / "metrics.json").read_text())["method"] == "supervised"

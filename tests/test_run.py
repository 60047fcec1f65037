"""One run in-process: determinism, the TensorBoard record, the metrics file."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from conftest import TINY
from mpl_runner.loop.run import run


@pytest.mark.parametrize("method", ["supervised", "uda", "mpl"])
def test_same_seed_gives_the_same_metrics_on_cpu(make_cfg, tmp_path, method):
    cfg = make_cfg(f"method={method}", "device=cpu", "seed=3", *TINY)
    first, second = run(cfg, tmp_path / "a"), run(cfg, tmp_path / "b")
    timing = {"train_seconds", "wall_seconds"}
    assert {k: v for k, v in first.items() if k not in timing} == {k: v for k, v in second.items() if k not in timing}
    other = run(make_cfg(f"method={method}", "device=cpu", "seed=4", *TINY), tmp_path / "c")
    assert other["all/acc"] != first["all/acc"] or other["test/acc"] != first["test/acc"]


def test_tensorboard_has_losses_accuracies_lrs_figure_and_hparams(make_cfg, tmp_path):
    run(make_cfg("device=cpu", *TINY), tmp_path)
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("train/teacher/loss", "train/teacher/loss_sup", "train/teacher/loss_uda", "train/teacher/loss_mpl",
                "train/student/loss", "train/mpl/h", "train/uda/mask", "eval/teacher/acc", "eval/student/acc",
                "lr/teacher", "lr/student", "perf/steps_per_s", "zz_final/test/acc"):
        assert tag in scalars, tag
    assert [e.step for e in events.Scalars("eval/student/acc")] == [10, 20, 30]
    assert {"decision_boundary", "confusion_matrix"} <= set(events.Tags()["images"])
    plugins = events.PluginTagToContent("hparams")
    assert {"_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(plugins)
    assert b"method.name" in plugins["_hparams_/session_start_info"]
    # the final metrics, which HParams shows as its metric columns, under a prefix that puts them after the curves
    assert "test/acc" not in scalars and events.Scalars("zz_final/test/acc")[0].step == 30
    experiment = HParamsPluginData.FromString(plugins["_hparams_/experiment"]).experiment
    assert [m.display_name for m in experiment.metric_infos][:2] == ["val/acc", "test/acc"]
    assert experiment.metric_infos[1].name.tag == "zz_final/test/acc"
    start = HParamsPluginData.FromString(plugins["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["seed"].string_value == "0" and start.hparams["optim.lr"].number_value == 0.1


def test_metrics_json_matches_the_returned_record(make_cfg, tmp_path):
    record = run(make_cfg("device=cpu", "method=supervised", *TINY), tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text()) == record
    assert record["handed_out"] == "model" and record["test/acc"] == record["test/model/acc"]


@pytest.mark.slow  # compiling takes about 20 s on this CPU
def test_compiled_models_train_as_eager_ones_do(make_cfg, tmp_path):
    eager = run(make_cfg("device=cpu", *TINY), tmp_path / "eager")
    compiled = run(make_cfg("device=cpu", "trainer.compile=true", *TINY), tmp_path / "compiled")
    for key in ("test/teacher/acc", "test/student/acc", "all/acc"):
        assert abs(compiled[key] - eager[key]) <= 0.01, key  # fused kernels round differently; same training


@pytest.mark.parametrize("method", ["supervised", "mpl"])
def test_each_phase_gets_only_the_views_it_trains_on(make_cfg, tmp_path, monkeypatch, method):
    """Supervised training and MPL's finetuning build no unlabeled views; finetuning gets its own labeled batch."""
    from mpl_runner.methods.mpl import MPL
    from mpl_runner.methods.supervised import Supervised

    seen = []
    method_class = {"supervised": Supervised, "mpl": MPL}[method]  # (MPL registers a function that imports it)
    train_step = method_class.train_step

    def spy(self, batch, step):
        seen.append((len(batch.x_l), batch.x_uw is None and batch.x_us is None))
        return train_step(self, batch, step)

    monkeypatch.setattr(method_class, "train_step", spy)
    run(make_cfg("device=cpu", f"method={method}", *TINY, "method.finetune.steps=5", "method.finetune.batch_size=4")
        if method == "mpl" else make_cfg("device=cpu", f"method={method}", *TINY), tmp_path)
    if method == "supervised":
        assert seen == [(12, True)] * 30
    else:
        assert seen == [(12, False)] * 25 + [(4, True)] * 5

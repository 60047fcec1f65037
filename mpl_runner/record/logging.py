"""TensorBoard for one run: scalars, figures and an HParams record, all in the run's own directory.

Tags (docs/design.md section 4): ``train/<model>/<loss>``, ``train/mpl/h``, ``train/uda/mask``, ``eval/<model>/acc``
and ``eval/acc`` (the handed-out model, every method), ``val/<model>/acc`` and ``val/acc``, ``lr/<model>``,
``perf/steps_per_s``; the final metrics as ``zz_final/<metrics.json name>`` (HParams reads them there;
the prefix puts their one-point cards after the curves), shown in HParams under their ``metrics.json`` names.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams.metadata import (
    EXPERIMENT_TAG, PLUGIN_DATA_VERSION, PLUGIN_NAME, SESSION_START_INFO_TAG,
)
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

#: tag prefix of the final metrics: their one-point cards sort after the curves on the Scalars page
FINAL_PREFIX = "zz_final/"
#: the metrics HParams lists first (what to choose on, what to report), then the other accuracies, then the rest
HEADLINE = ("val/acc", "test/acc")
_HPARAM_TYPES = {bool: "DATA_TYPE_BOOL", float: "DATA_TYPE_FLOAT64", str: "DATA_TYPE_STRING"}


def hparam_value(value: Any) -> bool | int | float | str:
    """A config value as TensorBoard's HParams takes it: lists and None as text."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def flatten(cfg: DictConfig) -> dict[str, Any]:
    """``{"method.uda.weight": 1.0, ...}`` with values TensorBoard's HParams accepts (lists and None as text)."""
    out: dict[str, Any] = {}

    def visit(node, prefix):
        if isinstance(node, dict):
            for key, value in node.items():
                visit(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = hparam_value(node)

    visit(OmegaConf.to_container(cfg, resolve=True), "")
    return out


class Tracker:
    def __init__(self, run_dir: Path, purge_step: int | None = None, enabled: bool = True):
        """``purge_step``: TensorBoard hides what earlier files of this run logged at that step or later (a
        resumed run logs those steps again). ``enabled=False`` (ranks other than 0) writes nothing."""
        self.run_dir = run_dir
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step) if enabled else None
        _quiet_writer_thread()

    def scalars(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        if self.writer is None:
            return
        for tag, value in values.items():
            self.writer.add_scalar(prefix + tag, value, step)

    def figure(self, tag: str, fig, step: int) -> None:
        if self.writer is None:
            return
        self.writer.add_figure(tag, fig, step, close=False)

    def hparams(self, cfg: DictConfig, metrics: dict, step: int, leading=(), extra: dict | None = None,
                trial: str = "") -> None:
        """This run's HParams record, in its own directory (``SummaryWriter.add_hparams`` would make a sub-run,
        pytorch#32651): the experiment (which columns, in which order), the session (the flattened config) and the
        final scalar metrics (not per class) as scalars under :data:`FINAL_PREFIX`, where HParams reads them.

        TensorBoard takes the columns from one run's experiment record. It lists the hyperparameters marked as
        differing first, then by name (``leading``: the keys this command set; in a sweep, the swept ones), and
        shows the first five of each list: the metrics go :data:`HEADLINE` first. Integers go as text: HParams
        shows every number as a float (seed 0 as ``0.0000``). ``extra``: more columns (the experiment chosen, the
        run's provenance). ``trial``: the name the table shows for this run (empty: the run dir's name).
        """
        if self.writer is None:
            return
        finals = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                  and "/class_acc/" not in k and k != "steps"}
        order = sorted(finals, key=lambda k: (HEADLINE.index(k) if k in HEADLINE else len(HEADLINE),
                                              not k.endswith("/acc"), k))
        values = {k: str(v) if type(v) is int else v for k, v in {**flatten(cfg), **(extra or {})}.items()}
        experiment = api_pb2.Experiment(
            hparam_infos=[api_pb2.HParamInfo(name=k, type=api_pb2.DataType.Value(_HPARAM_TYPES[type(v)]),
                                             differs=k in leading) for k, v in values.items()],
            metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=FINAL_PREFIX + k), display_name=k)
                          for k in order],
        )
        _unused, session_start, session_end = hparams(values, {})
        if trial:
            start_info = HParamsPluginData.FromString(
                session_start.value[0].metadata.plugin_data.content).session_start_info
            start_info.group_name = trial
            session_start = _hparams_summary(SESSION_START_INFO_TAG, session_start_info=start_info)
        for summary in (_hparams_summary(EXPERIMENT_TAG, experiment=experiment), session_start, session_end):
            self.writer.file_writer.add_summary(summary)
        self.scalars(step, {k: finals[k] for k in order}, prefix=FINAL_PREFIX)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except OSError:
                if self.run_dir.is_dir():  # (a run dir deleted mid-run: the run reports that already)
                    raise


def _quiet_writer_thread() -> None:
    """TensorBoard's writer thread prints the traceback of a write that failed (its run dir deleted mid-run) and
    hands the error on to the next call in the main thread, which the run reports: the printout is left out."""
    previous = threading.excepthook
    if getattr(previous, "quiet_tensorboard", False):
        return

    def hook(args):
        if not (type(args.thread).__name__ == "_AsyncWriterThread" and issubclass(args.exc_type, OSError)):
            previous(args)

    hook.quiet_tensorboard = True
    threading.excepthook = hook


def _hparams_summary(tag: str, **plugin_data) -> Summary:
    """A summary of TensorBoard's HParams plugin (as torch's ``hparams`` packs its own)."""
    content = HParamsPluginData(version=PLUGIN_DATA_VERSION, **plugin_data).SerializeToString()
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME, content=content))
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata)])

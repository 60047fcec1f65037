"""TensorBoard for one run: scalars, figures and an HParams record, all in the run's own directory.

Tags (DESIGN.md section 6): ``train/<model>/<loss>``, ``train/mpl/h``, ``train/uda/mask``, ``eval/<model>/acc``,
``lr/<model>``, ``perf/steps_per_s``; the final metrics under their ``metrics.json`` names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams


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
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step) if enabled else None

    def scalars(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        if self.writer is None:
            return
        for tag, value in values.items():
            self.writer.add_scalar(prefix + tag, value, step)

    def figure(self, tag: str, fig, step: int) -> None:
        if self.writer is None:
            return
        self.writer.add_figure(tag, fig, step, close=False)

    def hparams(self, cfg: DictConfig, metrics: dict, step: int) -> None:
        """The flattened config and final scalar metrics (not per class) as one HParams session of this run
        (not a sub-run: ``SummaryWriter.add_hparams`` would write into a new directory, pytorch#32651).

        Only the session records are written, no experiment record: TensorBoard then derives the experiment from
        all runs and lists first the hyperparameters whose values differ between them (a sweep's swept keys);
        from a per-run experiment record it would list all 60-odd keys alphabetically.
        """
        if self.writer is None:
            return
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and "/class_acc/" not in k}
        _experiment, session_start, session_end = hparams(flatten(cfg), scalars)
        for summary in (session_start, session_end):
            self.writer.file_writer.add_summary(summary)
        self.scalars(step, scalars)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

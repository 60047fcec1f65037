"""``mpl-run``: validate the config, build data, models and method, train, write the run's record.

Reading order for a newcomer: :func:`run` here, then :func:`mpl_runner.engine.train`, then the method
(:mod:`mpl_runner.methods.mpl`).
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mpl_runner.cli_errors import one_line_error
from mpl_runner.config import register_configs
from mpl_runner.data import SSLData, build_dataset
from mpl_runner.errors import UserError
from mpl_runner.engine import resolve_amp, train
from mpl_runner.figures import confusion_figure, save_png
from mpl_runner.files import atomic_write_json
from mpl_runner.logging import Tracker
from mpl_runner.methods import Method, build_method
from mpl_runner.models import build_model, count_parameters
from mpl_runner.validate import validate

log = logging.getLogger("mpl_runner")

register_configs()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too


def failure_record(err: BaseException) -> dict:
    """What ``metrics.json`` holds for a run that did not finish."""
    return {"status": "failed", "error": f"{type(err).__name__}: {err}"}


@dataclass
class Trained:
    record: dict  # what metrics.json holds
    method: Method
    data: SSLData


def execute(cfg: DictConfig, run_dir: Path) -> Trained:
    """Train one configuration; write ``metrics.json``, figures and TensorBoard files into ``run_dir``."""
    validate(cfg)
    wall_start = time.perf_counter()
    device = resolve_device(cfg.device)
    if cfg.trainer.num_threads is not None:
        torch.set_num_threads(cfg.trainer.num_threads)
    seed_everything(cfg.seed)

    data = build_dataset(cfg.dataset, device)
    atomic_write_json(run_dir / "labeled_indices.json", data.labeled_indices)

    memory_format = torch.channels_last if cfg.trainer.channels_last else torch.preserve_format

    def make_model():
        return build_model(cfg.model, data.input_shape, data.num_classes).to(device, memory_format=memory_format)

    method = build_method(cfg.method, cfg.optim, cfg.trainer.steps, make_model)
    amp = resolve_amp(cfg.trainer.amp, device)
    if amp == "fp16":
        method.enable_grad_scaling(device)
    sizes = ", ".join(f"{k} {count_parameters(m):,}" for k, m in method.models.items())
    log.info(f"{cfg.method.name} on {cfg.dataset.name} ({len(data.labeled_indices)} labeled), {device}; "
             f"precision {amp}; parameters: {sizes}; run dir {run_dir}")

    tracker = Tracker(run_dir)
    try:
        metrics = train(method, data, cfg.trainer, device, tracker, amp)
        figures = {"confusion_matrix": confusion_figure(metrics["test/confusion"], data.class_names)}
        if data.figures:
            figures.update(data.figures(method.eval_models()))
        for stem, fig in figures.items():
            tracker.figure(stem, fig, cfg.trainer.steps)
            save_png(fig, run_dir / f"{stem}.png")
        metrics["wall_seconds"] = time.perf_counter() - wall_start
        tracker.hparams(cfg, metrics, cfg.trainer.steps)
    except BaseException as err:
        atomic_write_json(run_dir / "metrics.json", failure_record(err))
        raise
    finally:
        tracker.close()
    record = {"status": "completed", "method": cfg.method.name, "handed_out": method.handed_out, **metrics}
    atomic_write_json(run_dir / "metrics.json", record)
    log.info(f"test/acc {100 * metrics['test/acc']:.2f}% ({method.handed_out}); "
             f"trained {metrics['train_seconds']:.1f}s; metrics in {run_dir / 'metrics.json'}")
    return Trained(record, method, data)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Train one configuration (see :func:`execute`); returns what ``metrics.json`` holds."""
    return execute(cfg, run_dir).record


def discard_if_unused(run_dir: Path) -> None:
    """Remove a run dir that holds nothing but what Hydra wrote when it started the job."""
    hydra_files = {".hydra", f"{HydraConfig.get().job.name}.log"}
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= hydra_files:
        shutil.rmtree(run_dir)


def exit_with_error(message: str) -> NoReturn:
    print(f"mpl-run: error: {message}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path="pkg://mpl_runner.conf", config_name="config")
def hydra_main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        return run(cfg, run_dir)["test/acc"]
    except Exception as err:
        if hydra_cfg.mode != RunMode.RUN:
            # A multirun goes on with the other jobs; this one is marked failed with its error.
            if not (run_dir / "metrics.json").exists():
                atomic_write_json(run_dir / "metrics.json", failure_record(err))
            raise
        if not isinstance(err, UserError):
            raise
        # A single run stops here, before Hydra adds its own multi-line report; a config error leaves no run dir.
        discard_if_unused(run_dir)
        exit_with_error(str(err))


def cli() -> None:
    """Console entry point. User mistakes end as one line on stderr and exit status 2, without a traceback."""
    # Let Hydra's exceptions reach us instead of being printed by Hydra over several lines.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra_main()
    except Exception as err:  # noqa: BLE001 - anything not a user mistake is re-raised below
        message = one_line_error(err)
        if message is None:
            raise
        exit_with_error(message)

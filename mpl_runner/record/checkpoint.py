"""``checkpoints/last.pt``: everything a run needs to go on as if it had never stopped.

A checkpoint holds the step it was taken after, the method's state (models, optimizers, schedulers, AMP
scalers, EMA, MPL baseline), the RNG states (python, numpy, torch, CUDA), the loop's own counters and the
config that made it. Data-loader position needs nothing more: every data stream is a function of the step and
the RNG state (see :mod:`mpl_runner.data`). Files are written atomically and read with
``torch.load(weights_only=True)``, which unpickles tensors and plain containers only.
"""

from __future__ import annotations

import io
import pickle
import random
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from mpl_runner.core.errors import UserError, one_line
from mpl_runner.core.files import atomic_write_bytes

if TYPE_CHECKING:
    import torch

FORMAT = "mpl-runner checkpoint 1"
RELATIVE_PATH = Path("checkpoints") / "last.pt"
#: the checkpoint of the evaluation with the best val/acc so far (runs with a validation split)
BEST_PATH = Path("checkpoints") / "best.pt"
#: may grow on resume (a finished run extended): the schedules over the run are recomputed for the new total
EXTENDABLE = "trainer.steps"

#: keys that may differ between the run that wrote a checkpoint and the one resuming it: where things are, how
#: the run is watched, and speed switches that compute the same thing (the data streams do not depend on workers).
FREE_KEYS = (
    "device", "trainer.resume", "trainer.auto_resume", "trainer.progress", "trainer.progress_interval",
    "trainer.checkpoint_interval", "trainer.num_threads", "trainer.compile", "trainer.channels_last",
    "dataset.root", "dataset.download", "dataset.num_workers", "dataset.pin_memory", "dataset.persistent_workers",
)


class CheckpointError(UserError):
    """A checkpoint that cannot be resumed: unreadable, not ours, or written by another config."""


def identity(cfg: DictConfig) -> dict[str, Any]:
    """The config keys that decide what a run computes (all but :data:`FREE_KEYS`), flattened."""
    from mpl_runner.record.logging import flatten  # (TensorBoard's: not for the command line's imports)

    return {k: v for k, v in flatten(cfg).items() if k not in FREE_KEYS}


# --- RNG states -------------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Every generator a run draws from, as tensors and plain containers (what weights_only loads)."""
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- writing and reading ----------------------------------------------------------------------------------------


def save(path: Path, step: int, cfg: DictConfig, method, loop: dict[str, Any]) -> None:
    """Write the checkpoint taken after ``step`` steps; a crash during the write leaves the previous one."""
    state = {
        "format": FORMAT,
        "step": step,
        "config": identity(cfg),
        "method": method.state_dict(),
        "rng": rng_state(),
        "loop": loop,
    }
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load(path: Path, device: torch.device) -> dict[str, Any]:
    """Read a checkpoint (tensors land on ``device``); a file that is not one raises :class:`CheckpointError`."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with path.open("rb"):  # (zipfile.is_zipfile() would take a file it may not open for a truncated one)
            pass
    except OSError as err:
        raise CheckpointError(f"{path} cannot be read: {err.strerror}") from err
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a cut-off one has lost its directory
        raise CheckpointError(f"{path} is truncated or not a checkpoint (not the zip archive torch.save writes)")
    import torch

    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only refused what the pickle asked for: not something we wrote
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(f"{path} holds objects other than tensors and plain data{what}; not loading it") from err
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path} is truncated or not a checkpoint: {one_line(err)[:200]}") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not an mpl-runner checkpoint (format {found!r}, expected {FORMAT!r})")
    return state


def option_defaults() -> DictConfig | None:
    """In a running ``mpl-run``: the config its chosen options (``dataset=...``, ``experiment=...``) give without
    the command line's key overrides, i.e. each key's default in the YAML files; None where Hydra is not running.
    A group chosen into another package (``model@student_model=...``) is left out: that key's default is null."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    options = [f"{group}={option}" for group, option in hydra_cfg.runtime.choices.items()
               if option is not None and not group.startswith("hydra") and "@" not in group]
    return compose(config_name=hydra_cfg.job.config_name, overrides=options)


def check_config(state: dict[str, Any], cfg: DictConfig, path: Path, defaults: DictConfig | None = None) -> None:
    """Refuse a checkpoint written by a config that computes something else; name the keys that differ. A key the
    checkpoint does not know (added since) passes while it holds its default in ``defaults`` (what
    :func:`option_defaults` gives)."""
    theirs, ours = state["config"], identity(cfg)
    if ours[EXTENDABLE] < state["step"]:
        raise CheckpointError(f"{path} is at step {state['step']}: {EXTENDABLE}={ours[EXTENDABLE]} is fewer steps "
                              f"than the run has taken (a run goes on to {state['step']} or more)")
    default = identity(defaults) if defaults is not None else {}
    differ = sorted(
        k for k in theirs.keys() | ours.keys()
        if k != EXTENDABLE and theirs.get(k, "(absent)") != ours.get(k, "(absent)")
        and not (k not in theirs and k in default and ours[k] == default[k])
    )
    if differ:
        shown = ", ".join(f"{k}={ours.get(k, '(absent)')!r} here but {theirs.get(k, '(absent)')!r} there"
                          for k in differ[:3])
        more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
        raise CheckpointError(f"{path} was written by another config: {shown}{more}")


def restore(state: dict[str, Any], method, path: Path) -> None:
    """Load the method's state and the RNG states; a mismatch raises :class:`CheckpointError`."""
    try:
        method.load_state_dict(state["method"])
    except (KeyError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{path} does not fit this run's models: {one_line(err)[:200]}") from err
    set_rng_state(state["rng"])


def recompute_schedules(method) -> None:
    """After loading a checkpoint written for another ``trainer.steps``: each optimizer's learning rate as the
    method's own schedules (built for the new total) give it at the checkpoint's step. The loaded optimizers hold
    the old schedule's rate, which would otherwise drive the first step after the resume."""
    for scheduler in method.schedulers.values():
        for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base * factor(scheduler.last_epoch)

"""The trained model out of a run: ``model.safetensors`` (the weights of the model the method hands out) and
``model.json`` (what rebuilds it without Hydra or a checkpoint: the model config, the classes, the input shape and,
for image data sets, the preprocessing a file needs; the run's accuracies and provenance). ``mpl-predict`` and
``mpl-export`` read them through :func:`load_model`.

A completed run writes them after ``metrics.json``, the weights first, so ``model.json`` is there only beside the
final weights of a completed run; a run that starts or goes on removes the ones an earlier run left in its dir.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from mpl_runner.core.errors import UserError, one_line
from mpl_runner.core.files import atomic_write_bytes, atomic_write_json
from mpl_runner.core.registry import entry_of

WEIGHTS, META = "model.safetensors", "model.json"
FORMAT = "mpl-runner model"
FORMAT_VERSION = 1


class NoModel(UserError):
    """A run dir without a usable model: not a run dir, a run that did not finish, or unreadable model files."""


def remove(run_dir: Path) -> None:
    """Remove the model files an earlier run left in ``run_dir`` (``model.json`` first: no weights stay described
    as final)."""
    for name in (META, WEIGHTS):
        (Path(run_dir) / name).unlink(missing_ok=True)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict as safetensors takes it: detached, on the CPU, contiguous (channels_last weights
    too), each tensor its own memory."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def write_model(run_dir: Path, cfg, model_cfg, method, data, record: dict[str, Any]) -> None:
    """Write ``model.safetensors`` and ``model.json`` for the model ``method`` hands out (built from
    ``model_cfg``), trained on ``data`` in the run whose ``metrics.json`` holds ``record``."""
    from safetensors.torch import save

    model = method.eval_models()[method.handed_out]
    config = OmegaConf.to_container(model_cfg, resolve=True)
    if "pretrained" in config:
        config["pretrained"] = None  # (the weights are all in model.safetensors: loading reads no other file)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_option": entry_of("model", model_cfg).name,  # (which option's schema the values take)
        "model": config,
        "num_classes": data.num_classes,
        "class_names": list(data.class_names or [str(c) for c in range(data.num_classes)]),
        "input_shape": list(data.input_shape),
        "preprocess": data.preprocess,
        "method": cfg.method.name,
        "handed_out": method.handed_out,
        "dataset": cfg.dataset.name,
        "metrics": {k: record[k] for k in ("val/acc", "test/acc") if k in record},
        "provenance": {k.removeprefix("provenance/"): v for k, v in record.items() if k.startswith("provenance/")},
    }
    atomic_write_bytes(Path(run_dir) / WEIGHTS, save(weights(model), metadata={"format": FORMAT}))
    atomic_write_json(Path(run_dir) / META, meta)


def _why_no_model(run_dir: Path) -> str:
    metrics = run_dir / "metrics.json"
    try:
        record = json.loads(metrics.read_text())
    except FileNotFoundError:
        if not (run_dir / ".hydra").is_dir():
            return f"{run_dir} is not a run dir (no {META}, no metrics.json, no .hydra/)"
        return f"the run in {run_dir} has no model yet: it has not finished (no metrics.json; still running, or killed)"
    except (OSError, ValueError) as err:
        return f"the run in {run_dir} has no model: its metrics.json cannot be read ({one_line(err)})"
    status = record.get("status")
    if status == "interrupted":
        return (f"the run in {run_dir} has no model yet: it was interrupted ({record.get('signal', 'a signal')}) "
                f"before it finished; resume it with trainer.resume={run_dir}")
    if status == "failed":
        return f"the run in {run_dir} has no model: it failed ({record.get('error', 'no error recorded')})"
    return (f"the run in {run_dir} has no {META}: it was made before mpl-runner wrote models, or stopped while "
            f"writing it; its command again (provenance/command in metrics.json) plus trainer.resume={run_dir} "
            f"writes it")


def read_meta(run_dir: Path) -> dict[str, Any]:
    """``run_dir/model.json``; :class:`NoModel` (saying why) when there is none or it is not one."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NoModel(f"{run_dir} is not a directory" if run_dir.exists() else f"{run_dir} does not exist")
    path = run_dir / META
    if not path.is_file():
        raise NoModel(_why_no_model(run_dir))
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise NoModel(f"{path} cannot be read: {one_line(err)}") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise NoModel(f"{path} is not an mpl-runner model file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise NoModel(f"{path} is format version {meta.get('format_version')}; this mpl-runner reads version "
                      f"{FORMAT_VERSION}")
    return meta


def load_model(run_dir: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The run's handed-out model, rebuilt from ``model.json`` and loaded (strictly) from ``model.safetensors``, on
    ``device`` in eval mode; and ``model.json``'s contents."""
    from safetensors.torch import load_file

    from mpl_runner.models import build_model, model_node

    meta = read_meta(run_dir)
    try:
        node = model_node(meta.get("model_option", meta["model"].get("name")), meta["model"])
        model = build_model(node, tuple(meta["input_shape"]), meta["num_classes"])
        model.load_state_dict(load_file(Path(run_dir) / WEIGHTS), strict=True)
    except UserError as err:
        raise NoModel(f"the model in {run_dir} cannot be built: {err}") from err
    except Exception as err:  # (a missing or damaged weights file, or weights that do not fit: one line)
        raise NoModel(f"the model in {run_dir} cannot be loaded: {one_line(err)}") from err
    return model.to(device).eval(), meta

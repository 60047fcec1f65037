"""Any architecture of timm (``model=timm model.name=resnet18``), with ``num_classes`` from the data set and
``in_chans`` from its images; ``model.pretrained`` starts it from a local weights file. Nothing is downloaded: timm
is always asked for a model without pretrained weights.

A weights file (safetensors, or a torch state dict read with ``torch.load(weights_only=True)``) must fit the
architecture key for key and shape for shape, except the classifier head, which a checkpoint made for another
number of classes cannot fit: a head that differs keeps its fresh initialisation (fine-tuning), and the log says so.
"""

from __future__ import annotations

import difflib
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import timm
import torch
from omegaconf import MISSING, DictConfig, OmegaConf
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.models import get_pretrained_cfg
from torch import nn

from mpl_runner.core.checks import fraction
from mpl_runner.core.errors import ConfigError, one_line
from mpl_runner.core.registry import register

log = logging.getLogger("mpl_runner")

#: create_model arguments that come from elsewhere (the data set, model.pretrained, model.drop_rate) or would
#: fetch weights: not for model.kwargs
RESERVED = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir", "num_classes",
            "in_chans", "drop_rate")
#: state-dict keys a weights file may lack (batch counters that some exporters drop)
OPTIONAL_KEYS = ("num_batches_tracked",)


@dataclass
class TimmConfig:
    name: str = MISSING  # a timm architecture (timm.list_models()), optionally with its tag: resnet18.a1_in1k
    pretrained: Optional[str] = MISSING  # a local weights file (safetensors or a torch state dict); null: random init
    drop_rate: float = MISSING  # dropout before the classifier
    kwargs: dict[str, Any] = MISSING  # further timm.create_model arguments (drop_path_rate, patch_size, ...)


def _fixed_input_size(name: str) -> bool:
    pretrained_cfg = get_pretrained_cfg(name)
    return bool(pretrained_cfg is not None and pretrained_cfg.fixed_input_size)


def create(cfg, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """timm's model (no weights fetched); a model built for one input size (ViTs) is built for the data's."""
    kwargs = OmegaConf.to_container(cfg.kwargs) if isinstance(cfg.kwargs, DictConfig) else dict(cfg.kwargs)
    if _fixed_input_size(cfg.name) and "img_size" not in kwargs:
        kwargs["img_size"] = tuple(input_shape[1:])
    if cfg.drop_rate:  # (0 is timm's default, also for the few architectures that take no drop_rate)
        kwargs["drop_rate"] = cfg.drop_rate
    return timm.create_model(cfg.name, pretrained=False, num_classes=num_classes, in_chans=input_shape[0], **kwargs)


def build(cfg, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    model = create(cfg, input_shape, num_classes)
    if cfg.pretrained is not None:
        load_pretrained(model, Path(cfg.pretrained).expanduser(), cfg)
    return model


# --- weights files ----------------------------------------------------------------------------------------------


def read_weights(path: Path, shown: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file or a torch state dict (also one under ``state_dict`` or ``model``, as
    training checkpoints keep it); anything else is one line."""
    def refuse(why: str):
        return ConfigError("model.pretrained", shown, f"a safetensors file or a torch state dict: {why}")

    try:
        with path.open("rb"):
            pass
    except OSError as err:
        raise ConfigError("model.pretrained", shown, f"a weights file this user can read ({err.strerror})") from err
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, ValueError, OSError):
        pass
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise refuse("it holds objects other than tensors and plain data; not loading it") from err
    except Exception as err:  # noqa: BLE001 - pickle's reader fails on other bytes with any error (KeyError, ...)
        raise refuse(f"this file is neither ({one_line(err)[:160]})") from err
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise refuse(f"it holds a {type(state).__name__}, not a dict of tensors")
    return state


def head_keys(model: nn.Module) -> set[str]:
    """The state-dict keys of the classifier head (what timm's pretrained config and ``get_classifier()`` name)."""
    classifier = model.pretrained_cfg.get("classifier") if hasattr(model, "pretrained_cfg") else None
    prefixes = [classifier] if isinstance(classifier, str) else list(classifier or ())
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        prefixes += [name for name, module in model.named_modules() if module is head and name]
    return {k for k in model.state_dict() if any(k == p or k.startswith(p + ".") for p in prefixes)}


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def load_pretrained(model: nn.Module, path: Path, cfg) -> None:
    """Load the file's weights into ``model``; refuse (one line) the first key that does not fit, except the head."""
    shown = str(cfg.pretrained)
    theirs = read_weights(path, shown)

    def misfit(why: str) -> ConfigError:
        return ConfigError("model.pretrained", shown, f"weights that fit model.name={cfg.name}: {why}")

    ours = model.state_dict()
    head = head_keys(model)
    skipped = []
    for key, mine in ours.items():
        if key not in theirs:
            if key in head:
                skipped.append(key)
            elif not key.endswith(OPTIONAL_KEYS):
                raise misfit(f"the file has no {key} (the model's is {_shape(mine)})")
        elif theirs[key].shape != mine.shape:
            if key not in head:
                raise misfit(f"{key} is {_shape(theirs[key])} there but {_shape(mine)} here")
            skipped.append(key)
    extra = [k for k in theirs if k not in ours]
    if extra:
        more = f" (and {len(extra) - 1} more keys)" if len(extra) > 1 else ""
        raise misfit(f"the file has {extra[0]} ({_shape(theirs[extra[0]])}), which the model has not{more}")
    model.load_state_dict({k: ours[k] if k in skipped or k not in theirs else theirs[k] for k in ours})
    loaded = sum(1 for k in ours if k in theirs and k not in skipped)
    log.info(f"model.pretrained: {loaded} tensors from {shown}" +
             (f"; kept fresh (the classifier head, made for another number of classes): {', '.join(skipped)}"
              if skipped else ""))


# --- checks -----------------------------------------------------------------------------------------------------


def check(cfg) -> None:
    name = cfg.model.name
    if not isinstance(name, str) or not timm.is_model(name):
        close = difflib.get_close_matches(str(name), timm.list_models(), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError("model.name", name, f"a timm architecture: {hint}(timm.list_models() lists them)")
    try:
        get_pretrained_cfg(name)
    except RuntimeError as err:  # (an architecture with a tag it does not have: resnet18.bogus)
        raise ConfigError("model.name", name, f"a timm architecture, with a tag it has: {err}") from None
    fraction(cfg, "model.drop_rate")
    if not isinstance(cfg.model.kwargs, DictConfig):
        raise ConfigError("model.kwargs", cfg.model.kwargs, "a mapping of timm.create_model arguments, e.g. {}")
    reserved = [k for k in cfg.model.kwargs if k in RESERVED]
    if reserved:
        raise ConfigError("model.kwargs", OmegaConf.to_container(cfg.model.kwargs),
                          f"create_model arguments other than {', '.join(RESERVED)} ({reserved[0]} comes from "
                          "the data set or a key of model)")
    pretrained = cfg.model.pretrained
    if pretrained is not None and not (pretrained and Path(pretrained).expanduser().is_file()):
        raise ConfigError("model.pretrained", pretrained,
                          "null or a local weights file (safetensors or a torch state dict): there is no such file")


def unfit(cfg, input_shape: tuple[int, ...]) -> tuple[str, str] | None:
    """Images only; the architecture must take them (channels, size): built and run on the meta device, where it
    costs neither memory nor time. (Where the meta device itself fails, an op without a meta kernel, building the
    real model will say what is wrong.)"""
    dataset = cfg.dataset.name
    if len(input_shape) != 3:
        return "model", f"mlp for dataset={dataset} (inputs of shape {input_shape}, not images)"
    shown = "x".join(map(str, input_shape))
    try:
        with torch.device("meta"):
            model = create(cfg.model, input_shape, 2)
        with torch.no_grad():
            model.eval()(torch.empty(2, *input_shape, device="meta"))
    except TypeError as err:  # an argument the architecture does not take
        if "drop_rate" in str(err):
            return "model.drop_rate", f"0 for {cfg.model.name}, which takes no drop_rate"
        if cfg.model.kwargs and "argument" in str(err):
            return "model.kwargs", f"arguments {cfg.model.name} takes: {one_line(err)[:200]}"
        return _refusal(err, shown, dataset)
    except Exception as err:  # noqa: BLE001 - whatever timm says of these arguments, or torch of these images
        return _refusal(err, shown, dataset)
    return None


def _refusal(err: Exception, shown: str, dataset: str) -> tuple[str, str] | None:
    if "meta" in str(err).lower():
        return None
    return "model.name", f"an architecture that takes {shown} images ({dataset}): {one_line(err)[:200]}"


register("model", "timm", TimmConfig, build, check=check, unfit=unfit, fixed_name=False)

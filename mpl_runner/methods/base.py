"""What the training loop sees of a method, and the bookkeeping every method shares.

A method owns its models, optimizers and schedulers. The loop calls ``train_step(batch, step)`` and reads
``eval_models()``; it never needs to know which method runs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mpl_runner.core.distributed import World

from mpl_runner.methods.optim import build_optimizer, build_scheduler

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class Phase:
    """A stretch of training from step ``start`` on that needs one kind of batch: ``views="ssl"`` (labeled images and
    weak and strong views of unlabeled ones) or ``"labeled"`` (labeled images alone: no unlabeled views are built),
    with ``labeled_batch_size`` (None: the data set's)."""

    start: int
    views: str = "ssl"
    labeled_batch_size: int | None = None


class Method:
    #: the model whose accuracy is a run's headline ``test/acc`` (the one the method hands out)
    handed_out: str = ""
    #: the model that labels unlabeled inputs (figures of pseudo labels draw with it); None: the method has none
    pseudo_label_model: str | None = None

    def __init__(self, optim_cfg, total_steps: int):
        self.optim_cfg = optim_cfg
        self.total_steps = total_steps
        self.models: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self.scalers: dict[str, torch.amp.GradScaler] = {}  # fp16 only: set by enable_grad_scaling()
        self.skip_nonfinite = False  # trainer.skip_nonfinite: drop updates with a non-finite loss or gradient
        self.skipped: dict[str, int] = {}  # updates dropped so, per model
        self.world = World()  # set by distribute(): the ranks this method trains on
        self.nets: dict[str, nn.Module] = {}  # DistributedDataParallel wrappers, set by distribute()

    def phases(self) -> list[Phase]:
        """The batches the method trains on, phase by phase (the loop asks the data set for exactly those)."""
        return [Phase(0, views="ssl")]

    def distribute(self, world: World, device: torch.device, sync_batchnorm: bool = False) -> None:
        """Train on every rank of ``world``: each trained model gets a DistributedDataParallel wrapper (which
        averages gradients over ranks) for the forward passes that are backpropagated; ``models`` stay the plain
        modules (state dicts, evaluation, no-grad forwards)."""
        from torch import nn
        from torch.nn.parallel import DistributedDataParallel

        self.world = world
        for name, model in self.models.items():
            if sync_batchnorm:  # swaps the BN layers in place; their parameters, which the optimizer holds, stay
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
                self.models[name] = model
            device_ids = [device.index] if device.type == "cuda" else None
            self.nets[name] = DistributedDataParallel(model, device_ids=device_ids)

    def compile(self) -> None:
        """``torch.compile`` the forward passes that are trained (after :meth:`distribute`, as PyTorch advises for
        DDP); ``models`` stay the plain modules, so state dicts keep their keys."""
        import torch

        for name in self.models:
            self.nets[name] = torch.compile(self.net(name))

    def net(self, name: str) -> nn.Module:
        """Model ``name`` for a forward pass that will be backpropagated (its DDP wrapper on several ranks)."""
        return self.nets.get(name, self.models[name])

    def enable_grad_scaling(self, device: torch.device) -> None:
        """fp16 autocast: one gradient scaler per optimizer."""
        import torch

        self.scalers = {name: torch.amp.GradScaler(device.type) for name in self.optimizers}

    def add_model(self, name: str, model: nn.Module, lr: float | None = None, steps: int | None = None,
                  warmup_steps: int | None = None) -> nn.Module:
        """Register a trained model with an optimizer of the same name (the ``optim`` group's, at ``lr``) and an lr
        schedule over ``steps`` updates (default: every step of the run) with ``warmup_steps`` (default: optim's)."""
        self.models[name] = model
        self.add_optimizer(name, model, self.optim_cfg, steps or self.total_steps, lr, warmup_steps)
        return model

    def add_optimizer(self, name: str, model: nn.Module, optim_cfg, steps: int, lr: float | None = None,
                      warmup_steps: int | None = None) -> None:
        """An optimizer ``name`` over ``model``'s parameters, built from ``optim_cfg`` (name, lr, momentum, nesterov,
        weight_decay, schedule, warmup_steps), with its lr schedule over ``steps`` updates."""
        self.optimizers[name] = build_optimizer(model, optim_cfg, lr or optim_cfg.lr)
        warmup = optim_cfg.warmup_steps if warmup_steps is None else warmup_steps
        self.schedulers[name] = build_scheduler(self.optimizers[name], optim_cfg.schedule, steps, warmup)
        self.skipped[name] = 0

    def update(self, name: str, loss: torch.Tensor) -> bool:
        """One step of optimizer ``name`` on ``loss`` (clipping the grad norm if configured); False if the step
        was dropped (``skip_nonfinite``, or the fp16 grad scaler found a non-finite gradient)."""
        optimizer, scaler = self.optimizers[name], self.scalers.get(name)
        optimizer.zero_grad(set_to_none=True)
        if self.skips(name, loss):
            self._skip_step(name)
            return False
        (scaler.scale(loss) if scaler else loss).backward()
        return self.step_optimizer(name)

    def skips(self, name: str, value: torch.Tensor) -> bool:
        """With ``skip_nonfinite``: True (and one more skip counted for ``name``) if ``value`` is not finite.
        The check reads the value, a device synchronisation, so it runs only when asked for."""
        import torch

        if not self.skip_nonfinite or bool(torch.isfinite(value).all()):
            return False
        self.skipped[name] += 1
        return True

    def _skip_step(self, name: str) -> None:
        """A dropped update still advances the lr schedule, which stays in step with the run."""
        with warnings.catch_warnings():  # torch warns when a schedule moves before its optimizer's first step
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            self.schedulers[name].step()

    def step_optimizer(self, name: str) -> bool:
        """Clip (if configured), step and advance the lr schedule of optimizer ``name``; its grads are set. False if
        the step was dropped (a non-finite gradient: ``skip_nonfinite``, or the fp16 grad scaler)."""
        from torch import nn

        optimizer, scaler = self.optimizers[name], self.scalers.get(name)
        if self.optim_cfg.grad_clip is not None or (self.skip_nonfinite and not scaler):
            if scaler:
                scaler.unscale_(optimizer)
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            clip = self.optim_cfg.grad_clip if self.optim_cfg.grad_clip is not None else float("inf")
            norm = nn.utils.clip_grad_norm_(params, clip)
            if not scaler and self.skips(name, norm):  # (a scaler skips non-finite gradients by itself)
                optimizer.zero_grad(set_to_none=True)
                self._skip_step(name)
                return False
        if scaler:
            scale = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            # the scaler skips a step with a non-finite gradient and then lowers its scale (it never lowers it
            # otherwise): the one public sign of a skipped step
            stepped = scaler.get_scale() >= scale
            if not stepped:
                self._skip_step(name)
                return False
        else:
            optimizer.step()
        self.schedulers[name].step()
        return True

    def lr(self, name: str) -> float:
        return self.optimizers[name].param_groups[0]["lr"]

    def lrs(self) -> dict[str, float]:
        return {name: self.lr(name) for name in self.optimizers}

    def train_step(self, batch, step: int) -> dict[str, torch.Tensor]:
        """One step; returns detached scalars keyed ``<model>/<loss>`` (the loop adds ``train/``)."""
        raise NotImplementedError

    def eval_models(self) -> dict[str, nn.Module]:
        return dict(self.models)

    def pseudo_labeler(self) -> nn.Module | None:
        """The model that draws the pseudo labels (``pseudo_label_model``), for a data set's figures."""
        return self.models[self.pseudo_label_model] if self.pseudo_label_model else None

    def state_dict(self) -> dict[str, Any]:
        return {
            "models": {k: m.state_dict() for k, m in self.models.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scalers": {k: s.state_dict() for k, s in self.scalers.items()},
            "skipped": dict(self.skipped),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        kinds = ("models", self.models), ("optimizers", self.optimizers), ("schedulers", self.schedulers), (
            "scalers", self.scalers)
        for kind, objs in kinds:
            for name, obj in objs.items():
                obj.load_state_dict(state[kind][name])
        self.skipped.update(state["skipped"])

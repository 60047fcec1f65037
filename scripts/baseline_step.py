"""The baseline that ``bench_cifar_step.py`` times our MPL step against: the training step of the most used PyTorch
port of MPL, written here from its description (not from its code):

* teacher forward on ``cat(x_l, x_uw, x_us)``: supervised loss, UDA loss (sharpened weak-view targets, confidence
  mask) and the MPL term;
* student forward on ``cat(x_l, x_us)``: its labeled loss before the step ("old") comes from this forward, its
  loss on the teacher's hard pseudo labels is backpropagated; after its step, one more forward on ``x_l`` ("new");
* fp16 autocast with one GradScaler per model, contiguous layout, eager;
* six losses read with ``.item()`` every step (six host synchronisations).

The port's sign, ``new - old``, is kept: it changes nothing in the cost. Same models, optimizers (our SGD builder:
momentum, weight decay off the batch norms) and lr schedules as ours, so the two differ by the step alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mpl_runner.methods.optim import build_optimizer, build_scheduler


class BaselineStep:
    def __init__(self, make_model, optim_cfg, uda_cfg, total_steps: int, device: torch.device, fp16: bool = True):
        """``fp16=False`` (a quick check on a CPU, where fp16 is emulated): float32, the grad scalers disabled."""
        self.device, self.uda, self.fp16 = device, uda_cfg, fp16
        self.teacher, self.student = make_model(), make_model()
        self.optimizers = [build_optimizer(m, optim_cfg, optim_cfg.lr) for m in (self.teacher, self.student)]
        self.schedulers = [build_scheduler(o, optim_cfg.schedule, total_steps, optim_cfg.warmup_steps)
                           for o in self.optimizers]
        self.scalers = [torch.amp.GradScaler(device.type, enabled=fp16) for _ in range(2)]

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=self.fp16)

    def _update(self, k: int, loss: torch.Tensor) -> None:
        optimizer, scaler = self.optimizers[k], self.scalers[k]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        self.schedulers[k].step()

    def __call__(self, batch, step: int) -> dict[str, float]:
        n_l, n_u = len(batch.y_l), len(batch.x_uw)
        uda = self.uda
        with self._autocast():
            t_logits = self.teacher(torch.cat([batch.x_l, batch.x_uw, batch.x_us]))
            t_l, t_uw, t_us = t_logits.split([n_l, n_u, n_u])
            t_loss_l = F.cross_entropy(t_l, batch.y_l)
            targets = torch.softmax(t_uw.detach().float() / uda.temperature, dim=-1)
            mask = (targets.amax(dim=-1) >= uda.threshold).float()
            t_loss_u = (-(targets * F.log_softmax(t_us.float(), dim=-1)).sum(dim=-1) * mask).mean()
            t_loss_uda = t_loss_l + uda.weight * min(1.0, (step + 1) / max(1, uda.ramp_steps)) * t_loss_u

            pseudo = t_us.detach().argmax(dim=-1)
            s_logits = self.student(torch.cat([batch.x_l, batch.x_us]))
            s_l, s_us = s_logits.split([n_l, n_u])
            s_loss_l_old = F.cross_entropy(s_l.detach(), batch.y_l)
            s_loss = F.cross_entropy(s_us, pseudo)
        self._update(1, s_loss)

        with self._autocast():
            with torch.no_grad():
                s_loss_l_new = F.cross_entropy(self.student(batch.x_l), batch.y_l)
            t_loss_mpl = (s_loss_l_new - s_loss_l_old) * F.cross_entropy(t_us, pseudo)
            t_loss = t_loss_uda + t_loss_mpl
        self._update(0, t_loss)

        return {"student/loss": s_loss.item(), "teacher/loss": t_loss.item(), "teacher/loss_sup": t_loss_l.item(),
                "teacher/loss_uda": t_loss_u.item(), "teacher/loss_mpl": t_loss_mpl.item(),
                "uda/mask": mask.mean().item()}

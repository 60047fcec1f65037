"""Meta Pseudo Labels (Pham et al., CVPR 2021): DESIGN.md section 4, step by step.

The teacher T labels the unlabeled batch; the student S takes one step on those pseudo labels; the change of
the student's loss on labeled data tells the teacher whether its labels helped.

first_order (the paper's and the official code's update, hard pseudo labels y_hat):
    h = CE(S(x_l), y_l) - CE(S'(x_l), y_l)          ("old - new", S' the student after its step)
    teacher loss = CE(T(x_l), y_l) + UDA + h * CE(T(x_u), y_hat)
  A first-order Taylor expansion gives old - new = eta * grad L_l . grad L_u, so h > 0 when the labels helped
  and descending h * CE(T(x_u), y_hat) makes the teacher more likely to give such labels again (REINFORCE on
  the student's labeled loss). ``feedback=new_minus_old`` flips the sign, as the official code does.

exact (small models): soft pseudo labels p = softmax(T(x_u)); the teacher differentiates the student's labeled
loss after one SGD step on p, L_l(theta_S - eta * grad L_u(theta_S, p)), through that step by autograd.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from mpl_runner.methods.base import Method
from mpl_runner.methods.losses import soft_cross_entropy
from mpl_runner.methods.uda import teacher_losses


@contextmanager
def frozen_batchnorm_stats(model: nn.Module):
    """Forward in train mode without moving BN running statistics (momentum 0 leaves them as they are)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


def rng_snapshot(device: torch.device):
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def restore_rng(state, device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


class MPL(Method):
    def __init__(self, cfg, optim_cfg, total_steps: int, make_model):
        super().__init__(optim_cfg, total_steps)
        self.cfg = cfg
        self.teacher = self.add_model("teacher", make_model())
        # The student starts after student_wait_steps; its lr schedule (warmup, decay) starts then too, and
        # ends where finetuning (the last finetune_steps) begins.
        self.mpl_steps = total_steps - cfg.finetune_steps
        self.student = self.add_model(
            "student", make_model(), lr=cfg.student_lr, steps=self.mpl_steps - cfg.student_wait_steps
        )
        self.finetune_optimizer = torch.optim.SGD(
            self.student.parameters(), lr=cfg.finetune_lr, momentum=0.9, nesterov=True,
            weight_decay=optim_cfg.weight_decay,
        )
        param = next(self.student.parameters())
        self.baseline = torch.zeros((), device=param.device, dtype=param.dtype)
        self.ema = None
        if cfg.ema_decay is not None:
            self.ema = AveragedModel(self.student, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        self.handed_out = "student_ema" if self.ema is not None else "student"

    # -- the step ---------------------------------------------------------------------------------------------

    def train_step(self, batch, step: int):
        if step >= self.mpl_steps:
            return self._finetune_step(batch)
        # 1-2. Teacher forward on (x_l, x_uw, x_us); supervised and UDA losses.
        t_logits_us, loss_sup, loss_uda, mask = teacher_losses(self.net("teacher"), batch, self.cfg, step)
        stats = {"teacher/loss_sup": loss_sup.detach(), "teacher/loss_uda": loss_uda.detach(), "uda/mask": mask}

        if step < self.cfg.student_wait_steps:  # the student has not started: no feedback yet
            self.update("teacher", loss_sup + loss_uda)
            return {**stats, "teacher/loss": (loss_sup + loss_uda).detach()}

        if self.cfg.variant == "exact":
            loss_mpl, student_stats = self._exact_feedback(batch, t_logits_us)
        else:
            loss_mpl, student_stats = self._first_order_feedback(batch, t_logits_us)

        # 7. Teacher step on supervised + UDA + MPL terms.
        loss_teacher = loss_sup + loss_uda + loss_mpl
        self.update("teacher", loss_teacher)
        return {**stats, **student_stats, "teacher/loss": loss_teacher.detach(), "teacher/loss_mpl": loss_mpl.detach()}

    def _first_order_feedback(self, batch, t_logits_us):
        # 3-4. Pseudo labels on the view the student sees; the student learns them (one optimizer step).
        pseudo = self.pseudo_labels(t_logits_us.detach())
        rng = rng_snapshot(batch.x_l.device)
        old = self.student_labeled_loss(batch, rng)
        s_logits_us = self.net("student")(batch.x_us)
        loss_student = F.cross_entropy(s_logits_us, pseudo, label_smoothing=self.cfg.label_smoothing)
        self.update("student", loss_student)
        self._update_ema()
        # 5-6. The updated student's labeled loss (same dropout masks as for old); the feedback coefficient, from
        # losses averaged over ranks, so every rank gives its teacher the same coefficient.
        new = self.student_labeled_loss(batch, rng)
        h = self.feedback(self.world.mean(old), self.world.mean(new))
        # Not CE(stop_grad(softmax(z)), z), whose gradient in z is 0: the target is the sampled/argmax label.
        loss_mpl = h * F.cross_entropy(t_logits_us, pseudo)
        return loss_mpl, {"student/loss": loss_student.detach(), "mpl/h": h, "mpl/baseline": self.baseline.clone()}

    def _exact_feedback(self, batch, t_logits_us):
        rng = rng_snapshot(batch.x_l.device)
        old = self.student_labeled_loss(batch, rng)
        meta_loss, student_grads, loss_student = self.lookahead_labeled_loss(batch, t_logits_us)
        # The student takes the step the teacher just differentiated through (exactly so with plain SGD).
        for param, grad in zip(self.student.parameters(), student_grads):
            param.grad = grad
        self.step_optimizer("student")
        self._update_ema()
        new = self.student_labeled_loss(batch, rng)
        return meta_loss, {"student/loss": loss_student.detach(), "mpl/h": old - new}

    def _finetune_step(self, batch):
        """After MPL: the student alone on the labeled batch (the paper's finetuning)."""
        loss = F.cross_entropy(self.net("student")(batch.x_l), batch.y_l, label_smoothing=self.cfg.label_smoothing)
        self.finetune_optimizer.zero_grad(set_to_none=True)
        if not self.skips("student", loss):
            loss.backward()
            self.finetune_optimizer.step()
            self._update_ema()
        return {"student/loss_finetune": loss.detach()}

    # -- pieces, named as in DESIGN.md section 4 ------------------------------------------------------------

    def pseudo_labels(self, logits: torch.Tensor) -> torch.Tensor:
        if self.cfg.pseudo_label == "sample":
            return torch.distributions.Categorical(logits=logits).sample()
        return logits.argmax(dim=-1)

    @torch.no_grad()
    def student_labeled_loss(self, batch, rng_state=None) -> torch.Tensor:
        """CE(S(x_l), y_l) in train mode (as the student is trained), leaving BN running stats untouched.

        With ``rng_state`` (from :func:`rng_snapshot`), dropout draws the same masks as in the forward that took
        the snapshot, so ``old - new`` measures the student's step and not two different dropout draws. The global
        RNG is left as it was either way.
        """
        device = batch.x_l.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
            if rng_state is not None:
                restore_rng(rng_state, device)
            with frozen_batchnorm_stats(self.student):
                return F.cross_entropy(self.student(batch.x_l), batch.y_l)

    def feedback(self, old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        """h = old - new (or new - old, the official code's sign), minus a moving-average baseline if set."""
        h = old - new if self.cfg.feedback == "old_minus_new" else new - old
        if self.cfg.baseline_decay is not None:
            self.baseline.lerp_(h, 1.0 - self.cfg.baseline_decay)
            h = h - self.baseline
        return h

    def lookahead_labeled_loss(self, batch, t_logits_us):
        """L_l(theta_S') with theta_S' = theta_S - eta * grad L_u(theta_S, softmax(T(x_us))), differentiable in T.

        Returns that loss, the student's (detached) gradient of L_u, and L_u itself.
        """
        # Leaf copies of the student's weights: the meta loss reaches the teacher alone, not student .grad, and
        # the student's in-place step below does not disturb the graph the teacher backpropagates through.
        names, params = zip(*((n, p.detach().clone().requires_grad_()) for n, p in self.student.named_parameters()))
        buffers = dict(self.student.named_buffers())
        soft_labels = torch.softmax(t_logits_us, dim=-1)
        s_logits_us = functional_call(self.student, ({**dict(zip(names, params)), **buffers}), (batch.x_us,))
        loss_student = soft_cross_entropy(s_logits_us, soft_labels)
        grads = torch.autograd.grad(loss_student, params, create_graph=True)
        eta = self.lr("student")
        stepped = {name: p - eta * g for name, p, g in zip(names, params, grads)}
        with frozen_batchnorm_stats(self.student):
            s_logits_l = functional_call(self.student, ({**stepped, **buffers}), (batch.x_l,))
        meta_loss = F.cross_entropy(s_logits_l, batch.y_l)
        return meta_loss, [g.detach() for g in grads], loss_student

    def _update_ema(self) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.student)

    # -- what the loop reads ---------------------------------------------------------------------------------

    def eval_models(self):
        models = {"teacher": self.teacher, "student": self.student}
        if self.ema is not None:
            models["student_ema"] = self.ema.module
        return models

    def state_dict(self):
        state = super().state_dict()
        state["baseline"] = self.baseline.clone()
        state["finetune_optimizer"] = self.finetune_optimizer.state_dict()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.baseline.copy_(state["baseline"])
        self.finetune_optimizer.load_state_dict(state["finetune_optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])


"""Meta Pseudo Labels (Pham et al., CVPR 2021): docs/design.md section 2, step by step (steps 1-7, equations
(1)-(8)).

The teacher T labels the unlabeled batch; the student S takes one step on those pseudo labels; the change of
the student's loss on labeled data tells the teacher whether its labels helped.

first_order (the paper's and the official code's update, hard pseudo labels y_hat):
    h = CE(S(x_l), y_l) - CE(S'(x_l), y_l)          ("old - new", S' the student after its step)
    teacher loss = CE(T(x_l), y_l) + UDA + h * CE(T(x_u), y_hat)
  A first-order Taylor expansion gives old - new = eta * grad L_l . grad L_u, so h > 0 when the labels helped
  and descending h * CE(T(x_u), y_hat) makes the teacher more likely to give such labels again (REINFORCE on
  the student's labeled loss). ``feedback=new_minus_old`` flips the sign, as the official code does;
  ``feedback=none`` is the control: h is measured and logged, the teacher's MPL term is 0.

exact (small models): soft pseudo labels p = softmax(T(x_u)); the teacher differentiates the student's labeled
loss after one SGD step on p, L_l(theta_S - eta * grad L_u(theta_S, p)), through that step by autograd.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from mpl_runner.data.batch import Batch
from mpl_runner.methods import mpl_config
from mpl_runner.methods.base import Method, Phase
from mpl_runner.methods.losses import soft_cross_entropy
from mpl_runner.methods.uda import teacher_losses


@contextmanager
def frozen_batchnorm_stats(model: nn.Module):
    """Forward in train mode (batch statistics) without moving the BN running statistics: momentum 0 leaves them
    as they are, and the count of batches seen is put back."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


@contextmanager
def dropout_off(model: nn.Module, off: bool = True):
    """The block runs ``model``'s dropout layers in eval mode (identity) when ``off``; their mode is put back."""
    drops = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)] if off else []
    modes = [m.training for m in drops]
    for m in drops:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(drops, modes):
            m.train(mode)


class Lookahead(NamedTuple):
    meta_loss: torch.Tensor  # L_l(theta_S'), differentiable in the teacher
    student_grads: list[torch.Tensor]  # grad L_u(theta_S), detached: the student's real step
    student_loss: torch.Tensor  # L_u(theta_S)
    weights: dict[str, torch.Tensor]  # theta_S', detached


@contextmanager
def seeded(device: torch.device, seed: int):
    """The block draws random numbers on ``device`` from a generator seeded with ``seed``; afterwards that generator
    is as it was before the block."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        else:
            torch.default_generator.manual_seed(seed)
        yield


class MPL(Method):
    pseudo_label_model = "teacher"

    def __init__(self, cfg, optim_cfg, total_steps: int, make_model):
        super().__init__(optim_cfg, total_steps)
        self.cfg = cfg
        # The teacher trains for the MPL steps; the student starts after student_wait_steps, and its lr schedule
        # (warmup, decay) starts then too; both schedules end where finetuning (the last finetune.steps) begins.
        self.mpl_steps = total_steps - cfg.finetune.steps
        self.teacher = self.add_model("teacher", make_model("teacher"), steps=self.mpl_steps)
        self.student = self.add_model(
            "student", make_model("student"), lr=cfg.student_lr, steps=self.mpl_steps - cfg.student_wait_steps,
            warmup_steps=cfg.student_warmup_steps,
        )
        if cfg.finetune.steps:
            self.add_optimizer("finetune", self.student, cfg.finetune, cfg.finetune.steps)
        param = next(self.student.parameters())
        self.baseline = torch.zeros((), device=param.device, dtype=param.dtype)
        self.ema = None
        if cfg.ema_decay is not None:
            self.ema = AveragedModel(self.student, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        self.handed_out = "student_ema" if self.ema is not None else "student"
        self.finetuning = False
        self.finetune_started = False  # (finetune.from_ema: the EMA is copied into the student once)
        # feedback_batch=validation: the held-out labeled points of the reward, a Batch set by the run
        self.validation_batch: Batch | None = None

    def phases(self) -> list[Phase]:
        """MPL on labeled and unlabeled batches; then (finetune.steps > 0) the student on labeled batches alone."""
        mpl = [Phase(0, views="ssl")]
        if not self.cfg.finetune.steps:
            return mpl
        return [*mpl, Phase(self.mpl_steps, views="labeled", labeled_batch_size=self.cfg.finetune.batch_size)]

    # -- the step ---------------------------------------------------------------------------------------------

    def train_step(self, batch, step: int):
        self.finetuning = step >= self.mpl_steps
        if self.finetuning:
            return self._finetune_step(batch)
        # 1-2. Teacher forward on (x_l, x_uw, x_us); supervised and UDA losses, equations (1) and (2).
        t_logits_us, loss_sup, loss_uda, mask = teacher_losses(self.net("teacher"), batch, self.cfg, step)
        stats = {"teacher/loss_sup": loss_sup.detach(), "teacher/loss_uda": loss_uda.detach(), "uda/mask": mask}

        # (teacher_labeled_weight 0: the teacher learns from the feedback (and UDA) alone, the paper's equation
        # before its auxiliary losses)
        loss_sup = self.cfg.teacher_labeled_weight * loss_sup
        if step < self.cfg.student_wait_steps:  # the student has not started: no feedback yet
            self.update("teacher", loss_sup + loss_uda)
            return {**stats, "teacher/loss": (loss_sup + loss_uda).detach()}

        if self.cfg.variant == "exact":
            loss_mpl, student_stats = self._exact_feedback(batch, t_logits_us)
        else:
            loss_mpl, student_stats = self._first_order_feedback(batch, t_logits_us)

        # 7. Teacher step on supervised + UDA + MPL terms, equation (7).
        loss_teacher = loss_sup + loss_uda + loss_mpl
        self.update("teacher", loss_teacher)
        return {**stats, **student_stats, "teacher/loss": loss_teacher.detach(), "teacher/loss_mpl": loss_mpl.detach()}

    def _first_order_feedback(self, batch, t_logits_us):
        # 3-4. Pseudo labels on the view the student sees; old (3); the student learns them (4).
        pseudo = self.pseudo_labels(t_logits_us.detach())
        masks = self.dropout_seed()
        old = self.student_labeled_loss(self.reward_batch(batch), masks)
        s_logits_us = self.net("student")(batch.x_us)
        # (hard labels, or soft ones: with feedback=none, what the official code computes)
        loss_student = F.cross_entropy(s_logits_us, pseudo, label_smoothing=self.cfg.label_smoothing)
        stepped = self.update("student", loss_student)
        self._update_ema()
        # 5-6. The updated student's labeled loss (the same dropout masks as for old); the feedback coefficient (6),
        # from losses averaged over ranks, so every rank gives its teacher the same coefficient.
        new = self.student_labeled_loss(self.reward_batch(batch), masks)
        h, coefficient = self.feedback(self.world.mean(old), self.world.mean(new), stepped)
        # Not CE(stop_grad(softmax(z)), z), whose gradient in z is 0: the target is the sampled/argmax label.
        loss_mpl = (coefficient * F.cross_entropy(t_logits_us, pseudo) if not pseudo.is_floating_point()
                    else t_logits_us.new_zeros(()))
        return loss_mpl, {"student/loss": loss_student.detach(), "mpl/h": h, "mpl/coefficient": coefficient,
                          "mpl/baseline": self.baseline.clone()}

    def _exact_feedback(self, batch, t_logits_us):
        masks = self.dropout_seed()
        old = self.student_labeled_loss(self.reward_batch(batch), masks)
        look = self.lookahead(batch, t_logits_us, masks)
        # The student takes the very step the teacher just differentiated through (plain SGD: check_exact).
        for param, grad in zip(self.student.parameters(), look.student_grads):
            param.grad = grad
        stepped = self.step_optimizer("student")
        self._update_ema()
        new = self.student_labeled_loss(self.reward_batch(batch), masks)
        # (no student step, no feedback: the lookahead describes a step that was not taken)
        use = self.cfg.feedback != "none" and stepped
        loss_mpl = look.meta_loss if use else torch.zeros_like(look.meta_loss.detach())
        return loss_mpl, {"student/loss": look.student_loss.detach(), "mpl/h": old - new}

    def _finetune_step(self, batch):
        """After MPL: the student alone on labeled batches (the paper's finetuning), through the same update as
        every other step (grad scaler, clipping, its own optimizer and lr schedule). As kekmodel/MPL-pytorch does
        it where asked: from the EMA student (``finetune.from_ema``), without dropout (``finetune.dropout``)."""
        finetune = self.cfg.finetune
        if not self.finetune_started:
            self.finetune_started = True
            if finetune.from_ema:
                self.student.load_state_dict(self.ema.module.state_dict())
        with dropout_off(self.student, not finetune.dropout):
            loss = F.cross_entropy(self.net("student")(batch.x_l), batch.y_l,
                                   label_smoothing=finetune.label_smoothing)
        self.update("finetune", loss)
        self._update_ema()
        return {"student/loss_finetune": loss.detach()}

    # -- pieces, named as in docs/design.md section 2 --------------------------------------------------------

    def pseudo_labels(self, logits: torch.Tensor) -> torch.Tensor:
        """Hard labels (argmax, or sampled from the teacher), or the teacher's probabilities (soft)."""
        if self.cfg.pseudo_label == "sample":
            return torch.distributions.Categorical(logits=logits).sample()
        if self.cfg.pseudo_label == "soft":
            return torch.softmax(logits.float(), dim=-1)
        return logits.argmax(dim=-1)

    @staticmethod
    def dropout_seed() -> int:
        """A seed for the dropout masks that ``old`` and ``new`` share (drawn from the global RNG, which moves on,
        so the student's training forward draws masks of its own)."""
        return int(torch.randint(2**62, ()))

    @torch.no_grad()
    def student_labeled_loss(self, batch, dropout_seed: int) -> torch.Tensor:
        """CE(S(x_l), y_l) as the student trains (train mode, dropout masks from ``dropout_seed``), in float32 even
        under autocast (late in a cosine schedule h is ~1e-4, below bf16's resolution of a loss ~1), leaving the
        batch-norm running statistics and the global RNG as they were."""
        device = batch.x_l.device
        with seeded(device, dropout_seed), torch.autocast(device.type, enabled=False):
            with frozen_batchnorm_stats(self.student):
                return F.cross_entropy(self.student(batch.x_l), batch.y_l)

    def feedback(self, old: torch.Tensor, new: torch.Tensor, stepped: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h, coefficient)``: h = old - new, logged whatever the setting; the coefficient of the teacher's MPL
        term is h (or new - old, the official code's sign) minus a moving-average baseline if set, or 0 for
        ``feedback=none`` (the control: the teacher learns from labels and UDA alone) and when the student's step
        was dropped (``stepped`` False: fp16 overflow, ``skip_nonfinite``), which also leaves the baseline as it
        was: h is then 0 or not finite and says nothing about the pseudo labels."""
        h = old - new
        if self.cfg.feedback == "none" or not stepped:
            return h, torch.zeros_like(h)
        signed = h if self.cfg.feedback == "old_minus_new" else -h
        if self.cfg.baseline_decay is not None:
            self.baseline.lerp_(signed, 1.0 - self.cfg.baseline_decay)
            signed = signed - self.baseline
        return h, signed

    def reward_batch(self, batch) -> Batch:
        """The labeled data the student's loss before and after its step is measured on (the teacher's reward):
        the step's labeled batch, or (``feedback_batch=validation``, the paper's first version) the held-out
        validation points the run attached as ``validation_batch``."""
        if self.cfg.feedback_batch == "labeled":
            return batch
        if self.validation_batch is None:
            raise RuntimeError("method.feedback_batch=validation: no validation batch was attached")
        return self.validation_batch

    def lookahead(self, batch, t_logits_us, dropout_seed: int | None = None) -> Lookahead:
        """Equation (8): L_l(theta_S') with theta_S' = theta_S - eta * grad L_u(theta_S, softmax(T(x_us))),
        differentiable in T; theta_S' is the student's next weights when its optimizer is plain SGD (what
        mpl_config.check_exact allows)."""
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
        reward = self.reward_batch(batch)
        device = reward.x_l.device
        with seeded(device, dropout_seed if dropout_seed is not None else self.dropout_seed()):
            with frozen_batchnorm_stats(self.student):
                s_logits_l = functional_call(self.student, ({**stepped, **buffers}), (reward.x_l,))
        meta_loss = F.cross_entropy(s_logits_l, reward.y_l)
        return Lookahead(meta_loss, [g.detach() for g in grads], loss_student,
                         {k: v.detach() for k, v in stepped.items()})

    def _update_ema(self) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.student)

    # -- what the loop reads ---------------------------------------------------------------------------------

    def lrs(self) -> dict[str, float]:
        """The lr each model trains with now: the student's is the finetuning lr once finetuning has begun."""
        student = "finetune" if self.finetuning else "student"
        return {"teacher": self.lr("teacher"), "student": self.lr(student)}

    def eval_models(self):
        models = {"teacher": self.teacher, "student": self.student}
        if self.ema is not None:
            models["student_ema"] = self.ema.module
        return models

    def state_dict(self):
        state = super().state_dict()
        state["baseline"] = self.baseline.clone()
        state["finetune_started"] = self.finetune_started
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.baseline.copy_(state["baseline"])
        self.finetune_started = state.get("finetune_started", False)
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])


"""The MPL method's schema and the checks of its keys, registered here so that they load without torch (the method
itself: :mod:`mpl_runner.methods.mpl`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from mpl_runner.core.checks import NEVER_WARM, at_least, fraction, one_of, positive, warmup_warning
from mpl_runner.core.errors import ConfigError
from mpl_runner.methods import uda
from mpl_runner.methods.optim import OptimizerConfig, check_optimizer
from mpl_runner.core.registry import register

VARIANTS = ("first_order", "exact")
FEEDBACK = ("old_minus_new", "new_minus_old", "none")
PSEUDO_LABELS = ("argmax", "sample", "soft")
FEEDBACK_BATCHES = ("labeled", "validation")


@dataclass
class FinetuneConfig(OptimizerConfig):
    """The last ``steps`` of an MPL run: the student alone on labeled batches, with an optimizer of its own (the
    keys of the optim group but grad_clip, which ``optim.grad_clip`` sets for every update)."""

    steps: int = MISSING
    batch_size: int = MISSING  # labeled examples a step
    label_smoothing: float = MISSING
    dropout: bool = MISSING  # false: the student's dropout layers are off while it finetunes
    from_ema: bool = MISSING  # true: finetuning starts from the EMA student (method.ema_decay must be set)


@dataclass
class MPLConfig:
    name: str = MISSING
    # first_order: hard pseudo labels and h = old - new (docs/design.md section 2);
    # exact: soft pseudo labels, the teacher differentiates through one student SGD step.
    variant: str = MISSING
    # The teacher's MPL coefficient: old_minus_new (the sign the Taylor expansion gives), new_minus_old (the
    # official code's), or none (the control: h is computed and logged, the teacher gets no MPL term).
    feedback: str = MISSING
    pseudo_label: str = MISSING  # argmax | sample (first_order); soft (exact)
    # where old and new (the teacher's reward) are measured: the step's labeled batch, or the whole validation
    # split (the paper's first version; val/acc is then no longer held out of training)
    feedback_batch: str = MISSING
    teacher_labeled_weight: float = MISSING  # weight of the teacher's labeled loss; 0: feedback (and UDA) alone
    baseline_decay: Optional[float] = MISSING  # moving-average baseline for h, e.g. 0.99; None: off
    label_smoothing: float = MISSING
    uda: uda.UDALossConfig = field(default_factory=uda.UDALossConfig)
    student_lr: Optional[float] = MISSING  # None: same as optim.lr
    student_warmup_steps: Optional[int] = MISSING  # None: same as optim.warmup_steps
    student_wait_steps: int = MISSING  # the student starts learning (and its lr schedule starts) after this many steps
    ema_decay: Optional[float] = MISSING  # EMA of the student, evaluated as "student_ema"; None: off
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


def check(cfg) -> None:
    method = cfg.method
    uda.check(cfg)
    one_of(cfg, "method.variant", VARIANTS)
    one_of(cfg, "method.feedback", FEEDBACK)
    one_of(cfg, "method.pseudo_label", PSEUDO_LABELS)
    one_of(cfg, "method.feedback_batch", FEEDBACK_BATCHES)
    at_least(cfg, "method.teacher_labeled_weight", 0)
    if method.feedback_batch == "validation" and cfg.dataset.get("num_val", 1) == 0:
        raise ConfigError("method.feedback_batch", "validation", "labeled with dataset.num_val=0 (no validation "
                          "split to measure the reward on)")
    fraction(cfg, "method.baseline_decay", optional=True)
    positive(cfg, "method.student_lr", optional=True)
    if method.student_warmup_steps is not None:
        at_least(cfg, "method.student_warmup_steps", 0)
    fraction(cfg, "method.ema_decay", optional=True)
    check_finetune(cfg)
    mpl_steps = cfg.trainer.steps - method.finetune.steps
    if not 0 <= method.student_wait_steps < mpl_steps:
        raise ConfigError(
            "method.student_wait_steps", method.student_wait_steps,
            f"0 to {mpl_steps - 1} (trainer.steps - method.finetune.steps - 1)",
        )
    if method.variant == "exact":
        check_exact(cfg)
    elif method.pseudo_label == "soft" and method.feedback != "none":
        # (a first-order teacher term needs a hard label: CE(stop_grad(softmax(z)), z), what the official code
        # uses with soft labels, has gradient 0; with feedback=none, soft labels are what that code computes)
        raise ConfigError("method.pseudo_label", "soft", "argmax or sample with method.variant=first_order, "
                          "unless method.feedback=none")


def check_finetune(cfg) -> None:
    finetune = cfg.method.finetune
    if not 0 <= finetune.steps < cfg.trainer.steps:
        raise ConfigError("method.finetune.steps", finetune.steps, f"0 to {cfg.trainer.steps - 1}")
    positive(cfg, "method.finetune.batch_size")
    if finetune.steps and finetune.batch_size > cfg.dataset.num_labeled:
        raise ConfigError("method.finetune.batch_size", finetune.batch_size,
                          f"1 to {cfg.dataset.num_labeled} (dataset.num_labeled: a batch is drawn from them)")
    check_optimizer(cfg, "method.finetune")
    fraction(cfg, "method.finetune.label_smoothing")
    if finetune.steps and finetune.from_ema and cfg.method.ema_decay is None:
        raise ConfigError("method.finetune.from_ema", True, "false with method.ema_decay=null (no EMA student)")


def check_exact(cfg) -> None:
    """The exact variant differentiates through the student's step: that lookahead must be the step the student
    really takes (plain SGD), and options it has no use for are refused rather than ignored."""
    method, optim = cfg.method, cfg.optim
    why = "with method.variant=exact (its lookahead theta - lr * grad is the student's real step only then)"
    if optim.name != "sgd":
        raise ConfigError("optim.name", optim.name, f"sgd {why}")
    if optim.momentum != 0:
        raise ConfigError("optim.momentum", optim.momentum, f"0 {why}")
    if optim.weight_decay != 0:
        raise ConfigError("optim.weight_decay", optim.weight_decay, f"0 {why}")
    if optim.grad_clip is not None:
        raise ConfigError("optim.grad_clip", optim.grad_clip, f"null {why}")
    if method.pseudo_label != "soft":
        raise ConfigError("method.pseudo_label", method.pseudo_label, "soft with method.variant=exact (the teacher "
                          "differentiates through the student's step on its soft labels)")
    if method.label_smoothing != 0:
        raise ConfigError("method.label_smoothing", method.label_smoothing, "0 with method.variant=exact")
    if method.feedback == "new_minus_old":
        raise ConfigError("method.feedback", method.feedback, "old_minus_new or none with method.variant=exact")
    if cfg.trainer.amp in ("fp16", "auto"):
        raise ConfigError("trainer.amp", cfg.trainer.amp, "none or bf16 with method.variant=exact (no grad scaler)")


def batch_sizes(cfg) -> dict[str, int]:
    """The global batches of finetuning, which torchrun ranks split evenly."""
    return {"method.finetune.batch_size": cfg.method.finetune.batch_size} if cfg.method.finetune.steps else {}


def check_distributed(cfg) -> None:
    if cfg.method.variant == "exact":
        raise ConfigError("method.variant", "exact", "first_order under torchrun (exact runs on one process)")


def lr_warnings(cfg) -> list[str]:
    """Warm-ups that outlast their schedules: the teacher's over the MPL steps (trainer.steps less finetuning), the
    student's over those less ``student_wait_steps``, finetuning's over its own steps."""
    method = cfg.method
    steps = cfg.trainer.steps - method.finetune.steps
    spans = "trainer.steps - method.finetune.steps" if method.finetune.steps else "trainer.steps"
    teacher = warmup_warning(cfg, steps, spans)
    found = [teacher] if teacher else []
    student_steps = steps - method.student_wait_steps
    own = method.student_warmup_steps is not None
    warmup = method.student_warmup_steps if own else cfg.optim.warmup_steps
    if warmup >= student_steps and (own or teacher is None):
        setting = (f"method.student_warmup_steps={warmup}" if own else
                   f"optim.warmup_steps={warmup} (the student's too: method.student_warmup_steps=null)")
        found.append(f"{setting} >= the student's {student_steps} steps ({spans} - method.student_wait_steps): "
                     f"{NEVER_WARM}")
    finetune = method.finetune
    if finetune.steps and finetune.warmup_steps >= finetune.steps:
        found.append(f"method.finetune.warmup_steps={finetune.warmup_steps} >= method.finetune.steps="
                     f"{finetune.steps}: {NEVER_WARM}")
    return found


def build(cfg, optim_cfg, total_steps: int, make_model):
    from mpl_runner.methods.mpl import MPL

    return MPL(cfg, optim_cfg, total_steps, make_model)


register("method", "mpl", MPLConfig, build, check=check, batch_sizes=batch_sizes, trains_student=True,
         check_distributed=check_distributed, lr_warnings=lr_warnings)

"""The MPL update checked against autograd and against what it is meant to do (docs/design.md section 2: settle the
traps with tests, not beliefs). Configs are composed from conf/ as a user gets them."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mpl_runner.data import Batch
from mpl_runner.methods.mpl import MPL, frozen_batchnorm_stats, seeded
from mpl_runner.methods.uda import UDA
from mpl_runner.models.mlp import mlp as build_mlp
from mpl_runner.gates.validate import validate

#: plain SGD (the first-order h is eta * grad . grad for that step), no UDA: the MPL term alone
PLAIN = ["method.uda.weight=0", "optim.momentum=0", "optim.nesterov=false"]
CPU = torch.device("cpu")


def mlp(dropout: float = 0.0):
    return lambda role: build_mlp(2, 3, [16, 16], "tanh", dropout=dropout).double()


def bn_dropout_net():
    """A student with batch norm and dropout, the two things that can make h measure something else."""
    return lambda role: nn.Sequential(nn.Linear(2, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Dropout(0.3),
                                 nn.Linear(16, 3)).double()


def make_mpl(make_cfg, *overrides: str, model=None, steps: int = 10) -> MPL:
    cfg = make_cfg("method=mpl", "device=cpu", *PLAIN, f"trainer.steps={steps}", *overrides)
    validate(cfg)
    torch.manual_seed(0)
    return MPL(cfg.method, cfg.optim, cfg.trainer.steps, model or mlp())


def make_batch(seed: int = 1, classes: int = 3) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x_u = torch.randn(64, 2, generator=g, dtype=torch.float64)
    return Batch(
        x_l=torch.randn(12, 2, generator=g, dtype=torch.float64),
        y_l=torch.randint(classes, (12,), generator=g),
        x_uw=x_u,
        x_us=x_u + 0.1 * torch.randn(64, 2, generator=g, dtype=torch.float64),
    )


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- h is the student's change in labeled loss, and the Taylor expansion says what it measures ---------------


def taylor_prediction(method: MPL, batch: Batch, t_logits_us: torch.Tensor) -> torch.Tensor:
    """eta * grad L_l . grad L_u at the student's weights, with the dropout masks and batch statistics the step
    will use: L_u's from the student's training forward, L_l's from the seed that old and new share."""
    student, params = method.student, list(method.student.parameters())
    pseudo = t_logits_us.argmax(dim=1)
    state = torch.get_rng_state()
    seed = method.dropout_seed()  # what _first_order_feedback draws first
    g_u = torch.autograd.grad(F.cross_entropy(student(batch.x_us), pseudo), params)
    with seeded(CPU, seed), frozen_batchnorm_stats(student):
        g_l = torch.autograd.grad(F.cross_entropy(student(batch.x_l), batch.y_l), params)
    torch.set_rng_state(state)  # the step draws the same numbers again
    return method.lr("student") * sum((a * b).sum() for a, b in zip(g_l, g_u))


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("net", ["mlp", "bn_dropout"])
def test_h_matches_the_taylor_inner_product(make_cfg, seed, net):
    method = make_mpl(make_cfg, "optim.lr=1e-3", model=mlp() if net == "mlp" else bn_dropout_net())
    batch = make_batch(seed)
    with torch.no_grad():
        t_logits_us = method.teacher(batch.x_us)
    predicted = taylor_prediction(method, batch, t_logits_us)
    h = method._first_order_feedback(batch, t_logits_us)[1]["mpl/h"]
    assert abs(predicted) > 1e-7  # the check below means something
    assert torch.sign(h) == torch.sign(predicted)
    assert float(h) == pytest.approx(float(predicted), rel=0.03)


def test_old_and_new_share_masks_with_each_other_and_not_with_the_students_training_forward(make_cfg):
    method = make_mpl(make_cfg, "optim.lr=0.1", model=mlp(dropout=0.5))
    dropout = next(m for m in method.student.modules() if isinstance(m, nn.Dropout))
    masks = []
    dropout.register_forward_hook(lambda _m, inputs, output: masks.append((output == 0) & (inputs[0] != 0)))
    batch = make_batch()
    method.train_step(batch, step=0)
    old, training, new = masks  # old on x_l, the student's step on x_us, new on x_l
    assert torch.equal(old, new)
    assert not torch.equal(old, training[: len(old)])  # (rows of one draw would coincide)
    method.train_step(batch, step=1)
    assert not torch.equal(masks[3], old)  # each step draws new masks


def test_old_and_new_leave_batch_norm_statistics_to_the_students_training_forward(make_cfg):
    """The labeled forwards of old and new run in train mode but must not move BN's running statistics: after a
    step, they are what one training forward on x_us leaves (a forward through the training wrapper or without
    freezing would move them three times)."""
    method = make_mpl(make_cfg, "optim.lr=1e-12", model=bn_dropout_net())
    batch = make_batch()
    expected = copy.deepcopy(method.student)
    with torch.no_grad():
        expected(batch.x_us)
    method.train_step(batch, step=0)
    bn, bn_expected = method.student[1], expected[1]
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.allclose(getattr(bn, name).double(), getattr(bn_expected, name).double(), atol=1e-12), name


def test_h_is_computed_in_float32_under_bf16_autocast(make_cfg):
    """Late in a cosine schedule h is ~1e-4, below bf16's resolution of a loss near 1: old and new must not be
    bf16 numbers. Under CPU bf16 autocast they equal the float32 values for the same weights and batch."""
    torch.manual_seed(0)
    method = make_mpl(make_cfg, "optim.lr=1e-3",
                      model=lambda role: nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 3)))
    batch = make_batch()
    batch = Batch(*(t.float() if t.is_floating_point() else t for t in (batch.x_l, batch.y_l, batch.x_uw, batch.x_us)))
    fp32 = method.student_labeled_loss(batch, dropout_seed=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = method.student_labeled_loss(batch, dropout_seed=5)
        bf16_forward = F.cross_entropy(method.student(batch.x_l), batch.y_l).detach()
    assert low.dtype == torch.float32 and torch.equal(low, fp32)
    assert float(bf16_forward) != float(fp32)  # autocast would have changed it
    with torch.autocast("cpu", dtype=torch.bfloat16):
        stats = method.train_step(batch, step=0)
    after = method.student_labeled_loss(batch, dropout_seed=5)
    assert stats["mpl/h"].dtype == torch.float32
    assert float(stats["mpl/h"]) == pytest.approx(float(fp32 - after), abs=1e-6)


# --- what the teacher does with h ---------------------------------------------------------------------------


def test_mpl_term_gives_the_teacher_a_nonzero_gradient(make_cfg):
    """Unlike the official code's CE(stop_grad(softmax(z)), z), whose gradient in z is softmax(z) - softmax(z) = 0
    (google-research #534)."""
    method, batch = make_mpl(make_cfg, "optim.lr=0.5"), make_batch()
    t_logits_us = method.teacher(batch.x_us)
    loss_mpl, stats = method._first_order_feedback(batch, t_logits_us)
    assert float(stats["mpl/h"]) != 0
    grads = torch.autograd.grad(loss_mpl, list(method.teacher.parameters()))
    assert sum(float(g.norm()) for g in grads) > 1e-6


@pytest.mark.parametrize("agree", [True, False])
def test_a_teacher_step_on_the_mpl_term_follows_the_sign_of_h(make_cfg, agree):
    """When the pseudo labels helped the student (h > 0), the teacher's MPL step makes them more likely; when they
    hurt (h < 0), less likely. The labeled batch is the unlabeled one, labeled as the teacher labels it (agree) or
    with the other class: so the student's step on the pseudo labels lowers (raises) its labeled loss."""
    method = make_mpl(make_cfg, "optim.lr=0.5", model=lambda role: build_mlp(2, 2, [16], "tanh").double())
    x = make_batch().x_us[:32]
    with torch.no_grad():
        pseudo = method.teacher(x).argmax(dim=1)
    batch = Batch(x_l=x, y_l=pseudo if agree else 1 - pseudo, x_uw=x, x_us=x)

    def log_prob_of_pseudo():
        with torch.no_grad():
            return F.log_softmax(method.teacher(x), dim=1).gather(1, pseudo[:, None]).mean()

    before = log_prob_of_pseudo()
    loss_mpl, stats = method._first_order_feedback(batch, method.teacher(x))
    assert (float(stats["mpl/h"]) > 0) == agree
    method.update("teacher", loss_mpl)  # the MPL term alone
    assert (log_prob_of_pseudo() > before) == agree


def test_the_official_sign_pushes_the_teacher_the_other_way(make_cfg):
    batch = make_batch()
    ours, official = make_mpl(make_cfg, "optim.lr=0.1"), make_mpl(make_cfg, "optim.lr=0.1",
                                                                  "method.feedback=new_minus_old")
    grads = {}
    for name, method in (("ours", ours), ("official", official)):
        loss_mpl, _ = method._first_order_feedback(batch, method.teacher(batch.x_us))
        grads[name] = torch.autograd.grad(loss_mpl, list(method.teacher.parameters()))
    assert all(torch.allclose(a, -b) for a, b in zip(grads["ours"], grads["official"]))
    assert any(float(g.abs().max()) > 1e-8 for g in grads["ours"])


def test_feedback_none_trains_the_teacher_as_uda_does_and_still_logs_h(make_cfg):
    """The control: the teacher learns from labels (and UDA) alone; the student learns its pseudo labels; h is
    measured for monitoring only."""
    overrides = ["optim.lr=0.3", "method.uda.weight=1.0"]
    control = make_mpl(make_cfg, *overrides, "method.feedback=none")
    cfg = make_cfg("method=uda", "device=cpu", *PLAIN, *overrides)
    torch.manual_seed(0)
    uda = UDA(cfg.method, cfg.optim, 10, mlp())
    student_before = weights(control.student)
    for step in range(3):
        stats = control.train_step(make_batch(step), step)
        uda.train_step(make_batch(step), step)
        assert float(stats["mpl/h"]) != 0 and float(stats["mpl/coefficient"]) == 0
    assert same(weights(control.teacher), weights(uda.teacher))
    assert not same(weights(control.student), student_before)


def test_moving_average_baseline_centres_the_coefficient(make_cfg):
    method = make_mpl(make_cfg, "optim.lr=1e-2", "method.baseline_decay=0.9")
    coefficients, hs = [], []
    for step in range(5):
        stats = method.train_step(make_batch(1), step)
        coefficients.append(float(stats["mpl/coefficient"]))
        hs.append(float(stats["mpl/h"]))
    baseline = 0.0
    for h, coefficient in zip(hs, coefficients):
        baseline = 0.9 * baseline + 0.1 * h
        assert coefficient == pytest.approx(h - baseline, rel=1e-6, abs=1e-12)


# --- the exact variant --------------------------------------------------------------------------------------


EXACT = ["method.variant=exact", "method.pseudo_label=soft"]


def lookahead_then_step(method, batch):
    """The lookahead of the teacher's present labels, then the step itself from the same RNG state."""
    with torch.no_grad():
        t_logits_us = method.teacher(batch.x_us)
    state = torch.get_rng_state()
    lookahead = method.lookahead(batch, t_logits_us)
    torch.set_rng_state(state)
    method.train_step(batch, step=0)
    return lookahead


def test_exact_lookahead_is_the_step_the_student_takes(make_cfg):
    method, batch = make_mpl(make_cfg, *EXACT, "optim.lr=0.5"), make_batch()
    lookahead = lookahead_then_step(method, batch)
    for name, param in method.student.named_parameters():
        assert torch.allclose(param, lookahead.weights[name], atol=1e-6, rtol=0), name


@pytest.mark.parametrize("override, key", [
    ("optim.momentum=0.9", "optim.momentum"), ("optim.weight_decay=5e-4", "optim.weight_decay"),
    ("optim.name=adam", "optim.name"), ("optim.grad_clip=1.0", "optim.grad_clip"),
    ("method.pseudo_label=sample", "method.pseudo_label"), ("method.label_smoothing=0.1", "method.label_smoothing"),
])
def test_exact_refuses_what_would_make_its_lookahead_wrong_or_be_ignored(make_cfg, override, key):
    from mpl_runner.core.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        validate(make_cfg("method=mpl", *PLAIN, *EXACT, override))
    assert err.value.key == key


def test_exact_teacher_gradient_matches_finite_differences(make_cfg):
    method, batch = make_mpl(make_cfg, *EXACT, "optim.lr=0.5"), make_batch()
    teacher = method.teacher

    def meta_loss():
        return method.lookahead(batch, teacher(batch.x_us), dropout_seed=0).meta_loss

    weight = teacher[1].weight  # first linear layer (after Flatten), 16 x 2
    (grad,) = torch.autograd.grad(meta_loss(), weight)
    eps = 1e-6
    for idx in [(0, 0), (3, 1), (7, 0), (15, 1)]:
        original = weight.data[idx].item()
        weight.data[idx] = original + eps
        plus = float(meta_loss().detach())
        weight.data[idx] = original - eps
        minus = float(meta_loss().detach())
        weight.data[idx] = original
        numeric = (plus - minus) / (2 * eps)
        assert float(grad[idx]) == pytest.approx(numeric, rel=1e-5, abs=1e-9)
    assert float(grad.abs().max()) > 1e-6


def test_exact_meta_loss_reaches_the_teacher_alone(make_cfg):
    method, batch = make_mpl(make_cfg, *EXACT, "optim.lr=0.5"), make_batch()
    lookahead = method.lookahead(batch, method.teacher(batch.x_us))
    lookahead.meta_loss.backward()
    assert all(p.grad is None for p in method.student.parameters())
    assert all(p.grad is not None for p in method.teacher.parameters())


# --- schedules, EMA, finetuning -----------------------------------------------------------------------------


def test_student_waits_then_warms_up_and_decays_on_its_own_schedule(make_cfg):
    wait, warmup, steps = 3, 4, 20
    method = make_mpl(make_cfg, "optim.lr=0.2", "optim.schedule=cosine", "optim.warmup_steps=2",
                      f"method.student_wait_steps={wait}", f"method.student_warmup_steps={warmup}",
                      "method.student_lr=0.1", steps=steps)
    used, teacher_used = [], []
    start = weights(method.student)
    for step in range(steps):
        used.append(method.lr("student"))
        teacher_used.append(method.lr("teacher"))
        method.train_step(make_batch(step), step)
        if step < wait:
            assert same(weights(method.student), start)  # the student waits
    student_steps = steps - wait
    expected = [0.1 * (k + 1) / warmup if k < warmup else
                0.1 * 0.5 * (1 + math.cos(math.pi * (k - warmup) / (student_steps - warmup)))
                for k in range(student_steps)]
    assert used[wait:] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert teacher_used[:2] == pytest.approx([0.1, 0.2]) and teacher_used[-1] < 0.01  # its own warm-up, cosine


def test_ema_after_k_updates_follows_its_formula(make_cfg):
    decay = 0.9
    method = make_mpl(make_cfg, "optim.lr=0.1", f"method.ema_decay={decay}")
    ema = None
    for step in range(4):
        method.train_step(make_batch(step), step)
        now = weights(method.student)
        ema = now if ema is None else {k: decay * ema[k] + (1 - decay) * now[k] for k in now}
    averaged = weights(method.ema.module)
    assert all(torch.allclose(averaged[k], ema[k], rtol=0, atol=1e-12) for k in ema)


def test_finetuning_trains_the_student_alone_with_its_own_optimizer_and_schedule(make_cfg):
    method = make_mpl(make_cfg, "optim.lr=0.1", "method.finetune.steps=2", "method.finetune.lr=0.01",
                      "method.finetune.batch_size=12", "method.finetune.momentum=0", "method.finetune.weight_decay=0.5", "optim.grad_clip=1e-3")
    assert [(p.start, p.views) for p in method.phases()] == [(0, "ssl"), (8, "labeled")]
    teacher, student = weights(method.teacher), weights(method.student)
    batch = make_batch()
    stats = method.train_step(Batch(batch.x_l, batch.y_l), step=8)  # labeled views only
    assert set(stats) == {"student/loss_finetune"}
    assert same(weights(method.teacher), teacher)
    assert method.lrs()["student"] == 0.01  # what TensorBoard's lr/student shows during finetuning
    # plain SGD with weight decay 0.5 and clipping to norm 1e-3: each weight moves by lr * (clipped grad + 0.5 w)
    moved = {k: student[k] - v for k, v in weights(method.student).items()}
    decay_part = {k: 0.01 * 0.5 * student[k] for k in student}
    clipped = torch.cat([(moved[k] - decay_part[k]).flatten() for k in moved]).norm() / 0.01
    assert clipped == pytest.approx(1e-3, rel=1e-5)  # (clip_grad_norm_ divides by norm + 1e-6)


def test_finetuning_goes_through_the_grad_scaler_clipping_and_schedule(make_cfg):
    """With fp16's grad scaler, a finetuning step unscales before it clips and steps at its scheduled lr, and a
    non-finite gradient is skipped (weights kept, scale lowered). Mutant caught: a finetuning step that bypasses
    the scaler (the NaN reaches the weights), scales without unscaling (a step 2**16 too large), skips the
    clipping or the schedule (a dict-keys check passes all of them)."""
    method = make_mpl(make_cfg, *FINETUNE, "method.finetune.lr=0.01", "method.finetune.schedule=cosine",
                      "optim.grad_clip=1e-3", steps=12)  # finetuning: the last 2 of 12 steps
    method.enable_grad_scaling(CPU)
    assert set(method.scalers) == {"teacher", "student", "finetune"}
    batch = make_batch()
    labeled = Batch(batch.x_l, batch.y_l)
    before = weights(method.student)
    scale = method.scalers["finetune"].get_scale()
    weight = next(method.student.parameters())
    hook = weight.register_hook(lambda g: torch.full_like(g, float("inf")))
    method.train_step(labeled, step=10)
    hook.remove()
    assert same(weights(method.student), before) and method.scalers["finetune"].get_scale() < scale
    assert method.lrs()["student"] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi / 2)))  # the schedule moved
    lr = method.lrs()["student"]
    method.train_step(labeled, step=11)
    moved = torch.cat([(before[k] - v).flatten() for k, v in weights(method.student).items()])
    # plain SGD on the clipped, unscaled gradient: each step moves the weights by lr * (a norm of 1e-3)
    assert float(moved.norm()) == pytest.approx(lr * 1e-3, rel=1e-4)


# --- no feedback without a student step ---------------------------------------------------------------------


@pytest.mark.parametrize("how", ["skip_nonfinite", "fp16_scaler"])
@pytest.mark.parametrize("variant", ["first_order", "exact"])
def test_a_dropped_student_step_gives_the_teacher_no_feedback_and_keeps_the_baseline(make_cfg, how, variant):
    """A student step dropped for a non-finite gradient (skip_nonfinite, or the fp16 grad scaler's own skip)
    gives coefficient 0 and leaves the baseline as it was. Mutants caught: a feedback() that ignores the dropped
    step (coefficient -baseline, baseline moved toward h), and an update() that does not report the drop."""
    if variant == "exact" and how == "fp16_scaler":
        pytest.skip("the exact variant refuses fp16 (no grad scaler)")
    overrides = ["optim.lr=0.1", "method.baseline_decay=0.9"] + (EXACT if variant == "exact" else [])
    method, batch = make_mpl(make_cfg, *overrides), make_batch()
    if how == "skip_nonfinite":
        method.skip_nonfinite = True
    else:
        method.enable_grad_scaling(CPU)
    method.baseline.fill_(0.5)  # a baseline a mutant would hand the teacher as -0.5
    student = weights(method.student)
    # a non-finite gradient in the student's step only (the teacher's own gradients stay finite)
    weight = next(method.student.parameters())
    hook = weight.register_hook(lambda g: torch.full_like(g, float("nan")))
    lookahead = method.lookahead
    if variant == "exact":  # (its student gradient comes from the lookahead, not from a backward)
        def nan_lookahead(*args, **kwargs):
            look = lookahead(*args, **kwargs)
            return look._replace(student_grads=[torch.full_like(g, float("nan")) for g in look.student_grads])
        method.lookahead = nan_lookahead
    teacher_before = weights(method.teacher)
    stats = method.train_step(batch, step=0)
    hook.remove()
    method.lookahead = lookahead
    assert same(weights(method.student), student)  # the step was dropped ...
    assert float(stats["teacher/loss_mpl"]) == 0.0  # ... and the teacher got no MPL term
    if variant == "first_order":
        assert float(stats["mpl/coefficient"]) == 0.0 and float(method.baseline) == 0.5
    if how == "skip_nonfinite":
        assert method.skipped["student"] == 1
    assert not same(weights(method.teacher), teacher_before)  # the teacher still learns from its labels
    # the same step with a finite gradient does give feedback (the test can fail)
    stats = method.train_step(batch, step=1)
    assert float(stats["teacher/loss_mpl"]) != 0.0
    if variant == "first_order":
        assert float(stats["mpl/coefficient"]) != 0.0 and float(method.baseline) != 0.5


# --- the toy's untried settings: teacher_labeled_weight, feedback_batch ------------------------------------------


def test_teacher_labeled_weight_zero_leaves_the_teacher_the_mpl_term_alone(make_cfg):
    """With no labeled loss (and no UDA) the teacher's plain-SGD step is -lr * coefficient * grad CE(T(x_u), y_hat):
    the paper's equation before its auxiliary losses. Mutant caught: a weight that is read but not applied (the
    labeled loss still in the step), or applied to the MPL term instead."""
    method, batch = make_mpl(make_cfg, "optim.lr=0.5", "method.teacher_labeled_weight=0"), make_batch()
    teacher = copy.deepcopy(method.teacher)
    logits = teacher(batch.x_us)
    stats = method.train_step(batch, step=0)
    coefficient = float(stats["mpl/coefficient"])
    assert coefficient != 0
    grads = torch.autograd.grad(coefficient * F.cross_entropy(logits, logits.argmax(1)), list(teacher.parameters()))
    for (name, after), before, grad in zip(method.teacher.named_parameters(), teacher.parameters(), grads):
        assert torch.allclose(after, before - 0.5 * grad, rtol=0, atol=1e-12), name
    assert float(stats["teacher/loss"]) == pytest.approx(float(stats["teacher/loss_mpl"]), abs=1e-12)
    assert float(stats["teacher/loss_sup"]) > 0.5  # logged unweighted: the labels are there, just not learnt


def test_teacher_labeled_weight_zero_with_the_control_leaves_nothing_to_learn(make_cfg):
    method = make_mpl(make_cfg, "optim.lr=0.5", "method.teacher_labeled_weight=0", "method.feedback=none")
    teacher = weights(method.teacher)
    method.train_step(make_batch(), step=0)
    assert same(weights(method.teacher), teacher)
    labeled = make_mpl(make_cfg, "optim.lr=0.5", "method.feedback=none")  # weight 1: the labels move it
    labeled.train_step(make_batch(), step=0)
    assert not same(weights(labeled.teacher), teacher)


def validation_points(seed: int = 9) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(40, 2, generator=g, dtype=torch.float64), torch.randint(3, (40,), generator=g))


def test_feedback_batch_validation_measures_old_and_new_on_the_validation_batch(make_cfg):
    """h is the student's loss on the validation batch before minus after its step, not on the labeled batch.
    Mutant caught: a reward that reads the labeled batch whatever the key says."""
    batch, val = make_batch(), validation_points()
    h = {}
    for where in ("labeled", "validation"):
        method = make_mpl(make_cfg, "optim.lr=0.5", f"method.feedback_batch={where}")
        method.validation_batch = val
        student = copy.deepcopy(method.student)
        stats = method.train_step(batch, step=0)
        h[where] = float(stats["mpl/h"])
        reward = val if where == "validation" else batch
        with torch.no_grad():
            expected = (F.cross_entropy(student(reward.x_l), reward.y_l)
                        - F.cross_entropy(method.student(reward.x_l), reward.y_l))
        assert h[where] == pytest.approx(float(expected), rel=1e-9, abs=1e-15)
    assert h["labeled"] != pytest.approx(h["validation"], rel=1e-3)


def test_feedback_batch_validation_exact_meta_loss_is_the_validation_loss_after_the_step(make_cfg):
    method, batch, val = make_mpl(make_cfg, *EXACT, "optim.lr=0.5", "method.feedback_batch=validation"), \
        make_batch(), validation_points()
    method.validation_batch = val
    look = lookahead_then_step(method, batch)
    with torch.no_grad():
        after = F.cross_entropy(method.student(val.x_l), val.y_l)
    assert float(look.meta_loss.detach()) == pytest.approx(float(after), rel=1e-6)


def test_feedback_batch_validation_is_refused_without_a_validation_split(make_cfg):
    from mpl_runner.core.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        validate(make_cfg("method=mpl", "dataset=digits", "model=small_cnn", "dataset.num_val=0",
                          "method.feedback_batch=validation"))
    assert err.value.key == "method.feedback_batch"


def test_a_run_hands_the_whole_validation_split_to_the_reward(make_cfg):
    from mpl_runner.data import build_dataset
    from mpl_runner.loop.run import validation_batch

    cfg = make_cfg("method=mpl", "method.feedback_batch=validation")
    data = build_dataset(cfg.dataset, CPU)
    val = validation_batch(data, cfg)
    (x, y), = data.eval_splits["val"]
    assert torch.equal(val.x_l, x) and torch.equal(val.y_l, y) and len(y) == 2 * cfg.dataset.points_per_class


# --- finetuning as kekmodel/MPL-pytorch does it ------------------------------------------------------------------


FINETUNE = ["method.finetune.steps=2", "method.finetune.batch_size=12", "method.finetune.momentum=0"]


def test_finetuning_from_ema_starts_from_the_ema_student(make_cfg):
    """Mutant caught: from_ema ignored (finetuning starts from the raw student), or the EMA copied again on every
    finetuning step (the second step would undo the first)."""
    method = make_mpl(make_cfg, "optim.lr=0.5", "method.ema_decay=0.5", *FINETUNE, "method.finetune.from_ema=true",
                      "method.finetune.lr=0.1")
    for step in range(3):
        method.train_step(make_batch(step), step)
    ema = weights(method.ema.module)
    assert not same(weights(method.student), ema)
    batch = make_batch()
    start = copy.deepcopy(method.ema.module)
    method.train_step(Batch(batch.x_l, batch.y_l), step=8)
    grads = torch.autograd.grad(F.cross_entropy(start(batch.x_l), batch.y_l), list(start.parameters()))
    for (name, after), before, grad in zip(method.student.named_parameters(), start.parameters(), grads):
        assert torch.allclose(after, before - 0.1 * grad, rtol=0, atol=1e-12), name
    first = weights(method.student)
    method.train_step(Batch(batch.x_l, batch.y_l), step=9)
    moved = weights(method.student)
    assert not same(moved, first) and not same(moved, ema)


def test_finetuning_without_dropout_is_deterministic_and_puts_dropout_back(make_cfg):
    losses = {}
    for dropout in ("true", "false"):
        method = make_mpl(make_cfg, *FINETUNE, f"method.finetune.dropout={dropout}", model=mlp(dropout=0.5))
        batch = make_batch()
        with torch.no_grad():
            method.student.eval()
            plain = float(F.cross_entropy(method.student(batch.x_l), batch.y_l))
            method.student.train()
        losses[dropout] = float(method.train_step(Batch(batch.x_l, batch.y_l), step=8)["student/loss_finetune"])
        assert all(m.training for m in method.student.modules())
        if dropout == "false":
            assert losses[dropout] == pytest.approx(plain, rel=1e-12)
        else:
            assert losses[dropout] != pytest.approx(plain, rel=1e-6)


def test_finetuning_from_ema_needs_an_ema(make_cfg):
    from mpl_runner.core.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        validate(make_cfg("method=mpl", *PLAIN, *FINETUNE, "method.finetune.from_ema=true"))
    assert err.value.key == "method.finetune.from_ema"

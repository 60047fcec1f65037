"""The MPL update checked against autograd (DESIGN.md section 4: settle the traps with tests, not beliefs)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from mpl_runner.config import MPLConfig, OptimConfig, UDAConfig
from mpl_runner.data import Batch
from mpl_runner.methods.losses import soft_cross_entropy
from mpl_runner.methods.mpl import MPL
from mpl_runner.models.mlp import MLP


def make_mpl(lr=1e-3, **method) -> MPL:
    torch.manual_seed(0)
    cfg = OmegaConf.structured(MPLConfig(uda=UDAConfig(weight=0.0), **method))
    optim = OmegaConf.structured(OptimConfig(lr=lr, momentum=0.0, nesterov=False))
    return MPL(cfg, optim, total_steps=10, make_model=lambda: MLP(2, 3, [16, 16], "tanh").double())


def make_batch(seed=1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x_u = torch.randn(64, 2, generator=g, dtype=torch.float64)
    return Batch(
        x_l=torch.randn(12, 2, generator=g, dtype=torch.float64),
        y_l=torch.randint(3, (12,), generator=g),
        x_uw=x_u,
        x_us=x_u + 0.1 * torch.randn(64, 2, generator=g, dtype=torch.float64),
    )


def taylor_prediction(method: MPL, batch: Batch) -> torch.Tensor:
    """eta * grad L_l(theta_S) . grad L_u(theta_S), with the pseudo labels the step will use."""
    student = method.student
    params = list(student.parameters())
    pseudo = method.teacher(batch.x_us).argmax(dim=1)
    g_l = torch.autograd.grad(F.cross_entropy(student(batch.x_l), batch.y_l), params)
    g_u = torch.autograd.grad(F.cross_entropy(student(batch.x_us), pseudo), params)
    return method.lr("student") * sum((a * b).sum() for a, b in zip(g_l, g_u))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_old_minus_new_matches_the_taylor_inner_product(seed):
    method, batch = make_mpl(lr=1e-3), make_batch(seed)
    predicted = taylor_prediction(method, batch)
    h = method.train_step(batch, step=0)["mpl/h"]
    assert abs(predicted) > 1e-7  # the check below means something
    assert torch.sign(h) == torch.sign(predicted)
    assert h == pytest.approx(float(predicted), rel=0.02)


def test_official_sign_is_the_opposite():
    ours = make_mpl(lr=1e-3).train_step(make_batch(), 0)["mpl/h"]
    official = make_mpl(lr=1e-3, feedback="new_minus_old").train_step(make_batch(), 0)["mpl/h"]
    assert float(official) == pytest.approx(-float(ours), rel=1e-9)


def test_mpl_term_gives_the_teacher_a_nonzero_gradient():
    method, batch = make_mpl(lr=0.5), make_batch()
    t_logits_us = method.teacher(batch.x_us)
    loss_mpl, stats = method._first_order_feedback(batch, t_logits_us)
    assert float(stats["mpl/h"]) != 0
    grads = torch.autograd.grad(loss_mpl, list(method.teacher.parameters()))
    assert sum(float(g.norm()) for g in grads) > 1e-6


def test_the_official_codes_mpl_term_would_have_zero_gradient():
    """CE(stop_grad(softmax(z)), z) has gradient softmax(z) - softmax(z) = 0 in z: the trap we avoid."""
    z = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(soft_cross_entropy(z, torch.softmax(z, -1).detach()), z)
    assert float(grad.abs().max()) < 1e-12


@pytest.mark.parametrize("variant", ["first_order", "exact"])
def test_one_step_changes_teacher_and_student(variant):
    method = make_mpl(lr=0.1, variant=variant)
    before = {name: copy.deepcopy(m.state_dict()) for name, m in method.models.items()}
    stats = method.train_step(make_batch(), step=0)
    for name, model in method.models.items():
        changed = [not torch.equal(before[name][k], v) for k, v in model.state_dict().items()]
        assert all(changed), f"{name} kept some weights"
    assert all(torch.isfinite(v) for v in stats.values())


def test_student_waits_then_learns():
    method = make_mpl(lr=0.1, student_wait_steps=1)
    before = copy.deepcopy(method.student.state_dict())
    method.train_step(make_batch(), step=0)
    assert all(torch.equal(before[k], v) for k, v in method.student.state_dict().items())
    method.train_step(make_batch(), step=1)
    assert not all(torch.equal(before[k], v) for k, v in method.student.state_dict().items())


def test_exact_teacher_gradient_matches_finite_differences():
    method, batch = make_mpl(lr=0.5, variant="exact"), make_batch()
    teacher = method.teacher

    def meta_loss():
        return method.lookahead_labeled_loss(batch, teacher(batch.x_us))[0]

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


def test_exact_meta_loss_leaves_student_grads_alone():
    method, batch = make_mpl(lr=0.5, variant="exact"), make_batch()
    loss, student_grads, _ = method.lookahead_labeled_loss(batch, method.teacher(batch.x_us))
    loss.backward()
    assert all(p.grad is None for p in method.student.parameters())
    assert all(p.grad is not None for p in method.teacher.parameters())
    assert len(student_grads) == len(list(method.student.parameters()))


def test_moving_average_baseline_is_subtracted():
    method = make_mpl(lr=1e-2, baseline_decay=0.9)
    raw = make_mpl(lr=1e-2)
    h_raw = float(raw.train_step(make_batch(), 0)["mpl/h"])
    stats = method.train_step(make_batch(), 0)
    assert float(stats["mpl/baseline"]) == pytest.approx(0.1 * h_raw, rel=1e-9)
    assert float(stats["mpl/h"]) == pytest.approx(0.9 * h_raw, rel=1e-9)


def test_finetuning_trains_the_student_alone_on_labels():
    method = make_mpl(lr=0.1, finetune_steps=2)  # total_steps=10: steps 8 and 9 finetune
    teacher = copy.deepcopy(method.teacher.state_dict())
    student = copy.deepcopy(method.student.state_dict())
    stats = method.train_step(make_batch(), step=8)
    assert set(stats) == {"student/loss_finetune"}
    assert all(torch.equal(teacher[k], v) for k, v in method.teacher.state_dict().items())
    assert not all(torch.equal(student[k], v) for k, v in method.student.state_dict().items())


def test_old_and_new_see_the_same_dropout_masks():
    """With dropout, h must measure the student's step, not two different dropout draws: at lr 0, h is 0."""
    torch.manual_seed(0)
    cfg = OmegaConf.structured(MPLConfig(uda=UDAConfig(weight=0.0)))
    optim = OmegaConf.structured(OptimConfig(lr=1e-12, momentum=0.0, nesterov=False))
    method = MPL(cfg, optim, total_steps=10, make_model=lambda: MLP(2, 3, [64, 64], "tanh", dropout=0.5).double())
    for step in range(3):
        assert abs(float(method.train_step(make_batch(step + 1), step)["mpl/h"])) < 1e-9

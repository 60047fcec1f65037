"""The pseudo-labels baseline: its loss on pseudo labels, its threshold, and a run through the CLI."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from conftest import TINY, completed_run
from mpl_runner.data import Batch
from mpl_runner.methods import build_method
from mpl_runner.models import build_model


def method(make_cfg, *overrides: str):
    cfg = make_cfg("method=pseudo_labels", "optim.momentum=0", *overrides)
    torch.manual_seed(0)
    return build_method(cfg.method, cfg.optim, 10, lambda role: build_model(cfg.model, (2,), 2))


def batch() -> Batch:
    g = torch.Generator().manual_seed(1)
    x_u = torch.randn(16, 2, generator=g)
    return Batch(torch.randn(4, 2, generator=g), torch.tensor([0, 1, 0, 1]), x_u, x_u + 0.1)


def test_the_unlabeled_loss_is_cross_entropy_of_the_strong_view_to_the_weak_views_argmax(make_cfg):
    m, b = method(make_cfg, "method.threshold=0"), batch()
    with torch.no_grad():
        pseudo = m.model(b.x_uw).argmax(-1)
        expected = F.cross_entropy(m.model(b.x_us), pseudo)
    stats = m.train_step(b, 0)
    assert torch.isclose(stats["model/loss_pseudo"], expected) and stats["pseudo_labels/mask"] == 1


def test_below_the_threshold_it_takes_the_supervised_step(make_cfg):
    """No prediction reaches a threshold of 1: the step is the supervised one, weight for weight."""
    m, b = method(make_cfg, "method.threshold=1.0"), batch()
    supervised = method(make_cfg, "method.threshold=1.0")  # the same initial weights (same seed)
    stats = m.train_step(b, 0)
    loss = F.cross_entropy(supervised.model(b.x_l), b.y_l)
    supervised.update("model", loss)
    assert stats["pseudo_labels/mask"] == 0 and stats["model/loss_pseudo"] == 0
    assert all(torch.equal(p, q) for p, q in zip(m.model.parameters(), supervised.model.parameters()))


def test_pseudo_labels_run_through_the_cli(tmp_path):
    run_dir = completed_run(tmp_path, "method=pseudo_labels", *TINY, "device=cpu", "trainer.progress=false")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["handed_out"] == "model" and 0 <= metrics["test/acc"] <= 1

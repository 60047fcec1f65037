from __future__ import annotations

import numpy as np
import pytest
import torch

from mpl_runner.data.splits import balanced_labeled_indices
from mpl_runner.data.two_moons import build, fresh_moons, moons


def test_labeled_points_are_balanced_and_follow_the_split_seed():
    _, y = moons(1000, 0.0, seed=0)
    a = balanced_labeled_indices(y.numpy(), 12, 2, seed=0)
    assert np.bincount(y.numpy()[a]).tolist() == [6, 6] and len(set(a)) == 12
    assert a == balanced_labeled_indices(y.numpy(), 12, 2, seed=0)
    assert a != balanced_labeled_indices(y.numpy(), 12, 2, seed=1)


@pytest.mark.parametrize("points, noise, seed", [(500, 0.1, 0), (3, 0.0, 7), (64, 0.3, 12345)])
def test_the_training_points_are_scikit_learns_make_moons(points, noise, seed):
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=2 * points, noise=noise, random_state=seed)
    ours_x, ours_y = moons(points, noise, seed)
    assert torch.equal(ours_x, torch.as_tensor(x, dtype=torch.float32))
    assert torch.equal(ours_y, torch.as_tensor(y, dtype=torch.long))


def test_fresh_draw_is_new_points_of_the_same_moons():
    x, _ = moons(1000, 0.0, seed=0)
    x_new, y_new = fresh_moons(1000, 0.0, seed=1)
    assert torch.bincount(y_new).tolist() == [1000, 1000]
    assert not any(torch.isclose(x_new[:5, None], x[None]).all(-1).any(-1))
    outer, inner = x_new[y_new == 0], x_new[y_new == 1]
    assert torch.allclose(outer.norm(dim=1), torch.ones(1000), atol=1e-5)
    assert torch.allclose((inner - torch.tensor([1.0, 0.5])).norm(dim=1), torch.ones(1000), atol=1e-5)


def test_batches_hold_labeled_points_and_jittered_views(make_cfg):
    cfg = make_cfg("dataset.unlabeled_batch_size=100").dataset
    data = build(cfg, torch.device("cpu"))
    batch = next(data.train_batches(0))
    assert batch.x_l.shape == (12, 2) and batch.y_l.tolist().count(0) == 6
    assert batch.x_uw.shape == batch.x_us.shape == (100, 2)
    assert (batch.x_us - batch.x_uw).std() > 0.1  # strong view is jittered (std 0.2), weak view is not
    assert data.eval_splits.keys() == {"val", "test", "all"}
    (x_val, _), (x_test, _), (x_all, _) = (split[0] for split in data.eval_splits.values())
    assert not torch.isclose(x_val[:20, None], x_test[None]).all(-1).any()  # two different fresh draws
    assert not torch.isclose(x_val[:20, None], x_all[None]).all(-1).any()  # neither is trained on


def test_batches_from_a_later_step_and_of_one_rank_are_batches_of_the_same_stream(make_cfg):
    """What a resumed run and a torchrun rank ask for (``train_batches(start, rank, world, views)``, positionally):
    the global RNG alone decides the draws, so a batch asked from step 20 is the one step 0 gives from the same RNG
    state, and rank 1 of 2 holds every other example of it. Mutant caught: a view function taking ``start``'s
    place (it failed only on resume)."""
    data = build(make_cfg("dataset.unlabeled_batch_size=100").dataset, torch.device("cpu"))
    torch.manual_seed(3)
    first = next(data.train_batches(0, 0, 1, "ssl"))
    torch.manual_seed(3)
    later = next(data.train_batches(20, 0, 1, "ssl"))
    torch.manual_seed(3)
    share = next(data.train_batches(20, 1, 2, "ssl"))
    assert torch.equal(first.x_us, later.x_us) and torch.equal(first.x_l, later.x_l)
    assert torch.equal(share.x_us, first.x_us[1::2]) and torch.equal(share.y_l, first.y_l[1::2])
    torch.manual_seed(3)
    labeled = next(data.train_batches(20, 0, 1, "labeled"))
    assert labeled.x_uw is None and torch.equal(labeled.x_l, first.x_l)

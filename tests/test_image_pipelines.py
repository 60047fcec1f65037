"""The two input pipelines of the image data sets: the device pipeline (uint8 images on the device, batches
augmented there) and the worker pipeline give the same batches of the same images with their own labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from conftest import mpl_run
from mpl_runner.data import cifar10, image_sets
from mpl_runner.data.cifar10 import build
from mpl_runner.core.errors import ConfigError
from mpl_runner.gates.validate import validate
from test_cifar10_data import REAL_ROOT, config, full_config, write_fake_cifar10

CPU = torch.device("cpu")


def pixels(x: torch.Tensor) -> torch.Tensor:
    """Normalised float images back to 0..255."""
    mean, std = torch.tensor(cifar10.MEAN).view(3, 1, 1), torch.tensor(cifar10.STD).view(3, 1, 1)
    return ((x * std + mean) * 255).round()


@pytest.fixture
def constant_classes(tmp_path) -> Path:
    """Fake CIFAR-10 whose every image is one grey level, 20 * its class: a flip or crop leaves it as it is."""
    written = write_fake_cifar10(tmp_path)
    for name, entry in written.items():
        entry[b"data"] = np.repeat(np.asarray(entry[b"labels"], dtype=np.uint8)[:, None] * 20, 3072, axis=1)
        (tmp_path / cifar10.FOLDER / name).write_bytes(__import__("pickle").dumps(entry, protocol=2))
    return tmp_path


def test_device_batches_keep_each_image_with_its_label(constant_classes):
    data = build(config(constant_classes, pipeline="device"), CPU)
    batches = data.train_batches(0)
    for _ in range(10):  # across an epoch of the 30 labeled images
        batch = next(batches)
        assert batch.x_l.dtype == torch.float32 and batch.x_l.shape == (4, 3, 32, 32)
        assert torch.equal(pixels(batch.x_l), (20 * batch.y_l).view(4, 1, 1, 1).expand(4, 3, 32, 32).float())
        assert batch.x_uw.shape == batch.x_us.shape == (8, 3, 32, 32)


def test_both_pipelines_draw_the_same_images_for_each_batch(fake_root, monkeypatch):
    """The batch order is one function of (seed, batch) for both pipelines: with the augmentations taken out, the
    very same labeled images (with their labels) and unlabeled images, batch by batch, across epochs. Mutant
    caught: a pipeline that pairs a label with another image, or draws its rows in another order (the labels
    alone, which repeat, would not show either)."""
    from mpl_runner.data import batched_augment, image_workers

    monkeypatch.setattr(batched_augment, "weak", lambda images, generator, **_: images)
    monkeypatch.setattr(batched_augment, "strong", lambda images, generator, *_, **__: images)
    monkeypatch.setattr(image_workers, "_flip_crop", lambda *_, **__: [v2.Identity()])
    monkeypatch.setattr(image_workers, "strong_transform", lambda cfg, mean, std, *_: image_workers.eval_transform(
        mean, std))
    streams = []
    for pipeline in ("device", "workers"):
        torch.manual_seed(0)  # (the run's seed, which the stream seeds are drawn from)
        streams.append(build(config(fake_root, pipeline=pipeline), CPU).train_batches(0))
    for _ in range(12):
        device, workers = (next(s) for s in streams)
        assert torch.equal(device.y_l, workers.y_l)
        for view in ("x_l", "x_uw", "x_us"):
            assert torch.allclose(getattr(device, view), getattr(workers, view), atol=1e-6), view
    assert not torch.equal(device.x_l[0], device.x_l[1])  # (real, different images: the check can fail)


@pytest.mark.parametrize("pipeline", ["device", "workers"])
def test_both_pipelines_build_the_strong_view_on_the_weak_view_with_grey_padding(constant_classes, pipeline):
    """The official strong view starts from the weak view's own flipped, grey-padded crop (data_utils.py:557-565):
    with RandAugment and cutout off, each strong view is a flip + grey-padded crop of its weak view. Mutant
    caught: a strong view drawn from the image itself (a crop of its own, whose grey border does not follow the
    weak view's), or reflect padding where grey is asked for."""
    data = build(config(constant_classes, pipeline=pipeline, pad_mode="grey", randaugment_num_ops=0,
                        cutout_size=0), CPU)
    batches = data.train_batches(0)
    greys = 0
    for _ in range(6):
        batch = next(batches)
        for weak, strong in zip(pixels(batch.x_uw), pixels(batch.x_us)):
            padded = torch.nn.functional.pad(weak, (4, 4, 4, 4), value=128)
            crops = torch.stack([padded[..., dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)])
            assert (torch.cat([crops, crops.flip(-1)]) == strong).flatten(1).all(1).any()
            greys += bool((weak[:, 0] == 128).all() or (weak[:, -1] == 128).all())
    assert greys > 0  # grey borders, not reflected ones


@pytest.fixture
def fake_root(tmp_path) -> Path:
    write_fake_cifar10(tmp_path)
    return tmp_path


def test_device_weak_views_are_flips_and_crops_of_their_images(fake_root):
    """Stream 0 of a labeled-only run: each weak view equals a flip or not and a reflect-padded crop of one of the
    labeled images of its class."""
    data = build(config(fake_root, pipeline="device"), CPU)
    train_x, train_y = cifar10.read_cifar10(fake_root)[:2]
    images = image_sets.to_chw(train_x)[data.labeled_indices].float()
    labels = torch.from_numpy(train_y)[data.labeled_indices]
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4), mode="reflect")
    crops = torch.stack([padded[..., dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)], dim=1)
    candidates = torch.cat([crops, crops.flip(-1)], dim=1)  # labeled x 162 x 3 x 32 x 32
    batch = next(data.train_batches(0, views="labeled"))
    for x, y in zip(pixels(batch.x_l), batch.y_l):
        match = (candidates == x).flatten(2).all(-1).any(-1)
        assert match.sum() == 1 and labels[match.nonzero()[0, 0]] == y


def test_device_views_follow_the_stream_seed_and_batch_alone(fake_root):
    """Batch b is the same whether the stream starts at 0 or at b (a resumed run), and the run's RNG is untouched."""
    torch.manual_seed(0)
    data = build(config(fake_root, pipeline="device"), CPU)
    state = torch.get_rng_state()
    stream = data.train_batches(0)
    first = [next(stream) for _ in range(5)]
    again = next(data.train_batches(3))
    assert torch.equal(torch.get_rng_state(), state)
    for got, expected in zip((again.x_l, again.y_l, again.x_uw, again.x_us), (first[3].x_l, first[3].y_l,
                                                                              first[3].x_uw, first[3].x_us)):
        assert torch.equal(got, expected)
    assert not torch.equal(first[3].x_us, first[4].x_us)


def test_device_evaluation_reads_every_image_in_order_normalised(fake_root):
    data = build(config(fake_root, pipeline="device", num_val=20), CPU)
    workers = build(config(fake_root, pipeline="workers", num_val=20), CPU)
    for split in ("val", "test"):
        got, expected = list(data.eval_splits[split]), list(workers.eval_splits[split])
        assert torch.equal(torch.cat([y for _, y in got]), torch.cat([y for _, y in expected]))
        assert torch.allclose(torch.cat([x for x, _ in got]), torch.cat([x for x, _ in expected]), atol=1e-6)


def test_auto_is_the_device_pipeline_on_cuda_and_workers_for_torchvision_randaugment(fake_root):
    cfg = config(fake_root, pipeline="auto")
    assert image_sets.pipeline(cfg, torch.device("cuda")) == "device"
    assert image_sets.pipeline(cfg, CPU) == image_sets.CPU_PIPELINE
    torchvision = config(fake_root, pipeline="auto", randaugment="torchvision")
    assert image_sets.pipeline(torchvision, torch.device("cuda")) == "workers"
    with pytest.raises(ConfigError, match="dataset.pipeline='device' is not allowed: workers or auto"):
        validate(full_config(fake_root, pipeline="device", randaugment="torchvision"))


def test_figures_show_sixteen_strong_views_of_one_image(fake_root, tmp_path):
    """The figure holds the image and 16 strong views of it, different draws, each drawn as a picture. Mutant
    caught: a figure of 16 empty axes, of one view 16 times, or of views of other images (``len(axes) >= 17``
    alone passes all three). RandAugment and cutout off, so a view is a flip and shift of its image."""
    data = build(config(fake_root, pipeline="device", randaugment_num_ops=0, cutout_size=0), CPU)
    figures = data.figures({})
    assert set(figures) == {"augmentations"}  # no teacher: no pseudo labels to show
    shown = [np.asarray(ax.get_images()[0].get_array(), dtype=float) for ax in figures["augmentations"].axes
             if ax.get_images()]
    assert len(shown) == 17
    original, views = shown[0], shown[1:]
    assert len({v.round(4).tobytes() for v in views}) >= 12  # different draws (2 x 17 x 17 possible views)
    train_x = image_sets.to_chw(cifar10.read_cifar10(fake_root)[0]).permute(0, 2, 3, 1).numpy() / 255.0

    def shifted_of(view, image) -> bool:
        """The view's central 16 x 16 is the image's (or its mirror's) at some shift of up to 8 pixels."""
        centre = view[8:24, 8:24]
        return any(np.allclose(centre, flipped[8 + dy:24 + dy, 8 + dx:24 + dx], atol=1e-4)
                   for flipped in (image, image[:, ::-1]) for dy in range(-8, 9) for dx in range(-8, 9))

    source = [i for i, image in enumerate(train_x) if np.allclose(image, original, atol=1e-4)]
    assert len(source) == 1
    for view in views:
        assert shifted_of(view, original)
        assert not shifted_of(view, train_x[(source[0] + 1) % len(train_x)])


REAL_SMOKE = ["experiment=cifar10_smoke", f"dataset.root={REAL_ROOT}", "device=cpu", "trainer.steps=200",
              "trainer.progress=false", "seed=0"]


@pytest.mark.slow
@pytest.mark.skipif(not REAL_ROOT.exists(), reason="real CIFAR-10 not present at ../shared/data/cifar10")
def test_device_pipeline_learns_as_well_as_the_workers_on_real_data(tmp_path):
    """The same short MPL run (same seed and batches; each pipeline its own augmentation draws) on real CIFAR-10:
    the teachers' validation accuracy within noise of each other (and both above chance)."""
    acc = {}
    for pipeline in ("workers", "device"):
        run_dir = tmp_path / pipeline
        result = mpl_run(*REAL_SMOKE, f"dataset.pipeline={pipeline}", f"hydra.run.dir={run_dir}", cwd=tmp_path,
                         timeout=1800)
        assert result.returncode == 0, result.stderr
        acc[pipeline] = json.loads((run_dir / "metrics.json").read_text())["val/teacher/acc"]
    assert min(acc.values()) > 0.2, acc  # chance is 0.1
    assert abs(acc["device"] - acc["workers"]) < 0.05, acc  # 5000 val images: a seed-to-seed spread of a few points

"""On a GPU: every method's step under each precision, h in float32 under bf16, channels_last and torch.compile
against eager, the batched augmentation and the device pipeline against the CPU's, and runs on CUDA (one resumed
on the CPU). Marked ``cuda``: skipped where CUDA is absent (conftest.py); ``scripts/gpu_check.sh`` runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from conftest import mpl_run
from mpl_runner.cli.config import compose_config
from mpl_runner.data import Batch, cifar10, image_device
from mpl_runner.data import batched_augment as ba
from mpl_runner.data.randaugment import OPS, SIGNED
from mpl_runner.loop.engine import autocast
from mpl_runner.methods import build_method
from mpl_runner.models import build_model
from test_cifar10_data import config, write_fake_cifar10
from test_image_pipelines import pixels

pytestmark = pytest.mark.cuda

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
LOSS_FREE = ("mpl/h", "mpl/coefficient", "mpl/baseline", "uda/mask")  # differences of losses, and a count


def tiny_method(name: str, *overrides: str, channels_last: bool = False):
    """Method ``name`` with two WRN-10-1 models (one block per stage) on CUDA, from conf/, at lr 0.05."""
    cfg = compose_config("model=wrn28_2", "model.depth=10", "model.widen_factor=1", f"method={name}",
                         "optim.lr=0.05", "trainer.steps=100", *overrides)
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.preserve_format
    return build_method(cfg.method, cfg.optim, cfg.trainer.steps,
                        lambda: build_model(cfg.model, (3, 32, 32), 10).to(CUDA, memory_format=fmt))


def random_batch(b: int = 8, mu: int = 2, channels_last: bool = False) -> Batch:
    g = torch.Generator().manual_seed(0)
    x_u = torch.randn(mu * b, 3, 32, 32, generator=g)
    batch = Batch(torch.randn(b, 3, 32, 32, generator=g), torch.randint(10, (b,), generator=g), x_u, x_u.flip(3))
    return batch.to(CUDA, channels_last=channels_last)


def weights(method) -> torch.Tensor:
    return torch.cat([p.detach().flatten().float() for m in method.models.values() for p in m.parameters()])


def uint8_images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def no_tf32():
    """Full float32 convolutions and matmuls, so that two layouts or two compilers differ by rounding alone."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# --- the step under each precision ------------------------------------------------------------------------------


@pytest.mark.parametrize("amp", ["none", "bf16", "fp16"])
@pytest.mark.parametrize("name", ["supervised", "uda", "mpl"])
def test_each_method_step_gives_finite_losses_under_each_precision(name, amp):
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    method = tiny_method(name)
    if amp == "fp16":
        method.enable_grad_scaling(CUDA)  # as mpl-run does for trainer.amp=fp16
    before, batch = weights(method), random_batch()
    for step in range(4):
        with autocast(CUDA, amp):
            stats = method.train_step(batch, step)
        assert stats, "a step returns its losses"
        bad = {k: v.item() for k, v in stats.items() if not torch.isfinite(v).all()}
        assert not bad, f"step {step}: {bad}"
    after = weights(method)
    assert torch.isfinite(after).all() and not torch.equal(after, before)  # (fp16: the scaler kept some steps)


def test_h_under_bf16_is_the_float32_h():
    """``old`` and ``new`` are computed in float32 even under autocast: h (~1e-3 after one step, ~1e-4 late in a
    cosine schedule) would drown in bf16's rounding of a loss of ~2 (8 bits of mantissa: steps of ~0.008)."""
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    method, batch, seed = tiny_method("mpl"), random_batch(), 1234
    with autocast(CUDA, "bf16"):
        old_bf16 = method.student_labeled_loss(batch, seed)
    old_fp32 = method.student_labeled_loss(batch, seed)
    targets = torch.arange(len(batch.x_us), device=CUDA) % 10
    method.update("student", F.cross_entropy(method.student(batch.x_us), targets))  # the same new weights for both
    with autocast(CUDA, "bf16"):
        new_bf16 = method.student_labeled_loss(batch, seed)
    new_fp32 = method.student_labeled_loss(batch, seed)
    assert old_bf16.dtype == new_bf16.dtype == torch.float32
    h_bf16, h_fp32 = (old_bf16 - new_bf16).item(), (old_fp32 - new_fp32).item()
    assert h_fp32 != 0.0
    assert h_bf16 == pytest.approx(h_fp32, abs=1e-6)


# --- channels_last and torch.compile against eager --------------------------------------------------------------


def three_steps(name: str, channels_last: bool = False, compile: bool = False) -> list[dict[str, float]]:
    method = tiny_method(name, "model.dropout=0.0", channels_last=channels_last)  # (inductor draws its own masks)
    if compile:
        method.compile()
    batch = random_batch(channels_last=channels_last)
    return [{k: v.item() for k, v in method.train_step(batch, step).items() if k not in LOSS_FREE}
            for step in range(3)]


@pytest.mark.parametrize("switch", ["channels_last", "compile"])
@pytest.mark.parametrize("name", ["supervised", "mpl"])
def test_channels_last_and_compile_give_the_eager_losses(name, switch, no_tf32):
    eager = three_steps(name)
    other = three_steps(name, channels_last=switch == "channels_last", compile=switch == "compile")
    for step, (expected, got) in enumerate(zip(eager, other)):
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-3, abs=1e-4), f"step {step}: {key}"


# --- the batched augmentation and the device pipeline: CUDA against the CPU --------------------------------------
# A torch.Generator on CUDA draws other numbers than one on the CPU for the same seed (another algorithm), so the
# ops are compared given the same *draws*: drawn on the CPU and moved to CUDA. Integer ops (gathers, masks, bit
# operations) must agree exactly; ops that go through float may round differently on the GPU (fused multiply-adds,
# another summation order): a blend at factor 2.98 (magnitude 16) turns one grey level of the grey image, mean or
# blurred image into two; an affine grid sampled at the nearest pixel takes the neighbour where a point falls on a
# rounding boundary. So for those: a few pixels, by little.

EXACT = {"Invert", "Posterize", "Solarize", "Cutout"}
GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"}


def test_flip_crop_and_cutout_on_cuda_equal_the_cpu_given_the_same_draws():
    g = torch.Generator().manual_seed(1)
    x, n = uint8_images(256), 256
    flipped, top, left = torch.rand(n, generator=g) < 0.5, torch.randint(9, (n,), generator=g), torch.randint(
        9, (n,), generator=g)
    on_cpu = ba.flip_crop_at(x, flipped, top, left)
    on_cuda = ba.flip_crop_at(x.to(CUDA), flipped.to(CUDA), top.to(CUDA), left.to(CUDA))
    assert torch.equal(on_cuda.cpu(), on_cpu)
    cy, cx = torch.randint(32, (n,), generator=g), torch.randint(32, (n,), generator=g)
    assert torch.equal(ba.cutout_at(x.to(CUDA), cy.to(CUDA), cx.to(CUDA), 16).cpu(), ba.cutout_at(x, cy, cx, 16))


@pytest.mark.parametrize("op", OPS)
def test_each_randaugment_op_on_cuda_equals_the_cpu(op):
    x = uint8_images(128, seed=2)
    centres = torch.randint(32, (128, 2), generator=torch.Generator().manual_seed(3))
    for sign in (1, -1) if op in SIGNED else (1,):
        on_cpu = ba.apply_op_batch(x, op, 16, sign, centres=centres)
        on_cuda = ba.apply_op_batch(x.to(CUDA), op, 16, sign, centres=centres.to(CUDA)).cpu()
        diff = (on_cpu.int() - on_cuda.int()).abs()
        if op in EXACT:
            assert torch.equal(on_cuda, on_cpu), f"{op} sign {sign}"
        elif op in GEOMETRIC:
            assert (diff > 0).float().mean() <= 0.01, f"{op} sign {sign}: {(diff > 0).float().mean():.4f} differ"
        else:
            assert diff.max() <= 2 and (diff > 0).float().mean() <= 0.01, f"{op}: {diff.max()} levels apart at most"


def test_rand_augment_on_cuda_equals_the_cpu_given_the_same_draws():
    x = uint8_images(512, seed=4)
    draws = ba.draw_rand_augment(torch.Generator().manual_seed(5), 512, 2, 32, 32)
    on_cpu = ba.apply_rand_augment(x, draws, 16)
    on_cuda = ba.apply_rand_augment(x.to(CUDA), ba.RandAugmentDraws(*(t.to(CUDA) for t in draws)), 16).cpu()
    assert ((on_cpu.int() - on_cuda.int()).abs() > 1).float().mean() <= 0.01


class DrawsOnTheCpu:
    """``torch`` as the device pipeline sees it, except that its generators live on the CPU and each draw is made
    there and moved to the device asked for: the CUDA pipeline then gets the very draws of the CPU pipeline."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def Generator(device=None):  # noqa: N802 (torch's name)
        return torch.Generator()

    @staticmethod
    def rand(*args, generator, device=None, **kwargs):
        return torch.rand(*args, generator=generator, **kwargs).to(device)

    @staticmethod
    def randint(*args, generator, device=None, **kwargs):
        return torch.randint(*args, generator=generator, **kwargs).to(device)


def first_batches(root, device: torch.device, count: int = 3) -> list[Batch]:
    torch.manual_seed(0)  # (the run's seed, which the stream seeds are drawn from)
    data = cifar10.build(config(root, pipeline="device", labeled_batch_size=8, unlabeled_ratio=4), device)
    stream = data.train_batches(0)
    return [next(stream).to(CPU) for _ in range(count)]


def test_device_pipeline_on_cuda_equals_the_cpu_given_the_same_draws(tmp_path, monkeypatch):
    write_fake_cifar10(tmp_path)
    expected = first_batches(tmp_path, CPU)
    monkeypatch.setattr(image_device, "torch", DrawsOnTheCpu())
    monkeypatch.setattr(ba, "torch", DrawsOnTheCpu())
    monkeypatch.setattr(ba, "_check", lambda images, generator: None)  # (it refuses a CPU generator for CUDA images)
    got = first_batches(tmp_path, CUDA)
    for b, (cpu, cuda) in enumerate(zip(expected, got)):
        assert torch.equal(cuda.y_l, cpu.y_l), b
        for view in ("x_l", "x_uw"):  # flip + crop: a gather; then the same normalisation
            torch.testing.assert_close(getattr(cuda, view), getattr(cpu, view), msg=f"batch {b} {view}")
        apart = (pixels(cuda.x_us) - pixels(cpu.x_us)).abs()
        assert (apart > 1).float().mean() <= 0.01, f"batch {b}: strong views {(apart > 1).float().mean():.4f} apart"


def test_device_pipeline_on_cuda_is_a_function_of_seed_and_batch(tmp_path):
    """What resuming on CUDA relies on: batch 3 is the same whether the stream starts at 0 or at 3."""
    write_fake_cifar10(tmp_path)
    torch.manual_seed(0)
    data = cifar10.build(config(tmp_path, pipeline="device", labeled_batch_size=8, unlabeled_ratio=4), CUDA)
    stream = data.train_batches(0)
    first = [next(stream) for _ in range(4)]
    again = next(data.train_batches(3))
    for view in ("x_l", "y_l", "x_uw", "x_us"):
        assert torch.equal(getattr(again, view), getattr(first[3], view)), view
    assert not torch.equal(first[2].x_us, first[3].x_us)


# --- mpl-run on CUDA ------------------------------------------------------------------------------------------------

TINY_CIFAR = [
    "dataset=cifar10_4k", "dataset.num_labeled=20", "dataset.num_val=20", "dataset.labeled_batch_size=4",
    "dataset.unlabeled_ratio=2", "dataset.eval_batch_size=10", "dataset.num_workers=0", "model=wrn28_2",
    "model.depth=10", "model.widen_factor=1", "trainer.progress=false",
]


def test_a_tiny_cifar_run_on_cuda_finishes(tmp_path):
    """fp16 with its grad scalers, channels_last, the device pipeline (what auto picks on CUDA), EMA, finetuning."""
    write_fake_cifar10(tmp_path / "data")
    run_dir = tmp_path / "run"
    result = mpl_run(*TINY_CIFAR, f"dataset.root={tmp_path / 'data'}", "method=mpl", "method.ema_decay=0.9",
                     "method.finetune.steps=2", "method.finetune.batch_size=4", "trainer.steps=8",
                     "trainer.eval_interval=4", "trainer.log_interval=2", "trainer.amp=fp16",
                     "trainer.channels_last=true", "device=cuda", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps"] == 8 and 0 <= metrics["test/acc"] <= 1
    assert metrics["provenance/device_name"] == torch.cuda.get_device_name(0)
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")["method"]["scalers"]


def test_a_tiny_cifar_run_on_cuda_resumes_on_the_cpu(tmp_path):
    """SIGTERM as soon as a run on CUDA (bf16 where the GPU has it) has written its first checkpoint; the same
    command with device=cpu goes on from that checkpoint (precision auto: none on the CPU) and finishes."""
    write_fake_cifar10(tmp_path / "data")
    args = [*TINY_CIFAR, f"dataset.root={tmp_path / 'data'}", "method=mpl", "trainer.steps=100",
            "trainer.eval_interval=50", "trainer.log_interval=10", "trainer.checkpoint_interval=2", "trainer.amp=auto"]
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "mpl_runner", *args, "device=cuda", f"hydra.run.dir={run_dir}"],
                            cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1"}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "last.pt").exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    stopped = json.loads((run_dir / "metrics.json").read_text())
    assert stopped["status"] == "interrupted" and 0 < stopped["checkpoint_step"] < 100
    result = mpl_run(*args, "device=cpu", f"trainer.resume={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"after step {stopped['checkpoint_step']} of 100" in result.stdout + result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps"] == 100

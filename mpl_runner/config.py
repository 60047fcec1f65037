"""Typed schemas behind the YAML config groups.

Each YAML option under ``conf/<group>/`` starts from one of these schemas (its defaults list names it), so a
misspelt key or a value of the wrong type is an error when Hydra composes the config, not a silent default.
Checks that need more than a type (ranges, choices, cross-field rules) live in :mod:`mpl_runner.validate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, SI, OmegaConf

from mpl_runner.distributed import now, world_from_env
from mpl_runner.errors import ConfigError
from mpl_runner.run_dirs import resume_dir


@dataclass
class TwoMoonsConfig:
    name: str = "two_moons"
    points_per_class: int = 1000
    noise: float = 0.0
    num_labeled: int = 12  # drawn balanced: num_labeled / 2 per class
    split_seed: int = SI("${seed}")  # which points are labeled; follows the run seed unless pinned
    test_seed: int = 10_000  # a fresh draw of the same distribution, used as the test split
    val_seed: int = 20_000  # another fresh draw, the validation split (choices and searches select on it)
    labeled_batch_size: Optional[int] = None  # None: every labeled point each step
    unlabeled_batch_size: Optional[int] = 256  # None: every point each step (full batch)
    weak_jitter: float = 0.0  # std of the Gaussian jitter of the weak unlabeled view
    strong_jitter: float = 0.2  # std of the Gaussian jitter of the strong unlabeled view


@dataclass
class DigitsConfig:
    name: str = "digits"
    test_size: int = 500  # a fixed stratified test set, drawn with test_seed; the rest is the training pool
    test_seed: int = 0  # independent of the run seed: every run tests on the same images
    num_labeled: int = 50  # drawn balanced from the pool: num_labeled / 10 per class
    num_val: int = 200  # validation images, balanced, disjoint from the labeled ones and never in the unlabeled set
    split_seed: int = SI("${seed}")  # which images are labeled and validation; follows the run seed unless pinned
    labeled_batch_size: Optional[int] = None  # None: every labeled image each step
    unlabeled_batch_size: Optional[int] = 256  # None: every unlabeled image each step
    weak_shift: int = 1  # weak view: random translation by up to this many pixels in x and y
    strong_shift: int = 2  # strong view: translation by up to this many pixels, then cutout and jitter
    cutout_size: int = 3  # strong view: side of the square set to 0 (0: none)
    strong_jitter: float = 0.3  # strong view: x * U(1 - s, 1 + s) + U(-s, s) / 2, clamped to [0, 1]


@dataclass
class Cifar10Config:
    name: str = "cifar10"
    root: str = "data/cifar10"  # the directory that holds cifar-10-batches-py/
    download: bool = False  # fetch the official archive into root when the data is absent
    num_labeled: int = 4000  # drawn balanced: num_labeled / 10 per class
    split_seed: int = SI("${seed}")  # which images are labeled; follows the run seed unless pinned
    num_val: int = 0  # held out of the training set, balanced per class, never trained on: the validation split
    unlabeled: str = "all"  # all: every training image (the paper); rest: the training images not labeled
    labeled_batch_size: int = 64
    unlabeled_ratio: int = 7  # mu: the unlabeled batch is mu * labeled_batch_size images
    num_workers: int = 2  # per DataLoader (labeled, unlabeled, test)
    pin_memory: bool = True  # only used when the device is CUDA
    persistent_workers: bool = True  # only used when num_workers > 0
    # official: the MPL code's RandAugment + cutout (mpl_runner/data/randaugment.py); torchvision: v2.RandAugment
    # + RandomErasing (cutout_scale, cutout_probability), for comparison
    randaugment: str = "official"
    randaugment_num_ops: int = 2
    randaugment_magnitude: int = 16  # official: the level, 0 to 20 (_MAX_LEVEL = 10); torchvision: 0 to 30
    cutout_size: int = 16  # official: side of the grey square cut out after RandAugment, pixels
    cutout_scale: list[float] = field(default_factory=lambda: [0.02, 0.25])  # torchvision: erased area, fraction
    cutout_probability: float = 1.0  # torchvision only: the official cutout always applies
    eval_batch_size: int = 512


@dataclass
class MLPConfig:
    name: str = "mlp"
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "relu"
    dropout: float = 0.0
    init: str = "default"  # default (PyTorch's) | uniform: every weight and bias from U(-init_scale, init_scale)
    init_scale: float = 0.1


@dataclass
class WideResNetConfig:
    name: str = "wide_resnet"
    depth: int = 28
    widen_factor: int = 2
    dropout: float = 0.0
    bn_momentum: float = 0.01  # PyTorch convention: 0.99 in TensorFlow terms
    bn_eps: float = 1e-5
    leaky_relu_slope: float = 0.1
    stem_width: int = 16  # channels of the first convolution (the official MPL code: 16 * widen_factor)


@dataclass
class SmallCNNConfig:
    name: str = "small_cnn"
    widths: list[int] = field(default_factory=lambda: [32, 64])  # channels of each stage; each halves the side
    dropout: float = 0.0
    bn_momentum: float = 0.1  # PyTorch convention


@dataclass
class UDAConfig:
    """Unsupervised data augmentation (consistency) loss for the teacher; weight 0 turns it off."""

    weight: float = 1.0
    temperature: float = 0.7
    threshold: float = 0.6
    ramp_steps: int = 0  # weight grows linearly from 0 over this many steps


@dataclass
class SupervisedConfig:
    name: str = "supervised"
    label_smoothing: float = 0.0


@dataclass
class UDAMethodConfig:
    name: str = "uda"
    label_smoothing: float = 0.0
    uda: UDAConfig = field(default_factory=UDAConfig)


@dataclass
class FinetuneConfig:
    """The last ``steps`` of an MPL run: the student alone on labeled batches, with an optimizer of its own."""

    steps: int = 0
    batch_size: int = 64  # labeled examples a step
    name: str = "sgd"
    lr: float = 3e-5
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    label_smoothing: float = 0.0


@dataclass
class MPLConfig:
    name: str = "mpl"
    # first_order: hard pseudo labels and h = old - new (DESIGN.md section 4);
    # exact: soft pseudo labels, the teacher differentiates through one student SGD step.
    variant: str = "first_order"
    # The teacher's MPL coefficient: old_minus_new (the sign the Taylor expansion gives), new_minus_old (the
    # official code's), or none (the control: h is computed and logged, the teacher gets no MPL term).
    feedback: str = "old_minus_new"
    pseudo_label: str = "argmax"  # argmax | sample (first_order); soft (exact)
    baseline_decay: Optional[float] = None  # moving-average baseline for h, e.g. 0.99; None: off
    label_smoothing: float = 0.0
    uda: UDAConfig = field(default_factory=lambda: UDAConfig(weight=0.0))
    student_lr: Optional[float] = None  # None: same as optim.lr
    student_warmup_steps: Optional[int] = None  # None: same as optim.warmup_steps
    student_wait_steps: int = 0  # the student starts learning (and its lr schedule starts) after this many steps
    ema_decay: Optional[float] = None  # EMA of the student, evaluated as "student_ema"; None: off
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adam
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | cosine
    warmup_steps: int = 0
    grad_clip: Optional[float] = None  # max global grad norm; None: off


@dataclass
class TrainerConfig:
    steps: int = 1000
    eval_interval: int = 250
    log_interval: int = 50
    num_threads: Optional[int] = None  # torch intra-op threads; None: torch's default
    amp: str = "none"  # none | bf16 | fp16 (with a gradient scaler) | auto (CUDA: bf16 if supported, else fp16)
    channels_last: bool = False  # NHWC memory layout for image models and batches
    progress: bool = True  # one console line per evaluation
    progress_interval: Optional[int] = None  # also a line (losses, speed) every N steps; None: evaluations only
    checkpoint_interval: Optional[int] = 100  # checkpoints/last.pt every N steps (None: at the end only); on SIGTERM
    resume: Optional[str] = None  # a run dir: go on from its checkpoint, in that dir
    auto_resume: bool = True  # a run dir that already holds a checkpoint (a requeued job) goes on from it
    skip_nonfinite: bool = False  # drop (and count) updates whose loss or gradient is not finite, instead of stopping
    compile: bool = False  # torch.compile the trained forward passes (teacher, student)
    sync_batchnorm: bool = False  # under torchrun: batch-norm statistics over the global batch (SyncBatchNorm)


@dataclass
class Config:
    dataset: Any = MISSING
    model: Any = MISSING
    method: Any = MISSING
    optim: OptimConfig = MISSING
    trainer: TrainerConfig = MISSING
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N


SCHEMAS: dict[str, dict[str, type]] = {
    "dataset": {"two_moons": TwoMoonsConfig, "cifar10": Cifar10Config, "digits": DigitsConfig},
    "model": {"mlp": MLPConfig, "wide_resnet": WideResNetConfig, "small_cnn": SmallCNNConfig},
    "method": {"supervised": SupervisedConfig, "uda": UDAMethodConfig, "mpl": MPLConfig},
    "optim": {"optim": OptimConfig},
    "trainer": {"trainer": TrainerConfig},
}


def _sweep_dir(resume: str | None, sweeper: str, num_val: int | None, sweep_dir: str) -> str:
    """``hydra.sweep.dir``, which a multirun never gets to with ``trainer.resume``, nor a search (a sweeper that
    reads what jobs return, e.g. Optuna: they select on val/acc) on a data set without a validation split."""
    if resume is not None:
        raise ConfigError(
            "trainer.resume", resume, "null in a multirun (-m): to resume a sweep, run it again with "
            "hydra.sweep.dir=<its dir>, and each job goes on from its own checkpoint"
        )
    require_validation_split(sweeper, num_val)
    return sweep_dir


def require_validation_split(sweeper: str, num_val: int | None) -> None:
    """A search (a sweeper that reads what jobs return, unlike Hydra's basic one) selects on val/acc: a data set
    without a validation split (``dataset.num_val=0``) is refused."""
    if num_val == 0 and not sweeper.endswith(".BasicSweeper"):
        raise ConfigError("dataset.num_val", 0, "> 0 in a search: searches select on val/acc, never on test/acc")


_RECORD_DIRS: dict[tuple[str, str], str] = {}


def record_dir(output_dir: str, stamp: str) -> str | None:
    """``hydra.output_subdir``: ``.hydra`` in a new run dir; in one that has a record already (a resumed or
    requeued run), ``.hydra/resumed_<stamp>``, beside the original, which is left as it was. Decided once per job
    (Hydra reads the key again after writing the record)."""
    if not world_from_env().is_main:
        return None  # under torchrun, rank 0 alone writes the record
    key = (output_dir, stamp)
    if key not in _RECORD_DIRS:
        fresh = not (Path(output_dir) / ".hydra" / "config.yaml").exists()
        name, n = f".hydra/resumed_{stamp}", 1
        while (Path(output_dir) / name).exists():  # (another command in the same second): a record of its own
            n += 1
            name = f".hydra/resumed_{stamp}_{n}"
        _RECORD_DIRS[key] = ".hydra" if fresh else name
    return _RECORD_DIRS[key]


#: what a multirun job's dir name may take of the file system's 255 bytes
JOB_DIR_BYTES = 200


def job_dir(num: int, overrides: str) -> str:
    """``hydra.sweep.subdir``: ``<job num>_<overrides>`` (Hydra's ``override_dirname``: e.g. ``0_method=mpl,seed=0``),
    the job number alone where there are none; a "/" in a value as "_", cut to a valid file name. The same
    command gives the same names, so a sweep run again in its dir (``hydra.sweep.dir=``) finds its jobs."""
    name = f"{num}_{overrides}".replace("/", "_") if overrides else str(num)
    return name.encode()[:JOB_DIR_BYTES].decode(errors="ignore")


def free_keys() -> list[str]:
    """``hydra.job.config.override_dirname.exclude_keys``: what a job's dir name leaves out: the keys a resumed run
    may change (:data:`mpl_runner.checkpoint.FREE_KEYS`) and the search preset every job of a search shares."""
    from mpl_runner.checkpoint import FREE_KEYS

    return [*FREE_KEYS, "hparams_search"]


def listed_option(name: str) -> bool:
    """Whether a config group option is one to choose: not a schema (``schema_*``, which the YAML files extend) nor
    what experiment presets share (``*_common``, which they extend)."""
    return not name.startswith("schema_") and not name.endswith("_common")


def config_groups() -> str:
    """``${mpl.config_groups:}``, in ``mpl-run --help``: Hydra's list of the config groups and their options
    (``$APP_CONFIG_GROUPS``), less the options :func:`listed_option` hides."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    loader = GlobalHydra.instance().config_loader()

    def groups(parent: str = ""):
        for name in loader.list_groups(parent):
            group = f"{parent}/{name}" if parent else name
            if group != "hydra":
                yield group
                yield from groups(group)

    lines = []
    for group in sorted(groups()):
        options = [o for o in sorted(loader.get_group_options(group, ObjectType.CONFIG)) if listed_option(o)]
        if options:
            lines.append(f"{group}: {', '.join(options)}")
    return "\n".join(lines)


def register_configs() -> None:
    """Store every schema as ``<group>/schema_<name>`` (what the YAML defaults lists extend) and the root."""
    # ${mpl.run_dir:<trainer.resume>,<new dir>}: where a run writes; refuses a resume target that is not a run dir
    OmegaConf.register_new_resolver("mpl.run_dir", resume_dir, replace=True)
    OmegaConf.register_new_resolver("mpl.sweep_dir", _sweep_dir, replace=True)
    OmegaConf.register_new_resolver("mpl.record_dir", record_dir, replace=True)
    OmegaConf.register_new_resolver("mpl.now", now, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("mpl.config_groups", config_groups, replace=True)
    OmegaConf.register_new_resolver("mpl.job_dir", job_dir, replace=True)
    OmegaConf.register_new_resolver("mpl.free_keys", free_keys, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="schema_config", node=Config)
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=group, name=f"schema_{name}", node=node)

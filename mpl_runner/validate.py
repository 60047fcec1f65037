"""Checks of a composed config that types alone cannot express; run before anything is built or written.

Each failure raises :class:`ConfigError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import re

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from omegaconf.nodes import BooleanNode

from mpl_runner.errors import ConfigError, UserError
from mpl_runner.models.mlp import ACTIVATIONS


def _get(cfg: DictConfig, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def one_of(cfg, key: str, choices) -> None:
    if _get(cfg, key) not in choices:
        raise ConfigError(key, _get(cfg, key), "one of " + ", ".join(map(str, choices)))


def positive(cfg, key: str, optional: bool = False) -> None:
    value = _get(cfg, key)
    if value is None and optional:
        return
    if value is None or not 0 < value < math.inf:  # (nan and inf too)
        raise ConfigError(key, value, "a finite number > 0" + (" or null" if optional else ""))


def at_least(cfg, key: str, low: float) -> None:
    value = _get(cfg, key)
    if not low <= value < math.inf:  # (nan and inf too)
        raise ConfigError(key, value, f"a finite number >= {low}")


def count(cfg, key: str, low: int, high: int, optional: bool = False, why: str = "") -> None:
    """An integer from ``low`` to ``high``: a seed, size or count that numpy, scikit-learn or torch takes as it is."""
    value = _get(cfg, key)
    if value is None and optional:
        return
    if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
        raise ConfigError(key, value, f"an integer from {low} to {high}{why}" + (" or null" if optional else ""))


def sizes(cfg, key: str, high: int, what: str) -> None:
    """A non-empty list of integers from 1 to ``high`` (layer widths, channel counts)."""
    value = _get(cfg, key)
    items = list(value) if isinstance(value, ListConfig) else []
    if not items or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= high for v in items):
        shown = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
        raise ConfigError(key, shown, f"a non-empty list of {what} from 1 to {high}, e.g. [64, 64]")


def fraction(cfg, key: str, optional: bool = False, closed: bool = False) -> None:
    """A value in [0, 1) (or [0, 1] when ``closed``)."""
    value = _get(cfg, key)
    if value is None and optional:
        return
    if value is None or not (0 <= value <= 1 if closed else 0 <= value < 1):
        interval = "[0, 1]" if closed else "[0, 1)"
        raise ConfigError(key, value, f"a number in {interval}" + (" or null" if optional else ""))


def reject_unknown_keys(node: DictConfig, prefix: str = "") -> None:
    """Hydra's ``+key=value`` can add keys that no schema has; nothing would read them, so refuse them."""
    schema = OmegaConf.get_type(node)
    allowed = [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else None
    for key in node.keys():
        if allowed is not None and key not in allowed:
            raise UserError(f"{prefix}{key} is not a config key; the keys there are: {', '.join(allowed)}")
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            reject_unknown_keys(child, f"{prefix}{key}.")


SEEDS = (0, 2**32 - 1)  # what numpy and scikit-learn take as a seed
MAX_WIDTH = 65536  # units of a layer, channels of a convolution: a 65536 x 65536 layer alone holds 16 GiB


def validate_seeds(cfg) -> None:
    for key in ("seed", "dataset.split_seed", "dataset.test_seed", "dataset.val_seed"):
        if key == "seed" or key.split(".")[1] in cfg.dataset:
            count(cfg, key, *SEEDS, why=" (numpy's seeds)")


def validate_names(cfg) -> None:
    """``dataset.name``, ``model.name`` and ``method.name`` say which option of the group was chosen; another name
    would make the run read keys that option does not have."""
    for group in ("dataset", "model", "method"):
        schema = OmegaConf.get_type(cfg[group])
        fields = {f.name: f.default for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else {}
        if isinstance(fields.get("name"), str) and cfg[group].name != fields["name"]:
            raise ConfigError(f"{group}.name", cfg[group].name,
                              f"{fields['name']} (choose another {group} with {group}=<option>, not with its name)")


def resolvable(cfg) -> None:
    """Every value is set (not ``???``) and every interpolation resolves: otherwise whatever reads the key first
    fails with a traceback. Names the key whose own value fails, not those that merely refer to it (``${seed}``)."""
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        return
    except OmegaConfBaseException:
        pass
    raw = dict(_leaves(OmegaConf.to_container(cfg, resolve=False)))
    failed = {}
    for key in raw:
        try:
            node = OmegaConf.select(cfg, key, throw_on_missing=True)
            if isinstance(node, ListConfig):
                OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
        except OmegaConfBaseException as err:
            failed[key] = err
    for key, err in failed.items():
        if not any(ref in failed for ref in re.findall(r"\$\{([\w.]+)\}", str(raw[key]))):
            if raw[key] == "???":
                raise ConfigError(key, raw[key], "a value (??? stands for none)")
            raise ConfigError(key, raw[key], f"an interpolation that resolves ({str(err).splitlines()[0]})")


def _leaves(node, prefix: str = ""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def validate(cfg: DictConfig) -> None:
    reject_unknown_keys(cfg)
    resolvable(cfg)
    validate_seeds(cfg)
    validate_names(cfg)
    validate_trainer(cfg)
    validate_device(cfg.device)
    validate_dataset(cfg)
    validate_model(cfg)
    validate_optim(cfg)
    validate_method(cfg)


def validate_trainer(cfg) -> None:
    for key in ("trainer.steps", "trainer.eval_interval", "trainer.log_interval"):
        positive(cfg, key)
    count(cfg, "trainer.num_threads", 1, 1024, optional=True)
    positive(cfg, "trainer.progress_interval", optional=True)
    positive(cfg, "trainer.checkpoint_interval", optional=True)
    one_of(cfg, "trainer.amp", ("none", "bf16", "fp16", "auto"))


def validate_device(device: str) -> None:
    if device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", device):
        raise ConfigError("device", device, "auto, cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("device", device, "auto or cpu: CUDA is not available on this machine")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError("device", device, f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")


def validate_dataset(cfg) -> None:
    data = cfg.dataset
    if data.name == "two_moons":
        count(cfg, "dataset.points_per_class", 1, 10**6)
        num_classes, num_points = 2, 2 * data.points_per_class
        at_least(cfg, "dataset.noise", 0)
        at_least(cfg, "dataset.weak_jitter", 0)
        at_least(cfg, "dataset.strong_jitter", 0)
        positive(cfg, "dataset.labeled_batch_size", optional=True)
        positive(cfg, "dataset.unlabeled_batch_size", optional=True)
    elif data.name == "cifar10":
        num_classes, num_points = 10, 50_000 - data.num_val
        if data.num_val < 0 or data.num_val % 10 or data.num_val > 25_000:
            raise ConfigError("dataset.num_val", data.num_val, "a multiple of 10 (drawn balanced) from 0 to 25000")
        one_of(cfg, "dataset.unlabeled", ("all", "rest"))
        for key in ("labeled_batch_size", "unlabeled_ratio", "eval_batch_size"):
            positive(cfg, f"dataset.{key}")
        count(cfg, "dataset.num_workers", 0, 64, why=" (worker processes a loader)")
        if not str(data.root).strip():
            raise ConfigError("dataset.root", data.root, "the folder that holds cifar-10-batches-py/")
        if not 0 <= data.randaugment_num_ops <= 14:
            raise ConfigError("dataset.randaugment_num_ops", data.randaugment_num_ops, "0 to 14 (RandAugment's ops)")
        one_of(cfg, "dataset.randaugment", ("official", "torchvision"))
        if data.randaugment == "official":
            from mpl_runner.data.randaugment import MAX_MAGNITUDE  # (torchvision: loaded only for CIFAR-10)

            top, scale = MAX_MAGNITUDE, "the official level; its _MAX_LEVEL is 10"
        else:
            top, scale = 30, "torchvision's scale"
        if not 0 <= data.randaugment_magnitude <= top:
            raise ConfigError("dataset.randaugment_magnitude", data.randaugment_magnitude, f"0 to {top} ({scale})")
        if not 0 <= data.cutout_size <= 32 or data.cutout_size % 2:
            raise ConfigError("dataset.cutout_size", data.cutout_size, "an even number of pixels from 0 to 32")
        fraction(cfg, "dataset.cutout_probability", closed=True)
        low_high = OmegaConf.to_container(data.cutout_scale)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in low_high)
        if len(low_high) != 2 or not numbers or not 0 <= low_high[0] <= low_high[1] <= 1:
            raise ConfigError("dataset.cutout_scale", low_high, "[low, high] with 0 <= low <= high <= 1")
    elif data.name == "digits":
        num_classes = 10
        validate_digits(cfg)
        num_points = DIGITS_IMAGES - data.test_size - data.num_val  # the training pool less the validation images
    else:
        raise ConfigError("dataset.name", data.name, "two_moons, cifar10 or digits")
    n = data.num_labeled
    if n < num_classes or n % num_classes or n > num_points:
        raise ConfigError(
            "dataset.num_labeled", n, f"a multiple of {num_classes} (the classes, drawn balanced) "
            f"from {num_classes} to {num_points} (the training set)"
        )
    if data.name in ("two_moons", "digits") and data.labeled_batch_size is not None and data.labeled_batch_size > n:
        raise ConfigError("dataset.labeled_batch_size", data.labeled_batch_size,
                          f"1 to {n} (dataset.num_labeled: a batch is drawn from them), or null for all of them")


DIGITS_IMAGES = 1797  # sklearn's load_digits


def validate_digits(cfg) -> None:
    data = cfg.dataset
    if not 10 <= data.test_size <= 1000:
        raise ConfigError("dataset.test_size", data.test_size, f"10 to 1000 (of the {DIGITS_IMAGES} images)")
    if data.num_val < 0 or data.num_val % 10 or data.num_val > DIGITS_IMAGES - data.test_size - 10:
        raise ConfigError(
            "dataset.num_val", data.num_val, f"a multiple of 10 (drawn balanced) from 0 to "
            f"{DIGITS_IMAGES - data.test_size - 10} (the training pool less 10 labeled images)"
        )
    for key in ("weak_shift", "strong_shift"):
        if not 0 <= data[key] < 4:
            raise ConfigError(f"dataset.{key}", data[key], "0 to 3 (pixels of an 8x8 image)")
    if not 0 <= data.cutout_size <= 8:
        raise ConfigError("dataset.cutout_size", data.cutout_size, "0 to 8 (pixels of an 8x8 image)")
    fraction(cfg, "dataset.strong_jitter")
    positive(cfg, "dataset.labeled_batch_size", optional=True)
    positive(cfg, "dataset.unlabeled_batch_size", optional=True)


def validate_model(cfg) -> None:
    if cfg.model.name == "mlp":
        sizes(cfg, "model.hidden_sizes", MAX_WIDTH, "layer sizes")
        one_of(cfg, "model.activation", sorted(ACTIVATIONS))
        fraction(cfg, "model.dropout")
        one_of(cfg, "model.init", ("default", "uniform"))
        positive(cfg, "model.init_scale")
    elif cfg.model.name == "wide_resnet":
        if not 10 <= cfg.model.depth <= 1000 or (cfg.model.depth - 4) % 6:
            raise ConfigError("model.depth", cfg.model.depth, "10, 16, 22, 28, ... (6n + 4) up to 1000")
        count(cfg, "model.widen_factor", 1, MAX_WIDTH // 64, why=" (the last stage has 64 x widen_factor channels)")
        fraction(cfg, "model.dropout")
        fraction(cfg, "model.bn_momentum", closed=True)
        positive(cfg, "model.bn_eps")
        at_least(cfg, "model.leaky_relu_slope", 0)
        count(cfg, "model.stem_width", 1, MAX_WIDTH)
    elif cfg.model.name == "small_cnn":
        sizes(cfg, "model.widths", MAX_WIDTH, "channel counts")
        fraction(cfg, "model.dropout")
        fraction(cfg, "model.bn_momentum", closed=True)
    else:
        raise ConfigError("model.name", cfg.model.name, "mlp, wide_resnet or small_cnn")
    validate_model_fits_data(cfg)


IMAGE_SIDES = {"cifar10": 32, "digits": 8}  # data sets of images: the side of their square images


def validate_model_fits_data(cfg) -> None:
    """Image models need images; WideResNet needs CIFAR's 3 x 32 x 32; each small_cnn stage halves the side."""
    model, data = cfg.model.name, cfg.dataset.name
    if model in ("wide_resnet", "small_cnn") and data not in IMAGE_SIDES:
        raise ConfigError("model", model, f"mlp for dataset={data} (2-D points, not images)")
    if model == "wide_resnet" and data != "cifar10":
        raise ConfigError(
            "model", model, f"small_cnn or mlp for dataset={data} (wide_resnet needs 3-channel 32x32 images: cifar10)"
        )
    if model == "small_cnn" and 2 ** len(cfg.model.widths) > IMAGE_SIDES[data]:
        stages = IMAGE_SIDES[data].bit_length() - 1
        raise ConfigError(
            "model.widths", list(cfg.model.widths),
            f"at most {stages} stages for dataset={data} ({IMAGE_SIDES[data]}x{IMAGE_SIDES[data]} images; each stage "
            "halves the side)",
        )


def validate_optimizer(cfg, prefix: str) -> None:
    """The keys an optimizer is built from (methods/optim.py): ``optim`` and ``method.finetune``."""
    one_of(cfg, f"{prefix}.name", ("sgd", "adam"))
    positive(cfg, f"{prefix}.lr")
    fraction(cfg, f"{prefix}.momentum")
    at_least(cfg, f"{prefix}.weight_decay", 0)
    one_of(cfg, f"{prefix}.schedule", ("constant", "cosine"))
    at_least(cfg, f"{prefix}.warmup_steps", 0)


def validate_optim(cfg) -> None:
    validate_optimizer(cfg, "optim")
    positive(cfg, "optim.grad_clip", optional=True)


def validate_method(cfg) -> None:
    method = cfg.method
    one_of(cfg, "method.name", ("supervised", "uda", "mpl"))
    fraction(cfg, "method.label_smoothing")
    if "uda" in method:
        at_least(cfg, "method.uda.weight", 0)
        positive(cfg, "method.uda.temperature")
        fraction(cfg, "method.uda.threshold", closed=True)
        at_least(cfg, "method.uda.ramp_steps", 0)
    if method.name != "mpl":
        return
    one_of(cfg, "method.variant", ("first_order", "exact"))
    one_of(cfg, "method.feedback", ("old_minus_new", "new_minus_old", "none"))
    one_of(cfg, "method.pseudo_label", ("argmax", "sample", "soft"))
    fraction(cfg, "method.baseline_decay", optional=True)
    positive(cfg, "method.student_lr", optional=True)
    if method.student_warmup_steps is not None:
        at_least(cfg, "method.student_warmup_steps", 0)
    fraction(cfg, "method.ema_decay", optional=True)
    validate_finetune(cfg)
    mpl_steps = cfg.trainer.steps - method.finetune.steps
    if not 0 <= method.student_wait_steps < mpl_steps:
        raise ConfigError(
            "method.student_wait_steps", method.student_wait_steps,
            f"0 to {mpl_steps - 1} (trainer.steps - method.finetune.steps - 1)",
        )
    if method.variant == "exact":
        validate_exact(cfg)
    elif method.pseudo_label == "soft" and method.feedback != "none":
        # (a first-order teacher term needs a hard label: CE(stop_grad(softmax(z)), z), what the official code
        # uses with soft labels, has gradient 0; with feedback=none, soft labels are what that code computes)
        raise ConfigError("method.pseudo_label", "soft", "argmax or sample with method.variant=first_order, "
                          "unless method.feedback=none")


def validate_finetune(cfg) -> None:
    finetune = cfg.method.finetune
    if not 0 <= finetune.steps < cfg.trainer.steps:
        raise ConfigError("method.finetune.steps", finetune.steps, f"0 to {cfg.trainer.steps - 1}")
    positive(cfg, "method.finetune.batch_size")
    if finetune.steps and finetune.batch_size > cfg.dataset.num_labeled:
        raise ConfigError("method.finetune.batch_size", finetune.batch_size,
                          f"1 to {cfg.dataset.num_labeled} (dataset.num_labeled: a batch is drawn from them)")
    validate_optimizer(cfg, "method.finetune")
    fraction(cfg, "method.finetune.label_smoothing")


def validate_exact(cfg) -> None:
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


def validate_overrides(cfg, overrides) -> None:
    """What only the command line shows: OmegaConf turns any number into a bool (``trainer.compile=2`` is true),
    and yes/no/on/off too; an override of a bool key must say true or false."""
    from hydra.core.override_parser.overrides_parser import OverridesParser  # (Hydra's own parser, as it read them)

    lines = OmegaConf.to_container(overrides) if isinstance(overrides, ListConfig) else list(overrides)  # (unresolved)
    for override in OverridesParser.create().parse_overrides(lines):
        if override.is_delete() or override.is_sweep_override():
            continue
        parent_key, _, name = override.key_or_group.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        node = parent._get_node(name) if isinstance(parent, DictConfig) and name in parent else None
        if isinstance(node, BooleanNode) and not node._is_interpolation() and not isinstance(override.value(), bool):
            raise ConfigError(override.key_or_group, override.value(), "true or false")


def validate_world(cfg, world) -> None:
    """Under torchrun: each global batch splits evenly over the ranks; exact MPL runs on one process only."""
    if not world.distributed:
        return
    data = cfg.dataset
    if data.name == "two_moons":
        sizes = {
            "dataset.labeled_batch_size": data.labeled_batch_size or data.num_labeled,
            "dataset.unlabeled_batch_size": data.unlabeled_batch_size or 2 * data.points_per_class,
        }
    elif data.name == "digits":  # a batch size of null means the whole set, as does an unlabeled one above it
        num_unlabeled = DIGITS_IMAGES - data.test_size - data.num_val
        sizes = {
            "dataset.labeled_batch_size": data.labeled_batch_size or data.num_labeled,
            "dataset.unlabeled_batch_size": min(data.unlabeled_batch_size or num_unlabeled, num_unlabeled),
        }
    else:
        sizes = {"dataset.labeled_batch_size": data.labeled_batch_size,
                 "dataset.unlabeled_ratio": data.unlabeled_ratio * data.labeled_batch_size}
    if cfg.method.name == "mpl" and cfg.method.finetune.steps:
        sizes["method.finetune.batch_size"] = cfg.method.finetune.batch_size
    for key, size in sizes.items():
        if size % world.size:
            raise ConfigError(key, _get(cfg, key), f"a global batch ({size}) divisible by the {world.size} ranks")
    if cfg.method.name == "mpl" and cfg.method.variant == "exact":
        raise ConfigError("method.variant", "exact", "first_order under torchrun (exact runs on one process)")
    on_cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
    if cfg.trainer.sync_batchnorm and not on_cuda:
        raise ConfigError("trainer.sync_batchnorm", True, "false on the CPU (PyTorch's SyncBatchNorm needs CUDA)")


def config_warnings(cfg, device_type: str, amp: str, distributed: bool) -> list[str]:
    """Settings that run, but hardly as meant: the run logs each once, as a warning (console and run.log).
    ``amp``: the precision ``trainer.amp`` resolved to on ``device_type``; ``distributed``: more than one process."""
    found = []
    if amp == "fp16" and device_type == "cpu":
        found.append("trainer.amp=fp16 on the CPU: float16 autocast is slower there than float32 (the default "
                     "two-moons run: about 2.7x); trainer.amp=auto picks none on the CPU")
    if cfg.trainer.sync_batchnorm and not distributed:
        found.append("trainer.sync_batchnorm=true on one process: there is nothing to synchronise (it acts under "
                     "torchrun or in a multi-task SLURM job)")
    method, optim = cfg.method, cfg.optim
    mpl = method.name == "mpl"
    steps = cfg.trainer.steps - (method.finetune.steps if mpl else 0)
    spans = "trainer.steps - method.finetune.steps" if mpl and method.finetune.steps else "trainer.steps"
    never = "the lr is still warming up when its schedule ends"
    teacher_warns = optim.warmup_steps >= steps
    if teacher_warns:
        found.append(f"optim.warmup_steps={optim.warmup_steps} >= the {steps} steps its lr schedule spans ({spans}): "
                     f"{never}")
    if mpl:
        student_steps = steps - method.student_wait_steps
        own = method.student_warmup_steps is not None
        warmup = method.student_warmup_steps if own else optim.warmup_steps
        if warmup >= student_steps and (own or not teacher_warns):
            setting = (f"method.student_warmup_steps={warmup}" if own else
                       f"optim.warmup_steps={warmup} (the student's too: method.student_warmup_steps=null)")
            found.append(f"{setting} >= the student's {student_steps} steps ({spans} - method.student_wait_steps): "
                         f"{never}")
        finetune = method.finetune
        if finetune.steps and finetune.warmup_steps >= finetune.steps:
            found.append(f"method.finetune.warmup_steps={finetune.warmup_steps} >= method.finetune.steps="
                         f"{finetune.steps}: {never}")
    return found

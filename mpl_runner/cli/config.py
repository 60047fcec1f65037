"""Typed schemas of the config groups that are not a registry of options (``optim``, ``trainer``) and of the root.

Schemas give types only (every field ``MISSING``): the YAML files under ``conf/`` hold every default, once. Each
YAML option starts from its schema (its defaults list names ``schema_<name>``), so a misspelt key or a value of
the wrong type is an error when Hydra composes the config, not a silent default. The schemas of ``dataset``,
``model`` and ``method`` options live beside their code (:mod:`mpl_runner.core.registry`); checks that need more than a
type live there too, and those spanning groups in :mod:`mpl_runner.gates.validate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigNode, ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from mpl_runner.core import registry
from mpl_runner.gates import resolvers
from mpl_runner.search import optuna as search
from mpl_runner.methods.optim import OptimizerConfig


@dataclass
class OptimConfig(OptimizerConfig):
    grad_clip: Optional[float] = MISSING  # max global grad norm of every update; None: off


@dataclass
class TrainerConfig:
    steps: int = MISSING
    eval_interval: int = MISSING
    log_interval: int = MISSING
    num_threads: Optional[int] = MISSING  # torch intra-op threads; None: torch's default
    amp: str = MISSING  # none | bf16 | fp16 (with a gradient scaler) | auto (CUDA: bf16 if supported, else fp16)
    channels_last: bool = MISSING  # NHWC memory layout for image models and batches
    progress: bool = MISSING  # one console line per evaluation (on a terminal: a progress bar; run.log: the lines)
    progress_interval: Optional[int] = MISSING  # also a line (losses, speed) every N steps; None: evaluations only
    checkpoint_interval: Optional[int] = MISSING  # checkpoints/last.pt every N steps (None: at the end); on SIGTERM
    resume: Optional[str] = MISSING  # a run dir: go on from its checkpoint, in that dir
    auto_resume: bool = MISSING  # a run dir that already holds a checkpoint (a requeued job) goes on from it
    skip_nonfinite: bool = MISSING  # drop (and count) updates whose loss or gradient is not finite, not stop
    compile: bool = MISSING  # torch.compile the trained forward passes (teacher, student)
    sync_batchnorm: bool = MISSING  # under torchrun: batch-norm statistics over the global batch (SyncBatchNorm)


@dataclass
class Config:
    dataset: Any = MISSING
    model: Any = MISSING
    student_model: Any = MISSING  # MPL's student (null: the same as model)
    method: Any = MISSING
    optim: OptimConfig = MISSING
    trainer: TrainerConfig = MISSING
    seed: int = MISSING
    device: str = MISSING  # auto | cpu | cuda | cuda:N


def register_configs() -> None:
    """Store every schema as ``<group>/schema_<name>`` (what the YAML defaults lists extend) and the root, and
    register our resolvers."""
    resolvers.register()
    search.register_search_configs()  # hydra/sweeper=optuna and its samplers
    cs = ConfigStore.instance()
    cs.store(name="schema_config", node=Config)
    cs.store(group="optim", name="schema_optim", node=OptimConfig)
    cs.store(group="trainer", name="schema_trainer", node=TrainerConfig)
    for group in ("dataset", "model", "method"):
        for name in registry.names(group):
            cs.store(group=group, name=f"schema_{name}", node={})  # (its place, then the node that loads it)
            cs.repo[group][f"schema_{name}.yaml"] = SchemaNode(group, name)


class SchemaNode(ConfigNode):
    """``<group>/schema_<option>`` in Hydra's ConfigStore, whose schema (and so the option's module, and whatever
    that imports) is read when Hydra first loads it: composing a config imports the modules of its options alone,
    and ``mpl-run --help`` or a mistyped key no module that needs torch."""

    def __init__(self, group: str, option: str):
        self.option = option
        super().__init__(name=f"schema_{option}.yaml", node=None, group=group, package=None, provider="mpl_runner")

    @property
    def node(self) -> DictConfig:
        if self._node is None:
            self._node = OmegaConf.structured(registry.entry(self.group, self.option).schema)
        return self._node

    @node.setter
    def node(self, value: DictConfig | None) -> None:
        self._node = value


def compose_config(*overrides: str) -> DictConfig:
    """The config ``mpl-run`` composes from conf/ with ``overrides``, outside a running ``mpl-run`` (scripts, tests)."""
    register_configs()
    with initialize_config_module("mpl_runner.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))

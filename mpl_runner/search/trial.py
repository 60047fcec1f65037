"""The trial side of a search with a pruner (``hydra/sweeper/pruner=median``, ...; the sweeper:
:mod:`mpl_runner.search.optuna`).

The sweeper gives each job its trial through the job's Hydra config (``hydra.sweeper.trial_id``, with the study's
``storage`` and ``study_name``), so a job in another process (joblib, submitit) reaches the same trial through the
study's storage. At every evaluation the job reports ``val/acc`` there and asks the pruner; a pruned trial raises
:class:`TrialPruned`, which the run records (``metrics.json``: ``status: "pruned"``) and ``mpl-run`` turns into a
:class:`Pruned` return value (exit 0), which the sweeper tells Optuna as PRUNED. Outside such a search nothing here
imports Optuna.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import OmegaConf


class TrialPruned(Exception):
    """The pruner stopped this trial after ``step`` (its last ``val/acc``: ``value``)."""

    def __init__(self, step: int, value: float):
        self.step, self.value = step, value
        super().__init__(f"pruned after step {step} (val/acc {100 * value:.2f}%)")


@dataclass
class Pruned:
    """What a pruned trial's job returns to the sweeper (in place of val/acc; picklable for submitit)."""

    step: int
    value: float


class TrialReporter:
    """A search trial, reached through its study's storage by trial id."""

    def __init__(self, storage: str, study_name: str, trial_id: int, pruner: Any):
        self.storage, self.study_name, self.trial_id, self.pruner_conf = storage, study_name, trial_id, pruner
        self._trial = None

    @classmethod
    def from_cfg(cls, cfg: Any = None) -> Optional["TrialReporter"]:
        """This job's trial, or None: a run outside a search, or a search without a pruner. (``cfg``, the task
        config, holds nothing of the search: the sweeper's keys are in the job's Hydra config.)"""
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        sweeper = HydraConfig.get().get("sweeper") or {}
        if sweeper.get("trial_id") is None:
            return None
        return cls(str(sweeper.storage), str(sweeper.study_name), int(sweeper.trial_id),
                   OmegaConf.to_container(sweeper.pruner, resolve=True))

    def _optuna_trial(self):
        if self._trial is None:
            import optuna
            from hydra.utils import instantiate

            from mpl_runner.search.optuna import open_storage

            study = optuna.load_study(study_name=self.study_name, storage=open_storage(self.storage),
                                      pruner=instantiate(self.pruner_conf))
            self._trial = optuna.Trial(study, self.trial_id)
        return self._trial

    def report(self, step: int, val_acc: float) -> bool:
        """Report ``val/acc`` after ``step``; True where the pruner stops the trial."""
        trial = self._optuna_trial()
        trial.report(val_acc, step)
        return trial.should_prune()

    def after_evaluation(self, step: int, accs: dict) -> None:
        """The engine's evaluation at ``step`` (``accs``: what it measured, val/acc among it: every evaluation
        reads the validation split, which a search requires); raises :class:`TrialPruned` where the pruner stops
        the trial."""
        value = accs["val/acc"]
        if self.report(step, value):
            raise TrialPruned(step, value)

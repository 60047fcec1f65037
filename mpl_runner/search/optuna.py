"""Hyperparameter search: a Hydra sweeper on Optuna's ask-and-tell interface (``hydra/sweeper=optuna``).

Each batch asks ``n_jobs`` trials, launches them as jobs of the multirun through the configured launcher (basic,
joblib, submitit) and tells each its value: what the job returns (``mpl-run``: val/acc). ``n_trials`` counts the
study's completed (and pruned) trials, so the same command again (same storage and study_name) runs only the
remainder. Several sweeps (workers) may share a stored study: each writes a heartbeat for its running trials
(:class:`Heartbeat`), a trial whose heartbeat stopped is marked FAIL and replaced (:func:`fail_stale`), and each
counts the others' running trials against n_trials (``heartbeat_interval=null``: every trial found RUNNING is left
over, one sweep per study). A job that fails (a crash, a diverged run) is told FAIL and the search goes on; it
stops once ``max_failures`` trials of this sweep failed (null: 20 % of n_trials, rounded up), with one line naming
them. Jobs are numbered by their trial's number.

Pruning (``hydra/sweeper/pruner``: none, median, percentile, successive_halving, hyperband, with Optuna's options as
keys): each job gets its trial through its Hydra config (``hydra.sweeper.trial_id``, ``study_name``, ``storage``),
reports val/acc to it through the study's storage at every evaluation, in its own process whatever the launcher,
and stops when the pruner says so (:mod:`mpl_runner.search.trial`); such a job returns
:class:`mpl_runner.search.trial.Pruned` and is told PRUNED. Steps are training steps (``n_warmup_steps``, ``min_resource``).

The search space: ``hydra.sweeper.params`` and the sweep overrides of the command line (which take precedence), in
Hydra's override grammar::

    interval(a, b)             FloatDistribution(a, b); tag(log, interval(a, b)): log=True
    range(a, b[, step])        IntDistribution, b left out as in Hydra (tag(log, ...) with step 1); with a float:
                               FloatDistribution with that step
    choice(x, y), x,y          CategoricalDistribution, as shuffle(range(...))

A plain value goes to every trial as it is. Storage: null (in memory), an RDB URL (``sqlite:///study.db``) or
``journal:<file>`` (Optuna's journal file, for clusters without a database server).
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import MISSING, DictConfig, OmegaConf

from mpl_runner.core.errors import ConfigError, JobFailed, UserError, one_line
from mpl_runner.core.files import atomic_write_bytes

log = logging.getLogger(__name__)

JOURNAL = "journal:"
STORAGES = ("null (in memory), an RDB URL (sqlite:///study.db, postgresql://user@host/db, ...) or journal:<file> "
            "(an Optuna journal file, for clusters without a database server)")
GRAMMAR = "interval(a, b), tag(log, interval(a, b)), range(a, b[, step]), choice(x, y, ...) or a plain value"
RESULTS = "optimization_results.yaml"


class Direction(Enum):
    maximize = 1
    minimize = 2


@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: Optional[int] = None
    n_startup_trials: int = 10
    multivariate: bool = False
    constant_liar: Optional[bool] = None  # null: on where trials run at once (n_jobs > 1): they keep apart


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: Optional[int] = None


@dataclass
class QMCSamplerConf:
    _target_: str = "optuna.samplers.QMCSampler"
    seed: Optional[int] = None
    qmc_type: str = "sobol"
    scramble: bool = True


@dataclass
class GPSamplerConf:
    _target_: str = "optuna.samplers.GPSampler"
    seed: Optional[int] = None
    n_startup_trials: int = 10


SAMPLERS = {"tpe": TPESamplerConf, "random": RandomSamplerConf, "qmc": QMCSamplerConf, "gp": GPSamplerConf}
#: samplers whose state is in the study's storage (QMC: its sequence's position): a resume keeps their seed
STORED_STATE = ("optuna.samplers.QMCSampler",)


@dataclass
class NoPrunerConf:
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class MedianPrunerConf:
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5  # trials that run to the end before any is pruned
    n_warmup_steps: int = 0  # training steps before a trial can be pruned
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class PercentilePrunerConf(MedianPrunerConf):
    _target_: str = "optuna.pruners.PercentilePruner"
    percentile: float = 25.0  # the best percentile % of the trials at a step go on


@dataclass
class SuccessiveHalvingPrunerConf:
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"  # training steps of the first rung ("auto": from the first trial that completes)
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


@dataclass
class HyperbandPrunerConf:
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1  # training steps
    max_resource: Any = "auto"  # training steps ("auto": those of the first trial that completes)
    reduction_factor: int = 3
    bootstrap_count: int = 0


PRUNERS = {"none": NoPrunerConf, "median": MedianPrunerConf, "percentile": PercentilePrunerConf,
           "successive_halving": SuccessiveHalvingPrunerConf, "hyperband": HyperbandPrunerConf}


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.mpl_runner_search.OptunaSweeper"
    _recursive_: bool = False  # the sampler is made in sweep(), its seed moved on by the trials a study has
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])
    sampler: Any = MISSING
    pruner: Any = MISSING  # hydra/sweeper/pruner: see PRUNERS
    direction: Direction = Direction.maximize
    study_name: Optional[str] = None  # null: a new study each time (a persistent storage resumes one by its name)
    storage: Optional[str] = None  # see STORAGES
    n_trials: int = 20  # completed (or pruned) trials the study ends with, those of earlier runs included
    n_jobs: int = 1  # trials asked and launched together
    max_failures: Optional[int] = None  # failed trials that stop this sweep (null: 20 % of n_trials, rounded up)
    # seconds between the heartbeats of a stored study's running trials; a trial without one for 3 intervals is
    # taken for dead (its worker killed) and replaced. null: every trial found running at the start is taken for
    # dead (one sweep per study at a time)
    heartbeat_interval: Optional[int] = 30
    params: Optional[Dict[str, Any]] = None  # key: Hydra's override grammar (see the module's docstring)
    # set by the sweeper for each job of a search with a pruner (mpl_runner/search/trial.py)
    trial_id: Optional[int] = None


def register_search_configs() -> None:
    """Store ``hydra/sweeper: basic`` (:mod:`mpl_runner.search.sweep`), ``hydra/sweeper: optuna``,
    ``hydra/sweeper/sampler: tpe | random | qmc | gp`` and ``hydra/sweeper/pruner: none | median | ...``
    (:data:`PRUNERS`) in Hydra's ConfigStore and make the sweeper known to Hydra (it scans ``hydra_plugins``, but not an editable install's)."""
    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()  # (first: its scan may import the module below)
    from hydra_plugins.mpl_runner_search import BasicSweeper, OptunaSweeper
    from mpl_runner.search.sweep import register_sweeper_config

    register_sweeper_config()  # hydra/sweeper=basic, the default: every job checked first
    plugins.register(BasicSweeper)
    cs = ConfigStore.instance()
    cs.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="mpl_runner")
    for name, node in SAMPLERS.items():
        cs.store(group="hydra/sweeper/sampler", name=name, node=node, provider="mpl_runner")
    for name, node in PRUNERS.items():
        cs.store(group="hydra/sweeper/pruner", name=name, node=node, provider="mpl_runner")
    plugins.register(OptunaSweeper)


def check_storage(storage: Optional[str]) -> None:
    """Refuse a ``hydra.sweeper.storage`` that is none of :data:`STORAGES` (without opening it)."""
    if storage is None or (storage.startswith(JOURNAL) and storage[len(JOURNAL):].strip()):
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(storage).get_dialect()  # (an unknown database: NoSuchModuleError, an ArgumentError)
    except (ArgumentError, ValueError):
        raise ConfigError("hydra.sweeper.storage", storage, STORAGES) from None


def open_storage(storage: Optional[str]) -> Any:
    """The Optuna storage :func:`check_storage` allowed (the folder of a SQLite or journal file exists by then:
    :func:`check_storage_folder`)."""
    import optuna

    if storage is None:
        return None
    try:
        if storage.startswith(JOURNAL):
            path = Path(storage[len(JOURNAL):].strip()).expanduser()
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
        return optuna.storages.RDBStorage(storage)
    except Exception as err:  # noqa: BLE001 - a missing driver, a database that refuses, a file that is none
        raise UserError(f"hydra.sweeper.storage={storage!r}: cannot open the study's storage: {one_line(err)}") from err


def check_storage_folder(storage: Optional[str], sweep_dir: Path) -> None:
    """A storage file goes into a folder that exists, or into the sweep dir (which the sweep makes); no other
    folder is made for it."""
    from mpl_runner.record.run_dirs import storage_path

    path = storage_path(storage) if storage else None
    if path is None:
        return
    folder = Path(os.path.abspath(path)).parent
    if not folder.is_dir() and folder != Path(os.path.abspath(sweep_dir)):
        raise ConfigError("hydra.sweeper.storage", storage, f"a file in a folder that exists, or in the sweep dir "
                                                            f"(${{hydra.sweep.dir}}/...): there is no {folder}")


def corners(space: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Points of the search space that :func:`mpl_runner.search.sweep.check_jobs` checks before a trial runs: every
    range at its low end, every range at its high end, and each choice once (the rest at the low end)."""
    from optuna.distributions import CategoricalDistribution

    def end(dist, high: bool):
        if isinstance(dist, CategoricalDistribution):
            return dist.choices[-1 if high else 0]
        return dist.high if high else dist.low

    low = {key: end(dist, False) for key, dist in space.items()}
    points = [low, {key: end(dist, True) for key, dist in space.items()}]
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            points += [{**low, key: choice} for choice in dist.choices[1:-1]]
    unique = []
    for point in points:
        if point not in unique:
            unique.append(point)
    return unique


def distribution(override: Override, where: str) -> Any:
    """The Optuna distribution of a sweep override (``where``: the key the error names)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    tags = set(getattr(value, "tags", ()))
    logarithmic = "log" in tags
    try:
        if tags - {"log"}:
            raise ValueError(f"a tag other than log: {', '.join(sorted(tags - {'log'}))}")
        if isinstance(value, IntervalSweep):
            return FloatDistribution(value.start, value.end, log=logarithmic)
        if isinstance(value, RangeSweep) and not value.shuffle:
            values = list(override.sweep_iterator())
            if not values:
                raise ValueError("the range is empty")
            low, step = min(values), abs(value.step)
            if all(isinstance(x, int) for x in (value.start, value.stop, value.step)):
                return IntDistribution(low, max(values), log=logarithmic, step=step)
            if logarithmic:
                raise ValueError("log applies to interval(...) and a range of ints")
            return FloatDistribution(low, low + step * (len(values) - 1), step=step)
        if logarithmic:
            raise ValueError("log applies to interval(...) and a range of ints")
        if isinstance(value, (ChoiceSweep, RangeSweep)):
            return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
        raise ValueError(f"{type(value).__name__.lower()}(...) is none of them")
    except (ValueError, TypeError) as err:
        raise ConfigError(where, override.input_line.split("=", 1)[1], f"{GRAMMAR} ({err})") from None


def search_space(params: Optional[Dict[str, Any]], arguments: List[str]) -> tuple[Dict[str, Any], List[str]]:
    """(distribution by override key, the overrides every trial gets) from ``hydra.sweeper.params`` and the
    command line's overrides: a sweep there (``seed=0,1``) is a search param too, and takes precedence."""
    parser = OverridesParser.create()
    lines = [(f"hydra.sweeper.params.{key}", f"{key}={'null' if value is None else value}")
             for key, value in (params or {}).items()]
    space: Dict[str, Any] = {}
    fixed: Dict[str, str] = {}
    for where, line in [*lines, *((None, a) for a in arguments)]:
        override = parser.parse_override(line)
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            space[key] = distribution(override, where or key)
        else:
            fixed[key] = line
    return space, list(fixed.values())


class OptunaSweeperImpl(Sweeper):
    """The sweeper; Hydra instantiates its subclass in ``hydra_plugins.mpl_runner_search`` (see
    :class:`OptunaSweeperConf` for the config)."""

    def __init__(self, sampler: Any, direction: Any, study_name: Optional[str], storage: Optional[str],
                 n_trials: int, n_jobs: int, params: Optional[DictConfig], pruner: Any = None,
                 max_failures: Optional[int] = None, trial_id: Optional[int] = None,
                 heartbeat_interval: Optional[int] = None):
        for key, count, least in (("n_trials", n_trials, 1), ("n_jobs", n_jobs, 1),
                                  ("max_failures", 1 if max_failures is None else max_failures, 1),
                                  ("heartbeat_interval", 1 if heartbeat_interval is None else heartbeat_interval, 1)):
            if count < least:
                raise ConfigError(f"hydra.sweeper.{key}", count, f">= {least}")
        check_storage(storage)
        self.sampler, self.study_name, self.storage = sampler, study_name, storage
        self.pruner = OmegaConf.to_container(pruner, resolve=True) if isinstance(pruner, DictConfig) else pruner
        self.direction = direction.name if isinstance(direction, Direction) else str(direction)
        self.n_trials, self.n_jobs, self.heartbeat_interval = n_trials, n_jobs, heartbeat_interval
        self.max_failures = math.ceil(0.2 * n_trials) if max_failures is None else max_failures
        self.params = OmegaConf.to_container(params) if isinstance(params, DictConfig) else params
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.launcher = None

    @property
    def prunes(self) -> bool:
        return bool(self.pruner) and self.pruner.get("_target_") != NoPrunerConf._target_

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> None:
        from mpl_runner.search import sweep

        sweep.check_launcher(self.config)
        space, fixed = search_space(self.params, arguments)
        if not space:
            raise ConfigError("hydra.sweeper.params", self.params, "a search space: at least one key with "
                              f"{GRAMMAR.rsplit(' or ', 1)[0]} (there or on the command line); without one, every "
                              "trial would run the same config")
        sweep_dir = Path(self.config.hydra.sweep.dir)
        check_storage_folder(self.storage, sweep_dir)
        self.check_pruner()
        check_workers(self.storage)
        points = [[*fixed, *(f"{key}={value}" for key, value in point.items())] for point in corners(space)]
        dirs = sweep.check_jobs(self.hydra_context, self.config, points, what="search corner", check_dirs=False)
        check_existing_study(self.storage, self.study_name, self.direction, space)
        if sweep.DRY_RUN:
            sweep.list_jobs(points, [d.parent / "<trial>" for d in dirs], what="search corner")
            return
        with sweep.sweep_lock(sweep_dir):
            OmegaConf.save(self.config, sweep_dir / "multirun.yaml")  # (as Hydra's basic sweeper: the command)
            self._search(space, fixed, sweep_dir)

    def check_pruner(self) -> None:
        """A pruner Optuna accepts with these options, and a storage the trials' processes reach it through."""
        if not self.prunes:
            return
        name = next((k for k, v in PRUNERS.items() if v._target_ == self.pruner.get("_target_")), "?")
        try:
            instantiate(self.pruner)
        except Exception as err:  # noqa: BLE001 - Optuna's ValueError, wrapped by Hydra's InstantiationException
            cause = err.__cause__ or err
            options = {k: v for k, v in self.pruner.items() if k != "_target_"}
            raise ConfigError(f"hydra.sweeper.pruner ({name})", options, f"options {name} takes "
                              f"({one_line(cause).split(': ', 1)[-1]})") from None
        if self.storage is None:
            raise ConfigError("hydra.sweeper.storage", None, f"a stored study with a pruner (hydra/sweeper/pruner="
                              f"{name}): each trial reports to it from its own process; e.g. "
                              "journal:${hydra.sweep.dir}/optuna.log or sqlite:///${hydra.sweep.dir}/optuna.db")

    def _sampler(self, study: Any) -> Any:
        """The configured sampler. A resumed study's sampler whose state is not in the storage starts from seed +
        its trial count (the same seed again would ask for the points the first run began with); one whose state
        is (QMC: one scrambled sequence for the whole study) keeps its seed."""
        seed = self.sampler.get("seed")
        target = self.sampler.get("_target_")
        options: Dict[str, Any] = {}
        if seed is not None and target not in STORED_STATE:
            options["seed"] = seed + len(study.trials)
        if "constant_liar" in self.sampler and self.sampler.get("constant_liar") is None:
            options["constant_liar"] = self.n_jobs > 1
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*constant_liar.*")
            return instantiate(self.sampler, **options)

    def _search(self, space: Dict[str, Any], fixed: List[str], sweep_dir: Path) -> None:
        import optuna
        from optuna.trial import TrialState

        storage = open_storage(self.storage)
        study = optuna.create_study(storage=storage, study_name=self.study_name, direction=self.direction,
                                    load_if_exists=True)
        if study.direction.name.lower() != self.direction:  # (check_existing_study said so before; a race)
            raise ConfigError("hydra.sweeper.direction", self.direction,
                              f"{study.direction.name.lower()}, the direction of study {study.study_name!r} in "
                              "that storage")
        study.sampler = self._sampler(study)
        if self.prunes:
            study.pruner = instantiate(self.pruner)
        beat = Heartbeat(storage, self.heartbeat_interval) if storage is not None and self.heartbeat_interval else None
        if beat is None:  # (no heartbeats: no other sweep runs this study, so what is running was left over)
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                log.warning(f"trial {trial.number} of study {study.study_name!r} was left running (an interrupted "
                            "sweep): marked failed, another trial takes its place")
                study.tell(trial.number, state=TrialState.FAIL)
        done = finished(study)
        log.info(f"study {study.study_name!r}: {done} of {self.n_trials} trials done; {max(self.n_trials - done, 0)} "
                 f"to run, {self.n_jobs} at a time; search space: {', '.join(space) or 'none'}"
                 + (f"; pruner {self.pruner['_target_'].rsplit('.', 1)[-1]}" if self.prunes else ""))
        failures: List[str] = []  # "<trial number>: <its error, one line>"
        with beat or contextlib.nullcontext():
            while trials := self._next_trials(study, space, beat):
                self._run(study, trials, fixed, space, sweep_dir, failures)
                if beat is not None:
                    beat.forget(trials)
        self.written(study, sweep_dir, pictures=True)

    def _next_trials(self, study: Any, space: Dict[str, Any], beat: Optional["Heartbeat"]) -> List[Any]:
        """Up to n_jobs new trials, as many as n_trials leaves once the finished trials and those running (in other
        workers, whose heartbeats are alive) are counted; none when the study has its n_trials. While the trials
        running elsewhere would make up n_trials, this waits: one of them may fail (or its worker die)."""
        from optuna.trial import TrialState

        waited = False
        while True:
            if beat is not None:
                fail_stale(study, beat.grace)
            done = finished(study)
            if done >= self.n_trials:
                return []
            running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
            if self.n_trials - done - running > 0 or beat is None:
                break
            if not waited:
                log.info(f"study {study.study_name!r}: {done} trials done and {running} running in other workers "
                         f"make up n_trials={self.n_trials}; waiting in case one of them fails")
                waited = True
            time.sleep(min(beat.interval, WAIT_POLL_S))
        trials = []
        for _ in range(min(self.n_jobs, self.n_trials - done - running)):
            trial = study.ask(space)
            if beat is not None:
                beat.add(trial)
            trials.append(trial)
        if beat is None:
            return trials
        # Two workers may ask at once: a trial with n_trials finished or running trials before it is one too many.
        alive = [t.number for t in study.get_trials(deepcopy=False, states=(
            TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))]
        kept = []
        for trial in trials:
            if sum(number < trial.number for number in alive) >= self.n_trials:
                trial.set_user_attr("error", "not run: other workers' trials made up n_trials")
                study.tell(trial, state=TrialState.FAIL)
                beat.forget([trial])
            else:
                kept.append(trial)
        return kept

    def _run(self, study: Any, trials: List[Any], fixed: List[str], space: Dict[str, Any], sweep_dir: Path,
             failures: List[str]) -> None:
        """Launch ``trials`` as jobs and tell each its outcome; stop the search at max_failures."""
        from optuna.trial import TrialState

        from mpl_runner.gates.messages import one_line_error
        from mpl_runner.record.run_dirs import hydra_quote
        from mpl_runner.search.trial import Pruned

        batch = [[*fixed, *(f"{key}={trial.params[key]}" for key in space)] for trial in trials]
        if self.prunes:  # (the job reaches its trial through the storage: mpl_runner/search/trial.py)
            batch = [[*job, f"hydra.sweeper.trial_id={trial._trial_id}",
                      f"hydra.sweeper.study_name={hydra_quote(study.study_name)}",
                      f"hydra.sweeper.storage={hydra_quote(self.storage)}"] for job, trial in zip(batch, trials)]
        try:
            self.validate_batch_is_legal(batch)
            returns = self.launcher.launch(batch, initial_job_idx=trials[0].number)
        except BaseException:  # a config Hydra refuses, an interrupt: these trials did not run to the end
            for trial in trials:
                study.tell(trial, state=TrialState.FAIL)
            raise
        for trial, ret in zip(trials, returns):
            job_dir = OmegaConf.select(ret.hydra_cfg or {}, "hydra.runtime.output_dir")
            if job_dir is not None:
                trial.set_user_attr("job_dir", str(job_dir))
            try:
                value = ret.return_value  # (a failed job: raises its error)
                if isinstance(value, Pruned):
                    study.tell(trial, state=TrialState.PRUNED)
                    continue
                if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
                    raise JobFailed(f"job {trial.number} ({job_dir}) returned {value!r}, not a number to "
                                    "optimise")
            except Exception as err:  # noqa: BLE001 - the search goes on (Optuna's catch), up to max_failures
                line = one_line_error(err) or (str(err) if isinstance(err, JobFailed) else one_line(err))
                trial.set_user_attr("error", line)
                study.tell(trial, state=TrialState.FAIL)
                failures.append(f"{trial.number}: {line}")
                log.warning(f"trial {trial.number} failed ({len(failures)} of hydra.sweeper.max_failures="
                            f"{self.max_failures}); the search goes on: {line}")
            else:
                study.tell(trial, float(value))
        stopped = len(failures) >= self.max_failures
        self.written(study, sweep_dir, pictures=stopped)
        if stopped:
            raise UserError(f"the search stopped: {len(failures)} trials failed (hydra.sweeper.max_failures="
                            f"{self.max_failures}): trial {'; trial '.join(failures)}"[:2000])

    def written(self, study: Any, sweep_dir: Path, pictures: bool = False) -> None:
        """``optimization_results.yaml`` and the sweep report brought up to date; ``pictures``: with the study's
        section and pictures (when the search ends: drawing them takes seconds)."""
        from mpl_runner.search.report import write_report

        write_results(study, sweep_dir, self.storage)
        try:
            write_report(sweep_dir, study=study if pictures else None)
        except Exception as err:  # noqa: BLE001 - a report that cannot be drawn does not stop the search
            log.warning(f"the sweep report was not written: {one_line(err)}")


#: the trial system attr a worker's heartbeat writes: unix time
HEARTBEAT = "mpl_runner:heartbeat"
#: seconds between two looks at the study while other workers' trials would make up n_trials: the worker leaves
#: this soon after the last of them ends (sleeping a heartbeat interval, 30 s, there held the first of two workers
#: idle for up to 30 s: 2 workers ran 8 digits trials in 135 s, against 192 s for one)
WAIT_POLL_S = 1.0


class Heartbeat:
    """While this worker's trials run, their heartbeat in the study's storage every ``interval`` seconds (a
    thread), so other workers tell a live worker's trials from those of a worker that died (:func:`fail_stale`).
    For RDB and journal storages alike: a trial system attr."""

    def __init__(self, storage: Any, interval: float):
        self.storage, self.interval, self.grace = storage, interval, 3 * interval
        self.ids: set[int] = set()
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="mpl-run heartbeat", daemon=True)

    def add(self, trial: Any) -> None:
        with self._lock:
            self.ids.add(trial._trial_id)
        self._beat(trial._trial_id)

    def forget(self, trials: List[Any]) -> None:
        with self._lock:
            self.ids -= {t._trial_id for t in trials}

    def _beat(self, trial_id: int) -> None:
        try:
            self.storage.set_trial_system_attr(trial_id, HEARTBEAT, time.time())
        except Exception:  # noqa: BLE001 - told meanwhile (finished trials take no attrs), or a storage hiccup
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                ids = list(self.ids)
            for trial_id in ids:
                self._beat(trial_id)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def fail_stale(study: Any, grace: float) -> None:
    """Mark FAIL the running trials whose worker is gone: no heartbeat for ``grace`` seconds (or none, ``grace``
    seconds after it started: a sweep killed between asking and its first heartbeat, or one without heartbeats)."""
    import datetime

    from optuna.trial import TrialState

    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        last = trial.system_attrs.get(HEARTBEAT)
        started = (datetime.datetime.now() - trial.datetime_start).total_seconds() if trial.datetime_start else grace
        if (now - last if last is not None else started) <= grace:
            continue
        why = "no heartbeat" if last is None else f"no heartbeat for {now - last:.0f} s"
        log.warning(f"trial {trial.number} of study {study.study_name!r} was left running ({why}: its sweep is "
                    "gone): marked failed, another trial takes its place")
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except Exception:  # noqa: BLE001 - another worker told it first
            pass


def check_workers(storage: Optional[str]) -> None:
    """An in-memory study cannot be shared: refused where this process is one of several workers (a SLURM array)."""
    tasks = os.environ.get("SLURM_ARRAY_TASK_COUNT")
    if storage is None and tasks is not None and tasks.isdigit() and int(tasks) > 1:
        raise ConfigError("hydra.sweeper.storage", None, f"a storage the {tasks} workers of this SLURM array share "
                          "(an RDB URL or journal:<file> on a shared disk): in memory, each would run a study of "
                          "its own")


def check_existing_study(storage: Optional[str], study_name: Optional[str], direction: str,
                         space: Dict[str, Any]) -> None:
    """A stored study of that name goes on only with the same direction and search space (a resume would mix
    trials of two searches); checked before anything is written (a storage file that is not there yet holds no
    study, and is not made here)."""
    from mpl_runner.record.run_dirs import storage_path

    if storage is None or study_name is None:
        return
    path = storage_path(storage)
    if path is not None and not path.is_file():
        return
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    except KeyError:  # (no such study in that storage)
        return
    where = f"study {study_name!r} in {storage}; another study_name starts a new study"
    if study.direction.name.lower() != direction:
        raise ConfigError("hydra.sweeper.direction", direction, f"{study.direction.name.lower()}, the direction of "
                          f"{where}")
    stored: Dict[str, Any] = {}
    for trial in study.get_trials(deepcopy=False):
        for key, dist in trial.distributions.items():
            stored.setdefault(key, dist)
    if not stored:
        return
    for key in sorted(set(stored) | set(space)):
        if stored.get(key) != space.get(key):
            raise ConfigError(f"hydra.sweeper.params.{key}", shown(space.get(key)),
                              f"{shown(stored.get(key))}, its range in {where}")


def shown(dist: Any) -> str:
    """An Optuna distribution in the params grammar (None: not in the space)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if dist is None:
        return "(not searched)"
    if isinstance(dist, CategoricalDistribution):
        return f"choice({', '.join(map(str, dist.choices))})"
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        if dist.step not in (None, 1) or isinstance(dist, IntDistribution):
            text = f"range({dist.low}, {dist.high}, {dist.step}) (high included)"
        else:
            text = f"interval({dist.low}, {dist.high})"
        return f"tag(log, {text})" if dist.log else text
    return repr(dist)


def finished(study: Any) -> int:
    """Trials that ran to their end or to the pruner's stop (what n_trials counts; failed ones are replaced)."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def complete(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def write_results(study: Any, sweep_dir: Path, storage: Optional[str] = None) -> None:
    """``optimization_results.yaml`` in the sweep dir: the best trial so far (as hydra-optuna-sweeper wrote it),
    the trial counts, and where the study is (``mpl-report`` opens it there; null: in memory)."""
    import yaml
    from optuna.trial import TrialState

    from mpl_runner.record.run_dirs import storage_path

    path = storage_path(storage) if storage else None
    if path is not None:  # (mpl-report may run elsewhere)
        storage = storage.replace(str(path), os.path.abspath(path), 1) if str(path) in storage else storage
    results = {"name": "optuna", "study_name": study.study_name, "direction": study.direction.name.lower(),
               "storage": storage}
    if complete(study):
        best = study.best_trial
        results.update({"best_trial": best.number, "best_value": best.value, "best_params": dict(best.params)})
    results.update({"trials_complete": complete(study),
                    "trials_pruned": len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))),
                    "trials_failed": len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))})
    atomic_write_bytes(sweep_dir / RESULTS, yaml.safe_dump(results, sort_keys=False).encode())

"""The search sweeper (mpl_runner/search/optuna.py, hydra/sweeper=optuna): stored studies resume without repeating
finished trials, interrupted trials are replaced, the params grammar becomes Optuna distributions, bad settings are one line."""

from __future__ import annotations

import csv
import json
import signal
import threading
import time

import optuna
import pytest
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from conftest import REPO, TINY, cli_in_process, job_dirs
from mpl_runner.loop import run as run_module
from mpl_runner.search.report import main as report_main
from mpl_runner.search.optuna import SAMPLERS, search_space
from mpl_runner.core.signals import Interrupted

COMPLETE, FAIL = TrialState.COMPLETE, TrialState.FAIL


def search(tmp_path, monkeypatch, capsys, storage: str, n_trials: int, *extra: str) -> tuple[int, str, str]:
    """``mpl-run hparams_search=two_moons_optuna`` (tiny jobs) into ``tmp_path/sweep``, in this process."""
    return cli_in_process(["hparams_search=two_moons_optuna", *TINY, f"hydra.sweeper.storage={storage}",
                           f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweep.dir={tmp_path / 'sweep'}", *extra],
                          tmp_path, monkeypatch, capsys)


def study(storage) -> optuna.Study:
    return optuna.load_study(study_name="two_moons_mpl", storage=storage)


def test_a_stored_study_resumes_without_repeating_finished_trials_and_replaces_one_left_running(
        tmp_path, monkeypatch, capsys):
    sweep, url = tmp_path / "sweep", f"sqlite:///{tmp_path}/sweep/optuna.db"
    status, _, stderr = search(tmp_path, monkeypatch, capsys, url, 2, "hydra.sweeper.n_jobs=2")  # one batch of 2
    assert status == 0, stderr
    assert [t.state for t in study(url).trials] == [COMPLETE, COMPLETE]
    study(url).ask()  # trial 2: as a sweep killed while it ran leaves it (RUNNING)

    status, _, stderr = search(tmp_path, monkeypatch, capsys, url, 3, "hydra.sweeper.heartbeat_interval=null")
    assert status == 0, stderr  # (the same command, one trial more; without heartbeats, what runs is left over)
    trials = study(url).trials
    assert [t.state for t in trials] == [COMPLETE, COMPLETE, FAIL, COMPLETE]  # exactly one more trial ran
    assert [j.name.split("_")[0] for j in job_dirs(sweep)] == ["0", "1", "3"]  # job number = trial number
    assert trials[3].params != trials[0].params  # (a resumed seeded sampler does not ask for its first points again)
    assert trials[3].user_attrs["job_dir"] == str(job_dirs(sweep)[2])
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    values = [json.loads((j / "metrics.json").read_text())["val/acc"] for j in job_dirs(sweep)]
    assert best["best_value"] == max(values) == max(t.value for t in trials if t.state == COMPLETE)
    assert (best["trials_complete"], best["trials_failed"]) == (3, 1)

    status, _, _ = search(tmp_path, monkeypatch, capsys, url, 3)  # finished: nothing runs
    assert status == 0 and len(study(url).trials) == 4


def test_a_journal_file_study_goes_on_after_a_crash_and_an_interrupted_trial(tmp_path, monkeypatch, capsys):
    """A job that crashes is told FAIL, the other jobs of its batch still count, and the search, at its
    max_failures (20 % of 2 trials: 1), ends with one line naming the trial and that job's error; a job stopped by
    SIGTERM ends it at once (exit 128 + 15), told FAIL too. Neither counts as done: the same command again runs
    replacements."""
    journal, sweep = tmp_path / "sweep" / "optuna.log", tmp_path / "sweep"
    original, calls = run_module.run, []

    def crashes_then_stopped(cfg, run_dir):
        calls.append(run_dir)
        if len(calls) == 1:
            raise RuntimeError("boom")
        if len(calls) == 3:
            raise Interrupted(10, signal.SIGTERM)
        return original(cfg, run_dir)

    monkeypatch.setattr(run_module, "run", crashes_then_stopped)
    status, _, stderr = search(tmp_path, monkeypatch, capsys, f"journal:{journal}", 2, "hydra.sweeper.n_jobs=2")
    crashed, storage = job_dirs(sweep)[0], JournalStorage(JournalFileBackend(str(journal)))
    assert status == 2 and stderr.strip().splitlines()[-1] == (
        "mpl-run: error: the search stopped: 1 trials failed (hydra.sweeper.max_failures=1): trial 0: "
        f"job 0 ({crashed}) failed: RuntimeError: boom; traceback in {crashed / 'run.log'}")
    assert [t.state for t in study(storage).trials] == [FAIL, COMPLETE]
    assert yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_trial"] == 1

    status, _, stderr = search(tmp_path, monkeypatch, capsys, f"journal:{journal}", 2)
    assert status == 128 + signal.SIGTERM, stderr
    assert [t.state for t in study(storage).trials] == [FAIL, COMPLETE, FAIL]

    monkeypatch.setattr(run_module, "run", original)
    status, _, stderr = search(tmp_path, monkeypatch, capsys, f"journal:{journal}", 2)
    assert status == 0, stderr
    assert [t.state for t in study(storage).trials] == [FAIL, COMPLETE, FAIL, COMPLETE]
    assert len(job_dirs(sweep)) == 4


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # (QMCSampler)
@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_is_made_with_its_seed(name):
    """The named sampler, and its seed decides what it proposes: the same seed, the same trials; another seed,
    others. Mutant caught: a config that leaves the seed out (every search unrepeatable) or names another class
    (an isinstance check passes both)."""
    classes = {"tpe": "TPESampler", "random": "RandomSampler", "qmc": "QMCSampler", "gp": "GPSampler"}

    def proposals(seed: int) -> list[tuple[float, int]]:
        sampler = instantiate(OmegaConf.structured(SAMPLERS[name](seed=seed)))
        assert type(sampler).__name__ == classes[name]
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        trials = optuna.create_study(sampler=sampler)
        trials.optimize(lambda t: t.suggest_float("lr", 1e-4, 1.0, log=True) + t.suggest_int("width", 1, 64),
                        n_trials=4)
        return [(t.params["lr"], t.params["width"]) for t in trials.trials]

    first = proposals(3)
    assert proposals(3) == first and proposals(4) != first
    assert len(set(first)) == 4  # (the trials differ from one another: the check can fail)


def test_params_and_command_line_sweeps_become_optuna_distributions():
    space, fixed = search_space(
        {"optim.lr": "tag(log, interval(0.01, 1.0))", "method.uda.weight": "interval(0.25, 4.0)",
         "trainer.steps": "range(10, 50, 10)", "optim.name": "choice(sgd, adam)", "seed": 3,
         "dataset.strong_jitter": "range(0.1, 0.5, 0.1)"},
        ["hparams_search=two_moons_optuna", "seed=0,1", "method.uda.weight=2.0", "+model.width=tag(log, range(8, 65))"])
    assert space == {
        "optim.lr": FloatDistribution(0.01, 1.0, log=True),
        "trainer.steps": IntDistribution(10, 40, step=10),  # range(a, b) leaves b out, as in Hydra
        "optim.name": CategoricalDistribution(["sgd", "adam"]),
        "dataset.strong_jitter": FloatDistribution(0.1, 0.4, step=0.1),
        "seed": CategoricalDistribution([0, 1]),  # the command line's sweep replaces the preset's value
        "+model.width": IntDistribution(8, 64, log=True),
    }
    assert fixed == ["hparams_search=two_moons_optuna", "method.uda.weight=2.0"]


@pytest.mark.parametrize("override, message", [
    ("hydra.sweeper.storage=optuna.db", "hydra.sweeper.storage='optuna.db' is not allowed: null (in memory), an RDB "
     "URL (sqlite:///study.db, postgresql://user@host/db, ...) or journal:<file> (an Optuna journal file, for "
     "clusters without a database server)"),
    ("hydra.sweeper.storage=redis://localhost", "hydra.sweeper.storage='redis://localhost' is not allowed: null"),
    ("hydra.sweeper.storage=journal:", "hydra.sweeper.storage='journal:' is not allowed: null"),
    ("hydra.sweeper.n_trials=-1", "hydra.sweeper.n_trials=-1 is not allowed: >= 1"),
    ("hydra.sweeper.n_trials=0", "hydra.sweeper.n_trials=0 is not allowed: >= 1"),  # (it ran nothing, exit 0)
    ("hydra.sweeper.params=null", "hydra.sweeper.params=None is not allowed: a search space"),  # (20 equal trials)
    ("hydra.sweeper.storage=sqlite:////nonexistent/dir/x.db", "hydra.sweeper.storage='sqlite:////nonexistent/dir/"
     "x.db' is not allowed: a file in a folder that exists, or in the sweep dir"),  # (it made /nonexistent/dir)
    ("hydra.sweeper.storage=journal:/nonexistent/dir/x.log", "hydra.sweeper.storage='journal:/nonexistent/dir/"
     "x.log' is not allowed: a file in a folder that exists"),
    ("optim.lr=interval(0, 1)", "search corner 0 (hparams_search=two_moons_optuna dataset.strong_jitter=0.05 "
     "method.uda.threshold=0.5 method.uda.weight=0.25 optim.lr=0.0) cannot run: optim.lr=0.0 is not allowed"),
    # (the low corner: trials there would have failed after others ran)
    ("optim.lr=glob(*)", "optim.lr='glob(*)' is not allowed: interval(a, b), tag(log, interval(a, b)), range(a, b[, "
     "step]), choice(x, y, ...) or a plain value (glob(...) is none of them)"),
    ("optim.lr=tag(log, interval(0, 1))", "optim.lr='tag(log, interval(0, 1))' is not allowed: interval(a, b)"),
])
def test_a_bad_search_setting_is_one_line(tmp_path, monkeypatch, capsys, override, message):
    status, _, stderr = cli_in_process(["hparams_search=two_moons_optuna", "hydra.sweeper.n_trials=1", override,
                                        f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path, monkeypatch, capsys)
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mpl-run: error: {message}"), stderr
    assert list(tmp_path.iterdir()) == []  # no sweep dir, no storage, no folder for it


def fake_runs(monkeypatch, fails: set[int]) -> list:
    """``run`` replaced by one that returns at once (val/acc from the call count), and fails (diverges) on the
    calls numbered in ``fails`` (from 0): the sweeper's side alone, in a fraction of a second per trial."""
    from mpl_runner.core.errors import UserError

    calls = []

    def run(cfg, run_dir):
        calls.append(run_dir)
        if len(calls) - 1 in fails:
            raise UserError("step 10: train/model/loss = nan; lower optim.lr")
        return {"status": "completed", "val/acc": 0.5 + 0.01 * len(calls)}

    monkeypatch.setattr(run_module, "run", run)
    return calls


def test_a_failing_trial_is_told_fail_and_the_search_goes_on_until_max_failures(tmp_path, monkeypatch, capsys):
    """Two trials diverge; the search still ends with its 3 completed trials (exit 0), and its report lists each
    failed trial with its error. With max_failures=2 the same failures stop it, with one line naming them."""
    fake_runs(monkeypatch, fails={0, 2})
    status, _, stderr = search(tmp_path, monkeypatch, capsys, "null", 3, "hydra.sweeper.max_failures=3")
    assert status == 0, stderr
    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert (results["trials_complete"], results["trials_failed"]) == (3, 2)
    report = (tmp_path / "sweep" / "report.md").read_text()
    failed = report.split("### Failed trials\n\n")[1].split("\n\n")[0].strip().splitlines()
    assert failed == ["- trial 0: step 10: train/model/loss = nan; lower optim.lr",
                      "- trial 2: step 10: train/model/loss = nan; lower optim.lr"]
    assert "3 completed, 0 pruned, 2 failed trials" in report
    assert "hydra.mode=RUN" in report.split("Run it again:")[1]  # (the best trial's overrides as one command)
    assert {p.name for p in (tmp_path / "sweep").glob("search_*.png")} == {
        "search_history.png", "search_importances.png", "search_parallel.png"}
    report_main([str(tmp_path / "sweep")])  # (an in-memory study is gone: the section the sweeper wrote stays)
    assert (tmp_path / "sweep" / "report.md").read_text().split("\n## Search\n")[1] == report.split(
        "\n## Search\n")[1]

    fake_runs(monkeypatch, fails={0, 2})
    (tmp_path / "again").mkdir()
    status, _, stderr = search(tmp_path / "again", monkeypatch, capsys, "null", 3, "hydra.sweeper.max_failures=2")
    lines = stderr.strip().splitlines()
    assert status == 2 and lines[-1] == (
        "mpl-run: error: the search stopped: 2 trials failed (hydra.sweeper.max_failures=2): trial 0: step 10: "
        "train/model/loss = nan; lower optim.lr; trial 2: step 10: train/model/loss = nan; lower optim.lr"), stderr


class Returned:
    """What a launcher hands back for a job (Hydra's JobReturn, as the sweeper reads it)."""

    def __init__(self, value: float):
        self.return_value, self.hydra_cfg = value, OmegaConf.create({"hydra": {}})


def sweeper_alone(storage: str, n_trials: int, sampler: str, seed: int = 0, heartbeat: int | None = None,
                  job_seconds: float = 0.0):
    """The search sweeper with a launcher that runs nothing (each job returns the sum of its values after
    ``job_seconds``): the sampling alone, in a fraction of a second."""
    import time

    from mpl_runner.search.optuna import OptunaSweeperImpl

    class Launcher:
        def launch(self, batch, initial_job_idx):
            time.sleep(job_seconds)
            return [Returned(sum(float(o.split("=")[1]) for o in job)) for job in batch]

    sweeper = OptunaSweeperImpl(OmegaConf.structured(SAMPLERS[sampler](seed=seed)), "maximize", "two_moons_mpl",
                                storage, n_trials, 1, None, heartbeat_interval=heartbeat)
    sweeper.launcher = Launcher()
    sweeper.validate_batch_is_legal = lambda batch: None
    return sweeper


QMC_SPACE = {"optim.lr": FloatDistribution(0.01, 1.0, log=True), "method.uda.weight": FloatDistribution(0.25, 4.0)}


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_resumed_qmc_search_continues_its_sequence(tmp_path):
    """QMC's place in its sequence is in the storage: a resume keeps the study's seed (reseeding would restart
    the sequence with another scrambling), so 2 + 2 trials are the 4 of an uninterrupted search."""
    def params(name: str, *n_trials: int) -> list[dict]:
        url = f"sqlite:///{tmp_path}/{name}.db"
        for n in n_trials:
            sweeper_alone(url, n, "qmc")._search(QMC_SPACE, [], tmp_path)
        return [t.params for t in study(url).trials]

    resumed = params("resumed", 2, 4)
    assert resumed == params("whole", 4)
    assert len({tuple(p.values()) for p in resumed}) == 4


@pytest.mark.parametrize("n_jobs, liar", [(1, False), (2, True)])
def test_tpe_lies_constantly_where_trials_run_at_once(n_jobs, liar):
    from mpl_runner.search.optuna import OptunaSweeperImpl

    sweeper = OptunaSweeperImpl(OmegaConf.structured(SAMPLERS["tpe"](seed=0)), "maximize", None, None, 4, n_jobs,
                                None)
    assert sweeper._sampler(optuna.create_study())._constant_liar is liar


def seeded_study(storage_url: str) -> None:
    """Study two_moons_mpl with one completed trial (the preset's space) whose val/acc was 2.0 at every
    evaluation: no real trial reaches it, so the median pruner stops the next one at its first evaluation."""
    from optuna.trial import create_trial

    space, _ = search_space(OmegaConf.to_container(
        OmegaConf.load(REPO / "conf/hparams_search/two_moons_optuna.yaml").hydra.sweeper.params), [])
    storage = JournalStorage(JournalFileBackend(storage_url.split(":", 1)[1])) if storage_url.startswith(
        "journal:") else storage_url
    seeded = optuna.create_study(study_name="two_moons_mpl", storage=storage, direction="maximize")
    seeded.add_trial(create_trial(params={k: d.low if hasattr(d, "low") else d.choices[0] for k, d in space.items()},
                                  distributions=space, value=2.0, intermediate_values={10: 2.0, 20: 2.0}))


PRUNING = ["hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=1", "trainer.checkpoint_interval=10"]


@pytest.mark.parametrize("launcher", [
    [],  # the basic launcher: the job runs in this process, and still reaches its trial through the storage
    pytest.param(["hydra/launcher=local_parallel"], marks=pytest.mark.slow),  # loky worker processes (~30 s)
])
def test_a_pruned_trial_stops_after_that_evaluation_and_is_recorded_pruned(tmp_path, monkeypatch, capsys,
                                                                           launcher):
    """The job reports val/acc to its trial through the storage, is pruned after step 10 of 30, writes its record
    (status pruned, the step, its checkpoint kept), exits 0 and is told PRUNED; the report and TensorBoard's
    HParams show it pruned; n_trials counts it (the search ends)."""
    url = f"journal:{tmp_path / 'study.log'}"
    seeded_study(url)
    status, _, stderr = search(tmp_path, monkeypatch, capsys, url, 2, *PRUNING, *launcher)
    assert status == 0, stderr
    trial = study(JournalStorage(JournalFileBackend(str(tmp_path / "study.log")))).trials[1]
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [10]
    (job,) = job_dirs(tmp_path / "sweep")
    record = json.loads((job / "metrics.json").read_text())
    assert (record["status"], record["step"], record["checkpoint_step"]) == ("pruned", 10, 10)
    assert record["val/acc"] == trial.intermediate_values[10]
    assert (job / "checkpoints" / "last.pt").is_file()
    assert "1 completed, 1 pruned, 0 failed trials" in (tmp_path / "sweep" / "report.md").read_text()
    rows = {r["setting"]: r for r in csv.DictReader((tmp_path / "sweep" / "report.csv").open())}
    assert [r["pruned"] for r in rows.values()] == ["1"]
    events = b"".join(p.read_bytes() for p in job.glob("events.out.tfevents.*"))
    assert b"search/status" in events and b"pruned" in events  # (HParams: a column saying pruned)
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert (best["trials_complete"], best["trials_pruned"]) == (1, 1)

    # mpl-report reads the study again from the storage that optimization_results.yaml names
    for made in [tmp_path / "sweep" / "report.md", *(tmp_path / "sweep").glob("search_*.png")]:
        made.unlink()
    report_main([str(tmp_path / "sweep")])
    assert "1 completed, 1 pruned, 0 failed trials" in (tmp_path / "sweep" / "report.md").read_text()
    assert (tmp_path / "sweep" / "search_history.png").stat().st_size > 1000


@pytest.mark.parametrize("overrides, message", [
    (["hydra/sweeper/pruner=sometimes"], "hydra/sweeper/pruner=sometimes is not an option; choose one of: "
     "hyperband, median, none, percentile, successive_halving"),
    (["hydra/sweeper/pruner=median", "hydra.sweeper.pruner.min_resource=5"],
     "hydra.sweeper.pruner.min_resource is not a config key; the keys there are: _target_, n_startup_trials, "
     "n_warmup_steps, interval_steps, n_min_trials"),  # (successive halving's option, given to median)
    (["hydra/sweeper/pruner=percentile", "hydra.sweeper.pruner.percentile=150", "hydra.sweeper.storage=journal:x"],
     "hydra.sweeper.pruner (percentile)={'n_startup_trials': 5, 'n_warmup_steps': 0, 'interval_steps': 1, "
     "'n_min_trials': 1, 'percentile': 150.0} is not allowed: options percentile takes (Percentile must be"),
    (["hydra/sweeper/pruner=median"], "hydra.sweeper.storage=None is not allowed: a stored study with a pruner "
     "(hydra/sweeper/pruner=median): each trial reports to it from its own process"),
    (["hydra.sweeper.max_failures=0"], "hydra.sweeper.max_failures=0 is not allowed: >= 1"),
])
def test_a_bad_pruner_or_failure_setting_is_one_line(tmp_path, monkeypatch, capsys, overrides, message):
    status, _, stderr = cli_in_process(["hparams_search=two_moons_optuna", *overrides,
                                        f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path, monkeypatch, capsys)
    lines = stderr.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith(f"mpl-run: error: {message}"), stderr
    assert list(tmp_path.iterdir()) == []


def test_an_in_memory_study_is_refused_to_the_workers_of_a_slurm_array(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    status, _, stderr = cli_in_process(["hparams_search=two_moons_optuna", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                                       tmp_path, monkeypatch, capsys)
    assert status == 2 and stderr.strip() == (
        "mpl-run: error: hydra.sweeper.storage=None is not allowed: a storage the 4 workers of this SLURM array "
        "share (an RDB URL or journal:<file> on a shared disk): in memory, each would run a study of its own")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("overrides, message", [
    (["hydra.sweeper.direction=minimize"], "hydra.sweeper.direction='minimize' is not allowed: maximize, the "
     "direction of study 'two_moons_mpl' in sqlite:///{db}; another study_name starts a new study"),
    (["optim.lr=tag(log, interval(0.001, 1.0))"], "hydra.sweeper.params.optim.lr='tag(log, interval(0.001, 1.0))' "
     "is not allowed: tag(log, interval(0.01, 1.0)), its range in study 'two_moons_mpl' in sqlite:///{db}"),
    (["seed=0,1"], "hydra.sweeper.params.seed='choice(0, 1)' is not allowed: (not searched), its range in study"),
])
def test_a_stored_study_with_another_direction_or_space_is_refused_naming_which(tmp_path, monkeypatch, capsys,
                                                                                  overrides, message):
    db = tmp_path / "study.db"
    seeded_study(f"sqlite:///{db}")
    before = db.read_bytes()
    status, _, stderr = cli_in_process(["hparams_search=two_moons_optuna", f"hydra.sweeper.storage=sqlite:///{db}",
                                        *overrides, f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path, monkeypatch,
                                       capsys)
    lines = stderr.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith(f"mpl-run: error: {message.format(db=db)}"), stderr
    assert list(tmp_path.iterdir()) == [db] and db.read_bytes() == before  # no sweep dir; the study as it was


def journal(tmp_path) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(tmp_path / "study.log")))


def test_only_trials_whose_heartbeat_stopped_are_taken_for_dead(tmp_path):
    from mpl_runner.search.optuna import HEARTBEAT, fail_stale

    storage = journal(tmp_path)
    trials = optuna.create_study(study_name="two_moons_mpl", storage=storage)
    alive, dead, new = (trials.ask() for _ in range(3))
    storage.set_trial_system_attr(alive._trial_id, HEARTBEAT, time.time())
    storage.set_trial_system_attr(dead._trial_id, HEARTBEAT, time.time() - 100)
    fail_stale(trials, grace=30)
    assert [t.state for t in trials.trials] == [TrialState.RUNNING, FAIL, TrialState.RUNNING]  # (new: just asked)


def test_two_workers_on_one_journal_study_run_exactly_n_trials(tmp_path):
    """Two sweepers (threads here; processes or SLURM tasks alike) on one journal file: together exactly
    n_trials completed trials, each trial number once."""
    url = f"journal:{tmp_path / 'study.log'}"
    workers = [threading.Thread(target=sweeper_alone(url, 6, "random", seed=seed, heartbeat=1, job_seconds=0.2)
                                ._search, args=(QMC_SPACE, [], tmp_path / f"w{seed}")) for seed in (0, 1)]
    for seed, worker in enumerate(workers):
        (tmp_path / f"w{seed}").mkdir()
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    trials = study(journal(tmp_path)).trials
    assert sum(t.state == COMPLETE for t in trials) == 6
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert all(t.state in (COMPLETE, FAIL) for t in trials)  # (FAIL: asked at once by both, one too many)


def test_a_trial_whose_worker_died_is_replaced_after_its_heartbeat_stops(tmp_path):
    """A worker killed mid-trial leaves its trial RUNNING with a heartbeat that no longer moves: a living worker
    waits while that trial could still make up n_trials, then marks it FAIL and runs a replacement."""
    from mpl_runner.search.optuna import HEARTBEAT

    storage = journal(tmp_path)
    killed = optuna.create_study(study_name="two_moons_mpl", storage=storage, direction="maximize").ask(QMC_SPACE)
    storage.set_trial_system_attr(killed._trial_id, HEARTBEAT, time.time())
    started = time.time()
    sweeper_alone(f"journal:{tmp_path / 'study.log'}", 1, "random", heartbeat=1)._search(QMC_SPACE, [], tmp_path)
    assert time.time() - started >= 3  # (3 heartbeat intervals without one)
    assert [t.state for t in study(storage).trials] == [FAIL, COMPLETE]


def test_a_worker_waiting_on_another_workers_last_trial_leaves_as_soon_as_it_ends(tmp_path):
    """Another worker's running trial would make up n_trials: this worker waits in case it fails, and leaves
    within a second or two of its end, not a heartbeat interval (30 s) later: a SLURM task (or the second of two
    workers) would hold its allocation idle that long. Catches a wait that sleeps a whole heartbeat interval."""
    from mpl_runner.search.optuna import HEARTBEAT

    storage = journal(tmp_path)
    other = optuna.create_study(study_name="two_moons_mpl", storage=storage, direction="maximize").ask(QMC_SPACE)
    storage.set_trial_system_attr(other._trial_id, HEARTBEAT, time.time())
    ends = threading.Timer(2.0, lambda: optuna.load_study(study_name="two_moons_mpl", storage=storage)
                           .tell(other.number, 0.5))
    started = time.time()
    ends.start()
    sweeper_alone(f"journal:{tmp_path / 'study.log'}", 2, "random", heartbeat=30)._search(QMC_SPACE, [], tmp_path)
    ends.join()
    assert time.time() - started < 10
    assert [t.state for t in study(storage).trials] == [COMPLETE, COMPLETE]

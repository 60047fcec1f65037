"""Launchers and the Optuna search, run for real through the CLI on tiny two-moons jobs."""

from __future__ import annotations

import json

import yaml

from conftest import TINY, job_dirs, mpl_run
from test_config_warnings import run_cli


def completed_jobs(sweep):
    return {p.name: json.loads((p / "metrics.json").read_text()) for p in job_dirs(sweep)}


def test_submitit_local_launcher_runs_each_job_in_its_own_process(tmp_path):
    sweep = tmp_path / "sweep"
    result = mpl_run("-m", "hydra/launcher=local_submitit", "method=supervised,mpl", *TINY,
                     f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    jobs = completed_jobs(sweep)
    assert sorted(m["method"] for m in jobs.values()) == ["mpl", "supervised"]
    assert all(m["status"] == "completed" for m in jobs.values())
    assert list((sweep / ".submitit").iterdir())  # submitit's own job records
    assert (sweep / "report.md").exists()


def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path):
    sweep = tmp_path / "sweep"
    result = mpl_run("-m", "hydra/launcher=local_parallel", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(completed_jobs(sweep)) == 2


def test_optuna_search_selects_on_validation_accuracy_not_test(tmp_path):
    sweep = tmp_path / "sweep"
    result = mpl_run("hparams_search=two_moons_optuna", "hydra.sweeper.n_trials=3", *TINY,
                     "hydra/launcher=local_parallel", "hydra.sweeper.n_jobs=2",  # batches of 2 trials, in parallel
                     "hydra.sweeper.storage=sqlite:///${hydra.sweep.dir}/optuna.db", f"hydra.sweep.dir={sweep}",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    jobs = list(completed_jobs(sweep).values())
    assert len(jobs) == 3 and best["best_value"] == max(m["val/acc"] for m in jobs)
    assert (sweep / "optuna.db").stat().st_size > 0  # resumable SQLite storage
    assert set(best["best_params"]) == {"optim.lr", "dataset.strong_jitter", "method.uda.threshold",
                                        "method.uda.weight"}


def test_a_search_without_a_validation_split_is_refused_before_it_starts(tmp_path):
    result = mpl_run("hparams_search=cifar10_optuna", "dataset.num_val=0", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "mpl-run: error: dataset.num_val=0 is not allowed: > 0 in a search: searches select on val/acc, never on "
        "test/acc"]
    assert not (tmp_path / "outputs").exists()


def test_a_sweep_run_again_in_its_dir_finds_each_jobs_dir(tmp_path, monkeypatch, capsys):
    """Job dirs are named by their overrides, less those a resumed run may change (device, progress, ...): the
    same command with hydra.sweep.dir=<its dir> finds every job's dir, skips the finished ones, resumes the rest."""
    sweep = tmp_path / "sweep"
    args = ["-m", "seed=0,1", *TINY, "trainer.checkpoint_interval=10", f"hydra.sweep.dir={sweep}"]
    assert run_cli(args, tmp_path, monkeypatch, capsys)[0] == 0
    jobs = job_dirs(sweep)
    assert [j.name for j in jobs] == [  # (trainer.checkpoint_interval left out: a resumed run may change it)
        f"{n}_seed={n},trainer.eval_interval=10,trainer.log_interval=10,trainer.steps=30" for n in (0, 1)]
    (jobs[1] / "metrics.json").unlink()  # as if killed after its last checkpoint

    status, _, stderr = run_cli([*args, "device=cpu", "trainer.progress=false"], tmp_path, monkeypatch, capsys)
    assert status == 0, stderr
    assert job_dirs(sweep) == jobs
    assert "already finished" in (jobs[0] / "run.log").read_text()
    assert "resuming" in (jobs[1] / "run.log").read_text()
    assert json.loads((jobs[1] / "metrics.json").read_text())["status"] == "completed"

"""Launchers and the Optuna search, run for real through the CLI on tiny two-moons jobs."""

from __future__ import annotations

import json

import yaml

from conftest import TINY, mpl_run


def completed_jobs(sweep):
    return {p.name: json.loads((p / "metrics.json").read_text()) for p in sweep.iterdir() if p.name.isdigit()}


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

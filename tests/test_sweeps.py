"""Launchers and the Optuna search, run for real through the CLI on tiny two-moons jobs."""

from __future__ import annotations

import json

import yaml
from hydra import compose, initialize_config_module

from conftest import TINY, mpl_run
from mpl_runner.config import register_configs


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


def test_optuna_search_maximises_test_acc(tmp_path):
    sweep = tmp_path / "sweep"
    result = mpl_run("hparams_search=two_moons_optuna", "hydra.sweeper.n_trials=3", *TINY,
                     "hydra.sweeper.storage=sqlite:///${hydra.sweep.dir}/optuna.db", f"hydra.sweep.dir={sweep}",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    accs = [m["test/acc"] for m in completed_jobs(sweep).values()]
    assert len(accs) == 3 and best["best_value"] == max(accs)
    assert (sweep / "optuna.db").stat().st_size > 0  # SQLite storage (optuna 2.x with SQLAlchemy < 2)
    assert set(best["best_params"]) == {"optim.lr", "dataset.strong_jitter", "method.uda.threshold",
                                        "method.uda.weight"}


def test_slurm_preset_exposes_partition_gpus_and_time():
    register_configs()
    with initialize_config_module("mpl_runner.conf", version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 1, 1440)

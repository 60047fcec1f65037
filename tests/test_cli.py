"""``mpl-run`` as a user runs it: a subprocess, a temporary working directory, small overrides."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
import yaml

from conftest import REPO, TINY, job_dirs, mpl_run


def test_single_run_writes_its_record(tmp_path):
    run_dir = tmp_path / "run"
    result = mpl_run(*TINY, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["handed_out"] == "student"
    assert metrics["test/acc"] == metrics["test/student/acc"]
    for key in ("test/teacher/acc", "all/acc", "all/teacher/acc", "steps", "train_seconds", "wall_seconds"):
        assert key in metrics
    assert metrics["steps"] == 30 and 0.5 <= metrics["test/acc"] <= 1.0
    assert len(json.loads((run_dir / "labeled_indices.json").read_text())["labeled"]) == 12
    assert 0.5 <= metrics["val/acc"] <= 1.0 and metrics["val/acc"] == metrics["val/student/acc"]
    # which code and machine made it (from a checkout: its commit)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert metrics["provenance/git_commit"] == commit and metrics["provenance/torch"] == torch.__version__
    assert metrics["provenance/world_size"] == 1 and metrics["provenance/device_name"]
    assert "mpl_runner" in metrics["provenance/command"] and f"hydra.run.dir={run_dir}" in metrics["provenance/command"]
    assert (run_dir / "decision_boundary.png").stat().st_size > 10_000
    assert (run_dir / ".hydra" / "config.yaml").exists()
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert "step 30/30" in result.stderr + result.stdout  # the progress line


def test_multirun_runs_every_combination_in_its_own_dir(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = mpl_run(
        "-m", "method=supervised,uda,mpl", "seed=0,1,2", *TINY, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    jobs = job_dirs(sweep_dir)
    assert len(jobs) == 9
    seen = set()
    for num, job in enumerate(jobs):
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        metrics = json.loads((job / "metrics.json").read_text())
        method = next(o.split("=")[1] for o in overrides if o.startswith("method="))
        seen.add((method, next(o for o in overrides if o.startswith("seed="))))
        assert job.name == f"{num}_{','.join(sorted(overrides))}"  # e.g. 0_method=supervised,seed=0,trainer...
        assert metrics["status"] == "completed" and metrics["method"] == method
        assert list(job.glob("events.out.tfevents.*"))
    assert len(seen) == 9


# tests/test_bad_inputs.py holds the full table (in-process); these two go through the console script itself.
BAD = [
    (["method=foo"], "method=foo is not an option; choose one of: mpl, pseudo_labels, supervised, uda"),
    (["dataset.num_labeled=7"], "dataset.num_labeled=7 is not allowed"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[a[0] for a, _ in BAD])
def test_bad_input_is_one_line_and_leaves_no_run_dir(tmp_path, args, message):
    run_dir = tmp_path / "run"
    result = mpl_run(*args, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"mpl-run: error: {result.stderr.split('error: ', 1)[1].strip()}"]
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not run_dir.exists()
    assert not (tmp_path / "outputs").exists()

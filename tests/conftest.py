from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mpl_runner.cli.config import compose_config

REPO = Path(__file__).resolve().parents[1]
TINY = ["trainer.steps=30", "trainer.eval_interval=10", "trainer.log_interval=10"]


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip where CUDA is absent (``scripts/gpu_check.sh`` runs them on a GPU)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (scripts/gpu_check.sh runs these on a GPU)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


compose_cfg = compose_config  # the real config (as ``mpl-run`` composes it from conf/) with the given overrides


def group_overrides(group: str, **values) -> list[str]:
    """``group.key=value`` overrides, None as null."""
    return [f"{group}.{key}={'null' if value is None else value}" for key, value in values.items()]


@pytest.fixture
def make_cfg():
    """Compose the real config (as ``mpl-run`` would) with the given overrides."""
    return compose_cfg


def mpl_run(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed console script as a user would, in a subprocess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "mpl_runner", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )


def completed_run(cwd: Path, *args: str) -> Path:
    """``mpl-run *args`` into ``cwd/run``, which it returns; the calling test fails unless the run completes."""
    result = mpl_run(*args, "hydra.run.dir=run", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd / "run"


def job_dirs(sweep: Path) -> list[Path]:
    """A multirun's job dirs (``<job num>_<overrides>``), by job number."""
    jobs = [p for p in sweep.iterdir() if p.is_dir() and p.name.split("_", 1)[0].isdigit()]
    return sorted(jobs, key=lambda p: int(p.name.split("_", 1)[0]))


def cli_in_process(args: list[str], cwd: Path, monkeypatch, capsys) -> tuple[int, str, str]:
    """``mpl-run *args`` in ``cwd``, in this process (0.3 s instead of 5 s for a fresh interpreter):
    (exit status, stdout, stderr)."""
    from mpl_runner.cli.main import cli

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["mpl-run", *args])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # cli() sets it; this puts the old value back afterwards
    capsys.readouterr()
    try:
        cli()
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    out, err = capsys.readouterr()
    return status, out, err


def finished_in_process(cwd: Path, *args: str) -> Path:
    """``mpl-run *args`` run to the end in this process, into ``cwd/run``, which it returns."""
    from mpl_runner.cli.main import cli

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        mp.setattr(sys, "argv", ["mpl-run", *args, "hydra.run.dir=run"])
        mp.setenv("HYDRA_FULL_ERROR", "1")
        cli()
    return cwd / "run"

"""A multirun with failing jobs: the others finish, failures are recorded, and the report matches the jobs."""

from __future__ import annotations

import csv
import json
import statistics

import pytest

from conftest import TINY, job_dirs, mpl_run
from mpl_runner.loop import run as run_module
from mpl_runner.search.report import main as report_main
from test_config_warnings import run_cli


def test_failed_jobs_are_recorded_and_the_report_matches_the_metrics(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    # (a job that fails as it runs: a config that cannot run is refused before any job starts, tests/test_bad_inputs.py)
    result = mpl_run("-m", "method=supervised", "optim.lr=0.1,1e30", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}",
                     cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("mpl-run: error: step 10: train/model/loss = nan")
    jobs = {p.name: json.loads((p / "metrics.json").read_text()) for p in job_dirs(sweep)}
    assert len(jobs) == 4
    good = [m["test/acc"] for m in jobs.values() if m["status"] == "completed"]
    good_val = [m["val/acc"] for m in jobs.values() if m["status"] == "completed"]
    bad = [m for m in jobs.values() if m["status"] == "failed"]
    assert len(good) == 2 and len(bad) == 2 and all("lower optim.lr" in m["error"] for m in bad)

    rows = {r["setting"]: r for r in csv.DictReader((sweep / "report.csv").open())}
    ok = rows["optim.lr=0.1"]
    assert int(ok["seeds"]) == 2 and int(ok["failed"]) == 0
    assert float(ok["mean"]) == statistics.mean(good) and float(ok["std"]) == statistics.stdev(good)
    assert float(ok["val_mean"]) == statistics.mean(good_val)  # val beside test: choose on one, report the other
    assert "| setting | val mean | val std | test mean | test std |" in (sweep / "report.md").read_text()
    assert [int(r["failed"]) for setting, r in rows.items() if setting != "optim.lr=0.1"] == [2]
    assert (sweep / "report.png").stat().st_size > 1000
    assert "train/model/loss = nan" in (sweep / "report.md").read_text()

    # the command reads the same sweep, also with an unfinished job in it
    (sweep / "9" / ".hydra").mkdir(parents=True)
    job0 = (job_dirs(sweep)[0] / ".hydra" / "overrides.yaml").read_text()
    assert "optim.lr=0.1" in job0 and "seed=0" in job0
    (sweep / "9" / ".hydra" / "overrides.yaml").write_text(job0.replace("seed=0", "seed=2"))
    report_main([str(sweep)])
    rows = {r["setting"]: r for r in csv.DictReader((sweep / "report.csv").open())}
    assert int(rows["optim.lr=0.1"]["unfinished"]) == 1
    out = capsys.readouterr().out
    assert "| optim.lr=0.1 |" in out and "method=supervised" in out  # the shared override, in the header


def test_a_job_that_crashes_ends_the_sweep_with_one_line_and_its_traceback_in_the_job_log(tmp_path, monkeypatch,
                                                                                          capsys):
    """Not a user's mistake (a bug, a CUDA error): the other jobs still run; the sweep ends with the first such error
    in one line and exit status 2; the traceback is in that job's run.log."""
    original = run_module.run

    def crashes_on_seed_1(cfg, run_dir):
        if cfg.seed == 1:
            raise RuntimeError("boom")
        return original(cfg, run_dir)

    monkeypatch.setattr(run_module, "run", crashes_on_seed_1)
    sweep = tmp_path / "sweep"
    status, _, stderr = run_cli(["-m", "seed=0,1,2", *TINY, f"hydra.sweep.dir={sweep}"], tmp_path, monkeypatch,
                                capsys)
    assert status == 2 and "Traceback" not in stderr
    good, crashed, last = job_dirs(sweep)
    log = crashed / "run.log"
    assert stderr.strip().splitlines()[-1] == (
        f"mpl-run: error: job 1 ({crashed}) failed: RuntimeError: boom; traceback in {log}")
    assert "Traceback" in log.read_text() and "RuntimeError: boom" in log.read_text()
    assert json.loads((crashed / "metrics.json").read_text()) == {"status": "failed", "error": "RuntimeError: boom"}
    assert all(json.loads((j / "metrics.json").read_text())["status"] == "completed" for j in (good, last))
    assert "- job 1_seed=1,trainer.eval_interval=10,trainer.log_interval=10,trainer.steps=30: RuntimeError: boom" in (
        sweep / "report.md").read_text()


def test_mpl_report_on_a_dir_that_is_no_sweep_writes_nothing_there(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine\n")
    (tmp_path / "a folder").mkdir()
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    with pytest.raises(SystemExit) as exit_:
        report_main([str(tmp_path)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"mpl-report: error: no jobs (no */.hydra/overrides.yaml) under {tmp_path}")
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


def write_job(sweep, name: str, overrides: str, metrics: str | None) -> None:
    (sweep / name / ".hydra").mkdir(parents=True)
    (sweep / name / ".hydra" / "overrides.yaml").write_text(overrides)
    if metrics is not None:
        (sweep / name / "metrics.json").write_text(metrics)


def test_jobs_with_malformed_files_are_listed_as_unreadable(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    done = '{"status": "completed", "test/acc": 0.9, "val/acc": 0.8}'
    write_job(sweep, "0_method=mpl,seed=0", "- method=mpl\n- seed=0\n", done)
    write_job(sweep, "1_method=mpl,seed=1", "- method=mpl\n- seed=1\n", "{not json")
    write_job(sweep, "2_method=mpl,seed=2", "- method=mpl\n- seed=2\n", "[0.9]")
    write_job(sweep, "3_method=mpl,seed=3", "- method=mpl\n- seed=3\n", '{"status": "completed", "test/acc": "x"}')
    write_job(sweep, "4_method=mpl,seed=4", "- method=mpl\n- seed=4\n", '{"status": "interrupted"}')
    write_job(sweep, "5", "- method=mpl\n  - seed: [\n", done)  # not YAML
    write_job(sweep, "6", "method: mpl\n", done)  # YAML, but no list of overrides
    write_job(sweep, "10_method=supervised,seed=0", "- method=supervised\n- seed=0\n", done)
    report_main([str(sweep)])
    rows = {r["setting"]: r for r in csv.DictReader((sweep / "report.csv").open())}
    assert list(rows) == ["method=mpl", "method=supervised"]
    mpl = rows["method=mpl"]
    assert (mpl["seeds"], mpl["failed"], mpl["unfinished"], mpl["unreadable"]) == ("1", "0", "1", "3")
    assert float(mpl["mean"]) == 0.9 and rows["method=supervised"]["seeds"] == "1"
    report = (sweep / "report.md").read_text()
    unreadable = report.split("## Unreadable jobs\n\n")[1].strip().splitlines()
    assert [line.split(":")[0] for line in unreadable] == [
        "- job 1_method=mpl,seed=1", "- job 2_method=mpl,seed=2", "- job 3_method=mpl,seed=3", "- job 5", "- job 6"]
    assert "metrics.json: JSONDecodeError" in unreadable[0] and ".hydra/overrides.yaml: " in unreadable[3]
    assert "Traceback" not in capsys.readouterr().out


def test_a_sweep_whose_jobs_ran_on_different_code_or_machines_is_flagged(tmp_path, capsys):
    sweep = tmp_path / "sweep"

    def record(commit: str, device: str) -> str:
        return json.dumps({"status": "completed", "test/acc": 0.9, "val/acc": 0.8, "provenance/git_commit": commit,
                           "provenance/device_name": device, "provenance/torch": "2.14.1"})

    write_job(sweep, "0_seed=0", "- seed=0\n", record("aaa", "AMD EPYC"))
    write_job(sweep, "1_seed=1", "- seed=1\n", record("aaa", "AMD EPYC"))
    report_main([str(sweep)])
    assert "different code or machines" not in (sweep / "report.md").read_text()
    write_job(sweep, "2_seed=2", "- seed=2\n", record("bbb", "NVIDIA H100"))
    report_main([str(sweep)])
    flagged = (sweep / "report.md").read_text().split("## Jobs made by different code or machines\n\n")[1]
    assert flagged.strip().splitlines() == ["- `provenance/device_name`: `AMD EPYC`, `NVIDIA H100`",
                                            "- `provenance/git_commit`: `aaa`, `bbb`"]

"""A multirun with failing jobs: the others finish, failures are recorded, and the report matches the jobs."""

from __future__ import annotations

import csv
import json
import statistics

from conftest import TINY, mpl_run
from mpl_runner.report import main as report_main


def test_failed_jobs_are_recorded_and_the_report_matches_the_metrics(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    result = mpl_run("-m", "method=supervised", "optim.lr=0.1,-1", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}",
                     cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("mpl-run: error: optim.lr=-1.0 is not allowed")
    jobs = {p.name: json.loads((p / "metrics.json").read_text()) for p in sweep.iterdir() if p.name.isdigit()}
    assert len(jobs) == 4
    good = [m["test/acc"] for m in jobs.values() if m["status"] == "completed"]
    good_val = [m["val/acc"] for m in jobs.values() if m["status"] == "completed"]
    bad = [m for m in jobs.values() if m["status"] == "failed"]
    assert len(good) == 2 and len(bad) == 2 and all("optim.lr" in m["error"] for m in bad)

    rows = {r["setting"]: r for r in csv.DictReader((sweep / "report.csv").open())}
    ok = rows["optim.lr=0.1"]
    assert int(ok["seeds"]) == 2 and int(ok["failed"]) == 0
    assert float(ok["mean"]) == statistics.mean(good) and float(ok["std"]) == statistics.stdev(good)
    assert float(ok["val_mean"]) == statistics.mean(good_val)  # val beside test: choose on one, report the other
    assert "| setting | val mean | val std | test mean | test std |" in (sweep / "report.md").read_text()
    assert int(rows["optim.lr=-1"]["failed"]) == 2
    assert (sweep / "report.png").stat().st_size > 1000
    assert "optim.lr=-1.0 is not allowed" in (sweep / "report.md").read_text()

    # the command reads the same sweep, also with an unfinished job in it
    (sweep / "9" / ".hydra").mkdir(parents=True)
    job0 = (sweep / "0" / ".hydra" / "overrides.yaml").read_text()
    assert "optim.lr=0.1" in job0 and "seed=0" in job0
    (sweep / "9" / ".hydra" / "overrides.yaml").write_text(job0.replace("seed=0", "seed=2"))
    report_main([str(sweep)])
    rows = {r["setting"]: r for r in csv.DictReader((sweep / "report.csv").open())}
    assert int(rows["optim.lr=0.1"]["unfinished"]) == 1
    out = capsys.readouterr().out
    assert "| optim.lr=0.1 |" in out and "method=supervised" in out  # the shared override, in the header

"""``scripts/gpu_check.sh --dry-run``: every stage of the GPU check, end to end on the CPU at tiny sizes, so that the
script cannot rot while no GPU is at hand (about 40 s on 2 cores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO


def test_dry_run_goes_through_every_stage_writes_only_under_out_and_prints_the_table_last(tmp_path):
    docs = {p.name: p.read_bytes() for p in (REPO / "docs").iterdir() if p.is_file()}
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--dry-run"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr

    stages = [line.split("\t") for line in (out / "stages.tsv").read_text().splitlines()]
    assert [(name, status) for name, status, _ in stages] == [
        ("setup", "ok"), ("cuda-tests", "ok"), ("step", "ok"), ("data", "ok")]
    for name, *_ in stages:
        assert (out / f"{name}.log").is_file()

    step = json.loads((out / "bench_cifar_step_cpu_dry.json").read_text())
    rows = {r["setting"]: r for r in step["rows"]}
    assert list(rows) == ["baseline", "fp32", "fp32+cl", "bf16", "bf16+cl", "bf16+cl+compile", "bf16+compile"]
    assert rows["baseline"]["speedup"] == 1.0 and step["depth"] == 10 and step["best"] in ("fp32", "fp32+cl")
    for setting in ("fp32", "fp32+cl"):
        r = rows[setting]
        assert r["seconds_per_step"] > 0 and r["peak_memory_mib"] is None
        assert r["speedup"] == rows["baseline"]["seconds_per_step"] / r["seconds_per_step"]
    assert all(rows[s]["skipped"] == "skipped on CPU dry run" for s in ("bf16", "bf16+cl+compile"))

    data = json.loads((out / "bench_cifar_data_cpu_dry.json").read_text())
    assert {(r["pipeline"], r["num_workers"]) for r in data["views"]} == {("workers", 1), ("device", 0)}
    assert [(r["pipeline"], r["num_workers"]) for r in data["fed"]] == [("device", 0), ("workers", 1)]
    assert data["fed_setting"] == step["best"] and all(r["steps_per_s"] > 0 for r in data["fed"])

    lines = result.stdout.rstrip().splitlines()
    table = (out / "summary.md").read_text().rstrip().splitlines()
    assert lines[-len(table):] == table  # the table comes last
    assert "| check | result |" in table and "| step: bf16 | skipped on CPU dry run |" in table
    assert any(line.startswith("| CUDA tests (-m cuda) | 0 passed, 0 failed, ") for line in table)
    assert table[-1].startswith("| fed step: 1 workers | ")

    assert {p.name: p.read_bytes() for p in (REPO / "docs").iterdir() if p.is_file()} == docs

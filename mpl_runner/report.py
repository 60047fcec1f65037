"""Sweep report: one row per setting (the swept values but the seed), mean +- std over seeds of ``val/acc`` (what
searches and choices go by) beside ``test/acc`` (reported, never selected on).

``mpl-report <sweep dir>`` or, at the end of every multirun, the :class:`SweepReport` Hydra callback. Reads each
job's ``.hydra/overrides.yaml`` and ``metrics.json``; works on a half-finished or partly failed sweep (a job
without a completed ``metrics.json`` counts as failed or unfinished). Writes ``report.md``, ``report.csv`` and
``report.png`` into the sweep dir.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf.errors import OmegaConfBaseException

from mpl_runner.distributed import world_from_env
from mpl_runner.files import atomic_write_bytes

METRIC = "test/acc"
VAL_METRIC = "val/acc"
SEED_KEYS = ("seed",)


def _mean(values: list[float]) -> float | None:
    return statistics.mean(values) if values else None


def _std(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)


@dataclass
class Row:
    setting: str
    accs: list[float] = field(default_factory=list)  # test/acc of each completed job
    vals: list[float] = field(default_factory=list)  # val/acc of those that have a validation split
    failed: list[str] = field(default_factory=list)  # "<job>: <error>"
    unfinished: list[str] = field(default_factory=list)

    @property
    def mean(self) -> float | None:
        return _mean(self.accs)

    @property
    def std(self) -> float | None:
        return _std(self.accs)

    @property
    def val_mean(self) -> float | None:
        return _mean(self.vals)

    @property
    def val_std(self) -> float | None:
        return _std(self.vals)


def _parse(overrides: list[str]) -> dict[str, str]:
    return dict(o.split("=", 1) if "=" in o else (o, "") for o in overrides)


def collect(sweep_dir: Path) -> tuple[list[Row], dict[str, str]]:
    """Rows keyed by the values that differ between jobs (seed aside), and the overrides all jobs share."""
    jobs = sorted((p for p in sweep_dir.iterdir() if (p / ".hydra" / "overrides.yaml").exists()),
                  key=lambda p: (len(p.name), p.name))
    overrides = {job: _parse(yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []) for job in jobs}
    keys = {k for o in overrides.values() for k in o if k.lstrip("+~") not in SEED_KEYS}
    swept = sorted(k for k in keys if len({o.get(k) for o in overrides.values()}) > 1)
    common = {k: v for k, v in next(iter(overrides.values()), {}).items() if k in keys and k not in swept}
    rows: dict[str, Row] = {}
    for job in jobs:
        setting = " ".join(f"{k}={overrides[job].get(k, '(default)')}" for k in swept) or "(all jobs)"
        row = rows.setdefault(setting, Row(setting))
        try:
            metrics = json.loads((job / "metrics.json").read_text())
        except FileNotFoundError:
            row.unfinished.append(job.name)
            continue
        except json.JSONDecodeError as err:
            row.failed.append(f"{job.name}: unreadable metrics.json ({err})")
            continue
        if metrics.get("status") == "completed" and METRIC in metrics:
            row.accs.append(float(metrics[METRIC]))
            if metrics.get(VAL_METRIC) is not None:
                row.vals.append(float(metrics[VAL_METRIC]))
        elif metrics.get("status") == "interrupted":  # stopped by a signal, with a checkpoint to go on from
            row.unfinished.append(job.name)
        else:
            row.failed.append(f"{job.name}: {metrics.get('error', metrics.get('status', 'unknown'))}")
    return list(rows.values()), common


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def markdown(rows: list[Row], common: dict[str, str], sweep_dir: Path) -> str:
    shared = " ".join(f"{k}={v}" for k, v in common.items()) or "none"
    lines = [f"# Sweep report: {sweep_dir}", "",
             f"`{VAL_METRIC}` and `{METRIC}` (%) over seeds: choose on val, report test. Failed and unfinished "
             f"jobs are listed, not averaged. Overrides shared by every job: `{shared}`.", "",
             "| setting | val mean | val std | test mean | test std | seeds | failed | unfinished |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.setting} | {_pct(r.val_mean)} | {_pct(r.val_std)} | {_pct(r.mean)} | {_pct(r.std)} | "
                     f"{len(r.accs)} | {len(r.failed)} | {len(r.unfinished)} |")
    errors = [e for r in rows for e in r.failed]
    if errors:
        lines += ["", "## Failed jobs", ""] + [f"- job {e}" for e in errors]
    return "\n".join(lines) + "\n"


def csv_text(rows: list[Row]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["setting", "val_mean", "val_std", "mean", "std", "seeds", "failed", "unfinished", "values",
                     "val_values"])
    for r in rows:
        writer.writerow([r.setting, r.val_mean, r.val_std, r.mean, r.std, len(r.accs), len(r.failed),
                         len(r.unfinished), " ".join(f"{a:.6f}" for a in r.accs), " ".join(f"{a:.6f}" for a in r.vals)])
    return buf.getvalue()


def plot(rows: list[Row]):
    import matplotlib.pyplot as plt  # after mpl_runner.figures (imported by write_report) chose the Agg backend

    done = [r for r in rows if r.accs]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(done) + 2), 4.5), layout="constrained")
    positions = list(range(len(done)))
    if any(r.vals for r in done):
        ax.bar([p - 0.2 for p in positions], [100 * (r.val_mean or 0) for r in done], width=0.4, label=VAL_METRIC,
               yerr=[100 * (r.val_std or 0) for r in done], capsize=3, color="tab:gray")
    ax.bar([p + 0.2 for p in positions], [100 * r.mean for r in done], width=0.4, label=METRIC,
           yerr=[100 * r.std for r in done], capsize=3, color="tab:blue")
    labels = [r.setting if len(r.setting) <= 40 else r.setting[:39] + "…" for r in done]
    ax.set_xticks(positions, labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("accuracy (%), mean ± std over seeds")
    ax.legend(fontsize=7)
    return fig


def write_report(sweep_dir: Path) -> tuple[list[Row], dict[str, str]]:
    sweep_dir = Path(sweep_dir)
    rows, common = collect(sweep_dir)
    atomic_write_bytes(sweep_dir / "report.md", markdown(rows, common, sweep_dir).encode())
    atomic_write_bytes(sweep_dir / "report.csv", csv_text(rows).encode())
    if any(r.accs for r in rows):
        from mpl_runner.figures import save_png  # matplotlib only when there is something to plot

        save_png(plot(rows), sweep_dir / "report.png")
    return rows, common


class SweepReport(Callback):
    """Keep ``report.*`` in a multirun's sweep dir current: after every job (Hydra skips on_multirun_end when a
    job failed, and a half-finished sweep should have a report too) and when the multirun ends."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        # The sweep dir exists before any job, so a sweeper can keep files there (Optuna's SQLite storage).
        try:
            sweep_dir = config.hydra.sweep.dir
        except OmegaConfBaseException:
            return  # a config error (trainer.resume in a multirun): the launcher reports it as the run's error
        Path(sweep_dir).mkdir(parents=True, exist_ok=True)

    def on_job_end(self, config: Any, job_return: Any = None, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN and world_from_env().is_main:
            self.on_multirun_end(config)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            write_report(sweep_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mpl-report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory, e.g. outputs/multirun/<date>_<time>")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"mpl-report: error: {args.sweep_dir} is not a directory", file=sys.stderr)
        sys.exit(2)
    rows, common = write_report(args.sweep_dir)
    if not rows:
        print(f"mpl-report: error: no jobs (no */.hydra/overrides.yaml) under {args.sweep_dir}", file=sys.stderr)
        sys.exit(2)
    print(markdown(rows, common, args.sweep_dir), end="")
    print(f"wrote {args.sweep_dir}/report.md, report.csv" + (", report.png" if any(r.accs for r in rows) else ""))


if __name__ == "__main__":
    main()

"""Sweep report: one row per setting (the swept values but the seed), mean +- std over seeds of ``val/acc`` (what
searches and choices go by) beside ``test/acc`` (reported, never selected on).

``mpl-report <sweep dir>`` or, at the end of every multirun, the :class:`SweepReport` Hydra callback. Reads each
job's ``.hydra/overrides.yaml`` and ``metrics.json``; works on a half-finished or partly failed sweep (a job
without a completed ``metrics.json`` counts as failed or unfinished; one whose files cannot be read is listed as
unreadable). Writes ``report.md``, ``report.csv`` and ``report.png`` into the sweep dir, and nothing into a dir
that holds no jobs.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from hydra.types import RunMode

from mpl_runner.core.distributed import world_from_env
from mpl_runner.core.errors import one_line
from mpl_runner.core.files import atomic_write_bytes

METRIC = "test/acc"
VAL_METRIC = "val/acc"
PROVENANCE = "provenance/"  # which code and machine made a job's numbers (mpl_runner/core/provenance.py)
SEED_KEYS = ("seed",)
SEARCH_SECTION = "\n## Search\n"  # (mpl_runner/search/study_report.py)


def _mean(values: list[float]) -> float | None:
    return statistics.mean(values) if values else None


def _std(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)


@dataclass
class Row:
    setting: str
    accs: list[float] = field(default_factory=list)  # test/acc of each completed job that has a test split
    vals: list[float] = field(default_factory=list)  # val/acc of those that have a validation split
    failed: list[str] = field(default_factory=list)  # "<job>: <error>"
    pruned: list[str] = field(default_factory=list)  # "<job>: step <n>" (stopped by a search's pruner)
    unfinished: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # "<job>: metrics.json: <why>"

    @property
    def seeds(self) -> int:
        """Completed jobs."""
        return max(len(self.accs), len(self.vals))

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


class Unreadable(Exception):
    """A job file that is not what a run writes: ``<file>: <why>``."""


def _job_order(job: Path) -> tuple[float, str]:
    """Jobs by number (dirs ``<num>`` or ``<num>_<overrides>``)."""
    num = re.match(r"\d+", job.name)
    return (int(num.group()) if num else math.inf, job.name)


def _overrides(job: Path) -> dict[str, str]:
    path = job / ".hydra" / "overrides.yaml"
    try:
        overrides = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise Unreadable(f".hydra/overrides.yaml: {one_line(err)[:200]}") from None
    overrides = [] if overrides is None else overrides
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise Unreadable(".hydra/overrides.yaml: not a list of overrides")
    return _parse(overrides)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _metrics(job: Path) -> dict[str, Any] | None:
    """The job's run record, or None where it has none yet (unfinished)."""
    try:
        metrics = json.loads((job / "metrics.json").read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise Unreadable(f"metrics.json: {one_line(err)[:200]}") from None
    if not isinstance(metrics, dict) or metrics.get("status") not in ("completed", "interrupted", "failed", "pruned"):
        raise Unreadable("metrics.json: not a run record (its status is none of completed, interrupted, failed, "
                         "pruned)")
    # (a data set without a test split, an image folder without test/, reports val/acc alone)
    if metrics["status"] == "completed" and not (
        (_number(metrics.get(METRIC)) or (metrics.get(METRIC) is None and _number(metrics.get(VAL_METRIC))))
        and (metrics.get(VAL_METRIC) is None or _number(metrics[VAL_METRIC]))
    ):
        raise Unreadable(f"metrics.json: completed, but {METRIC} or {VAL_METRIC} is not a finite number")
    return metrics


@dataclass
class Sweep:
    rows: list[Row]  # one per setting of the swept keys (seed aside)
    common: dict[str, str]  # the overrides every job shares
    unreadable: list[str]  # "<job>: <file>: <why>", every job with a file that could not be read
    jobs: int  # folders that hold .hydra/overrides.yaml
    provenance: dict[str, list[str]] = field(default_factory=dict)  # a key on which jobs differ -> its values


def collect(sweep_dir: Path) -> Sweep:
    """Rows keyed by the values that differ between jobs (seed aside), and the overrides all jobs share. A job whose
    overrides cannot be read is in no row; one whose metrics.json cannot be read counts as unreadable in its row."""
    jobs = sorted((p for p in sweep_dir.iterdir() if (p / ".hydra" / "overrides.yaml").is_file()), key=_job_order)
    overrides, unreadable = {}, []
    for job in jobs:
        try:
            overrides[job] = _overrides(job)
        except Unreadable as err:
            unreadable.append((job, f"{job.name}: {err}"))
    keys = {k for o in overrides.values() for k in o if k.lstrip("+~") not in SEED_KEYS}
    swept = sorted(k for k in keys if len({o.get(k) for o in overrides.values()}) > 1)
    common = {k: v for k, v in next(iter(overrides.values()), {}).items() if k in keys and k not in swept}
    rows: dict[str, Row] = {}
    origins: dict[str, set[str]] = {}
    for job in overrides:
        setting = " ".join(f"{k}={overrides[job].get(k, '(default)')}" for k in swept) or "(all jobs)"
        row = rows.setdefault(setting, Row(setting))
        try:
            metrics = _metrics(job)
        except Unreadable as err:
            row.unreadable.append(f"{job.name}: {err}")
            unreadable.append((job, f"{job.name}: {err}"))
            continue
        for key, value in (metrics or {}).items():
            if key.startswith(PROVENANCE):
                origins.setdefault(key, set()).add(str(value))
        if metrics is None or metrics["status"] == "interrupted":  # (stopped by a signal: a checkpoint to go on from)
            row.unfinished.append(job.name)
        elif metrics["status"] == "completed":
            if metrics.get(METRIC) is not None:
                row.accs.append(float(metrics[METRIC]))
            if metrics.get(VAL_METRIC) is not None:
                row.vals.append(float(metrics[VAL_METRIC]))
        elif metrics["status"] == "pruned":
            row.pruned.append(f"{job.name}: step {metrics.get('step')}")
        else:
            row.failed.append(f"{job.name}: {metrics.get('error', 'failed')}")
    unreadable.sort(key=lambda entry: _job_order(entry[0]))
    differ = {k: sorted(v) for k, v in sorted(origins.items()) if len(v) > 1}
    return Sweep(list(rows.values()), common, [text for _, text in unreadable], len(jobs), differ)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def markdown(sweep: Sweep, sweep_dir: Path) -> str:
    shared = " ".join(f"{k}={v}" for k, v in sweep.common.items()) or "none"
    lines = [f"# Sweep report: {sweep_dir}", "",
             f"`{VAL_METRIC}` and `{METRIC}` (%) over seeds: choose on val, report test. Failed, pruned, "
             f"unfinished and unreadable jobs are listed, not averaged. Overrides shared by every job: `{shared}`.", "",
             "| setting | val mean | val std | test mean | test std | seeds | failed | pruned | unfinished | "
             "unreadable |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sweep.rows:
        lines.append(f"| {r.setting} | {_pct(r.val_mean)} | {_pct(r.val_std)} | {_pct(r.mean)} | {_pct(r.std)} | "
                     f"{r.seeds} | {len(r.failed)} | {len(r.pruned)} | {len(r.unfinished)} | {len(r.unreadable)} |")
    errors = [e for r in sweep.rows for e in r.failed]
    if errors:
        lines += ["", "## Failed jobs", ""] + [f"- job {e}" for e in errors]
    if sweep.unreadable:
        lines += ["", "## Unreadable jobs", ""] + [f"- job {e}" for e in sweep.unreadable]
    if sweep.provenance:
        lines += ["", "## Jobs made by different code or machines", ""] + [
            f"- `{k}`: " + ", ".join(f"`{v}`" for v in values) for k, values in sweep.provenance.items()]
    return "\n".join(lines) + "\n"


def csv_text(rows: list[Row]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["setting", "val_mean", "val_std", "mean", "std", "seeds", "failed", "pruned", "unfinished",
                     "unreadable", "values", "val_values"])
    for r in rows:
        writer.writerow([r.setting, r.val_mean, r.val_std, r.mean, r.std, r.seeds, len(r.failed), len(r.pruned),
                         len(r.unfinished), len(r.unreadable), " ".join(f"{a:.6f}" for a in r.accs),
                         " ".join(f"{a:.6f}" for a in r.vals)])
    return buf.getvalue()


def plot(rows: list[Row]):
    import matplotlib.pyplot as plt  # after mpl_runner.data.figures (imported by write_report) chose the Agg backend

    done = [r for r in rows if r.seeds]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(done) + 2), 4.5), layout="constrained")
    positions = list(range(len(done)))
    if any(r.vals for r in done):
        ax.bar([p - 0.2 for p in positions], [100 * (r.val_mean or 0) for r in done], width=0.4, label=VAL_METRIC,
               yerr=[100 * (r.val_std or 0) for r in done], capsize=3, color="tab:gray")
    ax.bar([p + 0.2 for p in positions], [100 * (r.mean or 0) for r in done], width=0.4, label=METRIC,
           yerr=[100 * (r.std or 0) for r in done], capsize=3, color="tab:blue")
    labels = [r.setting if len(r.setting) <= 40 else r.setting[:39] + "…" for r in done]
    ax.set_xticks(positions, labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("accuracy (%), mean ± std over seeds")
    ax.legend(fontsize=7)
    return fig


def write_report(sweep_dir: Path, sweep: Sweep | None = None, study: Any = None) -> Sweep:
    """Write ``report.*`` for ``sweep`` (collected from ``sweep_dir`` unless given); a dir without jobs gets
    nothing. ``study``: a search's Optuna study, whose section and pictures join the report
    (:mod:`mpl_runner.search.study_report`)."""
    sweep_dir = Path(sweep_dir)
    sweep = sweep or collect(sweep_dir)
    if not sweep.jobs:
        return sweep
    text = markdown(sweep, sweep_dir)
    if study is not None:
        from mpl_runner.search import study_report as search_report

        text += "\n".join(search_report.section(study, search_report.write_plots(study, sweep_dir))) + "\n"
    else:  # (a search's section, which its sweeper wrote with the study in hand: kept, e.g. an in-memory study's)
        try:
            before = (sweep_dir / "report.md").read_text()
        except (OSError, UnicodeDecodeError):
            before = ""
        if SEARCH_SECTION in before:
            text += SEARCH_SECTION + before.split(SEARCH_SECTION, 1)[1]
    atomic_write_bytes(sweep_dir / "report.md", text.encode())
    atomic_write_bytes(sweep_dir / "report.csv", csv_text(sweep.rows).encode())
    if any(r.seeds for r in sweep.rows):
        from mpl_runner.data.figures import save_png  # matplotlib only when there is something to plot

        save_png(plot(sweep.rows), sweep_dir / "report.png")
    return sweep


class SweepReport(Callback):
    """Keep ``report.*`` in a multirun's sweep dir current: after every job (Hydra skips on_multirun_end when a
    job failed, and a half-finished sweep should have a report too) and when the multirun ends. (The sweepers
    make the sweep dir, once every job is checked: :mod:`mpl_runner.search.sweep`.)"""

    def on_job_end(self, config: Any, job_return: Any = None, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN and world_from_env().is_main:
            self._write(config)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        if "optuna" not in str(config.hydra.sweeper.get("_target_", "")).lower():  # (a search wrote its own, with
            self._write(config)                                                  # its study: search_report.py)

    def _write(self, config: Any) -> None:
        from mpl_runner.search import sweep

        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir() and not sweep.DRY_RUN:
            write_report(sweep_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mpl-report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory, e.g. outputs/multirun/<date>_<time>")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"mpl-report: error: {args.sweep_dir} is not a directory", file=sys.stderr)
        sys.exit(2)
    sweep = collect(args.sweep_dir)
    if not sweep.jobs:  # not a sweep dir: nothing is written there
        print(f"mpl-report: error: no jobs (no */.hydra/overrides.yaml) under {args.sweep_dir}", file=sys.stderr)
        sys.exit(2)
    study = None
    if (args.sweep_dir / "optimization_results.yaml").is_file():  # a search: Optuna only then
        from mpl_runner.search.study_report import load_study

        study = load_study(args.sweep_dir)
    write_report(args.sweep_dir, sweep, study)
    print((args.sweep_dir / "report.md").read_text(), end="")
    print(f"wrote {args.sweep_dir}/report.md, report.csv"
          + (", report.png" if any(r.seeds for r in sweep.rows) else ""))


if __name__ == "__main__":
    main()

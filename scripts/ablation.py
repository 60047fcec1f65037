"""Does MPL's teacher feedback help? Each benchmark runs its settings on the same seeds; every MPL setting is paired
with its control (the same run with ``method.feedback=none``: the teacher learns from labels and UDA alone).

Writes ``docs/ablation.{json,md,png}``: per setting the mean test accuracy of the handed-out model with a 95 %
BCa bootstrap interval, the validation accuracy, and for each MPL setting the paired difference from its control
with its 95 % BCa interval and, beside it, the interval after Holm's correction across the comparisons of its
table (scripts/ablation_stats.py). Every setting of a benchmark runs the same seeds. Nothing is selected here: the
presets were fixed on validation accuracy before (docs/design.md section 9); test accuracy is reported only.

    python scripts/ablation.py                        # every benchmark, all seeds (about an hour on 2 cores)
    python scripts/ablation.py --benchmarks paper_toy --seeds 0-4 --jobs 2
    python scripts/ablation.py --benchmarks paper_toy_open   # the toy's untried settings (+ docs/ablation_toy_boundaries.png)

Runs go to outputs/ablation/<benchmark>/<setting>/<seed>/, each with ``ablation_key.json``: the git commit, whether
the checkout was dirty (and a digest of its diff), and the full overrides that made it. A finished result is reused
only when that key is this checkout's and this job's; any other is run again (``--refuse-stale``: stop instead,
with one line naming the run and what differs), so an interrupted ablation goes on where it stopped and a code
change never mixes old numbers with new ones. docs/ablation.json records every row's commit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import multiprocessing
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation_stats import Paired, holm, mean_interval  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "outputs" / "ablation"
NONE = "method.feedback=none"
#: what every ablation run adds to its setting's overrides (and its seed): part of the cache key
FIXED = ["device=cpu", "trainer.num_threads=1", "trainer.progress=false", "trainer.checkpoint_interval=null"]
KEY_FILE = "ablation_key.json"


@dataclass
class Benchmark:
    title: str
    short: str  # the figure's panel title
    seeds: int  # every setting runs seeds 0 .. seeds-1: what the prose compares has the same seeds
    settings: dict[str, list[str]]  # name -> overrides
    controls: dict[str, str] = field(default_factory=dict)  # MPL setting -> its feedback=none control
    # a setting every MPL setting is also compared with (paired by seed), e.g. "supervised": the test of the paper's
    # Figure 2 (MPL >= supervised + FIGURE2_POINTS with an interval that excludes 0)
    reference: str | None = None
    boundaries: bool = False  # a decision-boundary figure of the best and median seed of each setting (2-d data)


def mpl_with_control(name: str, *overrides: str) -> dict[str, list[str]]:
    return {name: list(overrides), f"{name}, feedback=none": [*overrides, NONE]}


def _controls(settings: dict[str, list[str]]) -> dict[str, str]:
    return {name[: -len(", feedback=none")]: name for name in settings if name.endswith(", feedback=none")}


def benchmark(title: str, short: str, seeds: int, settings: dict[str, list[str]], reference: str | None = None,
              boundaries: bool = False) -> Benchmark:
    return Benchmark(title, short, seeds, settings, _controls(settings), reference, boundaries)


FIGURE2_POINTS = 5.0  # what "reproduces the paper's Figure 2" asks of MPL over supervised, in points
TOY = ["experiment=two_moons_paper"]
TOY_EXACT = [*TOY, "method.variant=exact", "method.pseudo_label=soft"]
#: the toy where MPL should have the most room: 3x the steps (30k unlabeled batches), the teacher's lr 10x the
#: student's (1.0 against 0.1)
TOY_ROOM = ["trainer.steps=30000", "optim.lr=1.0", "method.student_lr=0.1"]


BENCHMARKS = {
    "two_moons": benchmark(
        "Two moons, 6 + 6 labels (the default run's data and MLP)", "two moons, 6 + 6 labels", 30, {
            "supervised": ["experiment=two_moons_supervised"],
            "uda": ["method=uda"],
            **mpl_with_control("mpl"),
            **mpl_with_control("mpl without UDA", "method.uda.weight=0"),
            **mpl_with_control("exact mpl", "experiment=two_moons_exact"),
            **mpl_with_control("exact mpl without UDA", "experiment=two_moons_exact", "method.uda.weight=0"),
        }),
    "paper_toy": benchmark(
        "The paper's toy (Figure 2): 3 + 3 labels, 8-8 sigmoid MLP, U(-0.1, 0.1) init, plain SGD 0.1, no UDA",
        "the paper's toy, 3 + 3 labels", 30, {
            "supervised": ["experiment=two_moons_paper_supervised"],
            **mpl_with_control("mpl", "experiment=two_moons_paper"),
            **mpl_with_control("exact mpl", "experiment=two_moons_paper", "method.variant=exact",
                               "method.pseudo_label=soft"),
        }),
    "digits": benchmark(
        "8x8 digits (scikit-learn), 5 labels per class, small CNN", "8x8 digits, 5 labels a class", 10, {
            "supervised": ["experiment=digits_supervised"],
            "uda": ["experiment=digits_uda"],
            **mpl_with_control("mpl", "experiment=digits_mpl"),
        }),
    # issue 20: what had not been tried on the toy, each against its feedback=none control and supervised
    "paper_toy_open": benchmark(
        "The paper's toy, the settings not tried before: a teacher without the labeled loss, the reward on the "
        "validation draw (the paper's first version), sampled pseudo labels (REINFORCE), and more room (3x steps, "
        "teacher lr 10x the student's)", "the paper's toy, untried settings", 30, {
            "supervised": ["experiment=two_moons_paper_supervised"],
            **mpl_with_control("mpl, no labeled loss", *TOY, "method.teacher_labeled_weight=0"),
            **mpl_with_control("exact mpl, no labeled loss", *TOY_EXACT, "method.teacher_labeled_weight=0"),
            **mpl_with_control("mpl, validation reward", *TOY, "method.feedback_batch=validation"),
            **mpl_with_control("exact mpl, validation reward", *TOY_EXACT, "method.feedback_batch=validation"),
            **mpl_with_control("mpl, sampled labels", *TOY, "method.pseudo_label=sample"),
            **mpl_with_control("mpl, 3x steps, teacher lr 10x", *TOY, *TOY_ROOM),
            **mpl_with_control("exact mpl, 3x steps, teacher lr 10x", *TOY_EXACT, *TOY_ROOM),
        }, reference="supervised", boundaries=True),
}
#: what ``python scripts/ablation.py`` runs without --benchmarks (paper_toy_open is asked for by name)
DEFAULT_BENCHMARKS = ["two_moons", "paper_toy", "digits"]


# --- running ----------------------------------------------------------------------------------------------------


def run_dir_of(runs: Path, bench: str, setting: str, seed: int) -> Path:
    return runs / bench / setting.replace(" ", "_").replace(",", "").replace("=", "-") / str(seed)


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout


def code_version() -> dict:
    """Which code runs: the commit, whether the checkout differs from it (tracked files changed, or files git does
    not ignore added; the ablation's own outputs in docs/ aside), and then a digest of those changes, so two
    different uncommitted states never share a key."""
    commit = _git("rev-parse", "HEAD").strip()
    outputs = ":(exclude)docs/ablation*"
    digest = hashlib.sha256(_git("diff", "HEAD", "--", ".", outputs).encode())
    untracked = _git("ls-files", "--others", "--exclude-standard", "-z", "--", ".", outputs).split("\0")
    for name in sorted(filter(None, untracked)):
        digest.update(name.encode() + b"\0" + (REPO / name).read_bytes())
    dirty = digest.hexdigest() != hashlib.sha256(b"").hexdigest()
    return {"commit": commit, "dirty": dirty, "diff": digest.hexdigest()[:16] if dirty else ""}


def job_overrides(overrides: list[str], seed: int) -> list[str]:
    """Everything the run is composed with (the cache key's overrides)."""
    return [*overrides, f"seed={seed}", *FIXED]


def cache_key(version: dict, overrides: list[str], seed: int) -> dict:
    return {**version, "overrides": job_overrides(overrides, seed)}


def cached(run_dir: Path, key: dict) -> str:
    """``"reuse"`` (a finished run made by this key), ``"new"`` (no finished run) or ``"stale"`` (a finished run
    made by other code or other overrides, or by a version of this script that wrote no key)."""
    done = run_dir / "metrics.json"
    if not done.exists() or json.loads(done.read_text()).get("status") != "completed":
        return "new"
    stored = run_dir / KEY_FILE
    return "reuse" if stored.exists() and json.loads(stored.read_text()) == key else "stale"


def why_stale(run_dir: Path, key: dict) -> str:
    """One line: what made the run in ``run_dir`` and how it differs from ``key``."""
    stored = run_dir / KEY_FILE
    if not stored.exists():
        return f"{run_dir} has no {KEY_FILE} (made by an older scripts/ablation.py): its code is unknown"
    old = json.loads(stored.read_text())
    made = f"commit {old.get('commit', '?')[:10]}{' (dirty ' + old.get('diff', '') + ')' if old.get('dirty') else ''}"
    now = f"commit {key['commit'][:10]}{' (dirty ' + key['diff'] + ')' if key['dirty'] else ''}"
    if old.get("overrides") != key["overrides"]:
        return f"{run_dir} was made with overrides {old.get('overrides')}, this job has {key['overrides']}"
    return f"{run_dir} was made by {made}, this checkout is {now}"


def plan(jobs: list[tuple], runs: Path, version: dict, refuse_stale: bool) -> list[tuple]:
    """The jobs with their run dir and key; stale results are removed (to be run again) or, with ``refuse_stale``,
    stop everything with one line before any run starts."""
    planned = []
    for bench, setting, overrides, seed in jobs:
        run_dir, key = run_dir_of(runs, bench, setting, seed), cache_key(version, overrides, seed)
        state = cached(run_dir, key)
        stored = run_dir / KEY_FILE
        if state == "new" and stored.exists() and json.loads(stored.read_text()) != key:
            shutil.rmtree(run_dir)  # an unfinished run of other code or overrides: not to be resumed
        if state == "stale":
            if refuse_stale:
                raise SystemExit(f"ablation.py: error: stale result: {why_stale(run_dir, key)} "
                                 "(run without --refuse-stale to run it again)")
            shutil.rmtree(run_dir)
        planned.append((bench, setting, overrides, seed, str(run_dir), key))
    return planned


def run_one(job: tuple) -> dict:
    """One run in this process (Hydra composes the config as ``mpl-run`` would), or its finished result when its
    key matches (:func:`plan` removed any other); its metrics."""
    bench, setting, overrides, seed, run_dir, key = job
    run_dir = Path(run_dir)
    if cached(run_dir, key) == "reuse":
        record = json.loads((run_dir / "metrics.json").read_text())
    else:
        from mpl_runner.cli.config import compose_config
        from mpl_runner.core.files import atomic_write_json
        from mpl_runner.loop.run import run

        logger = logging.getLogger("mpl_runner")
        level = logger.level
        logger.setLevel(logging.WARNING)  # (hundreds of runs: their progress lines are not wanted here)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(run_dir / KEY_FILE, key)  # before the run: a finished run always has its key
            record = run(compose_config(*key["overrides"]), run_dir)
        finally:
            logger.setLevel(level)
    return {"benchmark": bench, "setting": setting, "seed": seed, "val": record.get("val/acc"),
            "test": record["test/acc"], "teacher_test": record.get("test/teacher/acc"),
            "train_seconds": record["train_seconds"], "h_abs": mean_abs_h(run_dir),
            "commit": key["commit"], "dirty": key["dirty"], "diff": key["diff"], "run_dir": str(run_dir)}


def mean_abs_h(run_dir: Path) -> float | None:
    """The mean |h| the run logged (TensorBoard's train/mpl/h), or None for a method without a student."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    if "train/mpl/h" not in events.Tags()["scalars"]:
        return None
    return float(np.mean([abs(e.value) for e in events.Scalars("train/mpl/h")]))


def summarise(results: list[dict], benchmarks: dict[str, Benchmark] | None = None) -> dict:
    """Per benchmark and setting: the seeds, accuracies, their BCa intervals and the commits that made them; per
    MPL setting its paired difference from its control (and from the benchmark's reference, if any) on the seeds
    both have, with Holm's correction across each table's comparisons."""
    out = {}
    for bench_name, bench in (benchmarks or BENCHMARKS).items():
        rows = [r for r in results if r["benchmark"] == bench_name]
        if not rows:
            continue
        summary = {"title": bench.title, "short": bench.short, "settings": {}}
        by_setting = {s: {r["seed"]: r for r in rows if r["setting"] == s} for s in bench.settings}
        for setting in bench.settings:
            got = [by_setting[setting][seed] for seed in sorted(by_setting[setting])]
            if not got:
                continue
            test = np.array([r["test"] for r in got]) * 100
            val = np.array([np.nan if r["val"] is None else r["val"] for r in got], dtype=float) * 100
            entry = {"seeds": [r["seed"] for r in got], "test": test.tolist(), "val": val.tolist(),
                     "test_mean": float(test.mean()), "test_ci": mean_interval(test),
                     "val_mean": float(np.nanmean(val)) if not np.isnan(val).all() else None,
                     "train_seconds": float(np.mean([r["train_seconds"] for r in got])),
                     "commits": sorted({r["commit"] + ("+dirty " + r["diff"] if r["dirty"] else "") for r in got})}
            if got[0].get("h_abs") is not None:
                entry["h_abs_mean"] = float(np.mean([r["h_abs"] for r in got]))
                entry["teacher_test_mean"] = float(np.mean([r["teacher_test"] for r in got])) * 100
            summary["settings"][setting] = entry
        for kind, against in (("vs_control", bench.controls), ("vs_reference", {
                s: bench.reference for s in bench.controls} if bench.reference else {})):
            comparisons = {}
            for setting, other in against.items():
                ours, theirs = by_setting.get(setting, {}), by_setting.get(other, {})
                seeds = sorted(set(ours) & set(theirs))
                if seeds:
                    comparisons[setting] = Paired([100 * (ours[s]["test"] - theirs[s]["test"]) for s in seeds])
            for setting, result in holm(comparisons).items():
                summary["settings"][setting][kind] = {"against": against[setting], **result}
        if bench.reference:
            summary["figure2"] = [s for s, e in summary["settings"].items()
                                  if "vs_reference" in e and e["vs_reference"]["mean"] >= FIGURE2_POINTS
                                  and e["vs_reference"]["holm_significant"]]
        out[bench_name] = summary
    return out


# --- writing ----------------------------------------------------------------------------------------------------


def _difference(d: dict | None) -> tuple[str, str, str, str]:
    """(mean, raw interval, Holm interval, pairs that differ) cells of a comparison."""
    if not d:
        return "", "", "", ""
    value = f"{d['mean']:+.2f}"
    return (f"**{value}**" if d["holm_significant"] else (f"*{value}*" if d["significant"] else value),
            f"[{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]",
            f"[{d['holm_ci'][0]:+.2f}, {d['holm_ci'][1]:+.2f}] ({100 * d['holm_level']:.1f} %)",
            f"{d['nonzero_pairs']} of {d['pairs']}")


def _seeds(seeds: list[int]) -> str:
    return f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else ",".join(map(str, seeds))


def markdown(summary: dict) -> str:
    lines = ["# Does the teacher's feedback help? MPL against its no-feedback control", "",
             "Test accuracy (%) of the model each method hands out (the student for MPL, the teacher for UDA): mean "
             "over seeds with a 95 % BCa bootstrap interval (`scipy.stats.bootstrap`); val: mean accuracy on the "
             "validation split. Every setting of a table runs the same seeds. \"vs control\": the paired difference "
             "(same seeds) from the same setting with `method.feedback=none` (h measured but not fed back), with its "
             "95 % BCa interval and, beside it, the interval after Holm's correction across the table's comparisons "
             "(at the level Holm's step-down gives that comparison); **bold**: significant after the correction, "
             "*italic*: before it only. \"pairs that differ\": seeds whose two results are not identical (a mean "
             "carried by a few seeds shows here). Teacher test: the MPL teacher's test accuracy (the model the "
             "feedback acts on); mean abs h: the mean of |h| over the logged steps. Train s: training seconds per "
             "run, one thread, two runs at a time on a 2-core CPU. Commit: the code that made the rows. Written by "
             "`python scripts/ablation.py`.", ""]
    for bench in summary.values():
        lines += [f"## {bench['title']}", "", "| setting | seeds | test mean | 95 % interval | val mean | "
                  "vs control | 95 % interval | Holm interval | pairs that differ | teacher test | mean abs h | "
                  "train s | commit |", "|---|---|---:|---|---:|---:|---|---|---:|---:|---:|---:|---|"]
        for name, e in bench["settings"].items():
            teacher = f"{e['teacher_test_mean']:.2f}" if "teacher_test_mean" in e else ""
            h = f"{e['h_abs_mean']:.1e}" if "h_abs_mean" in e else ""
            val = f"{e['val_mean']:.2f}" if e.get("val_mean") is not None else ""
            lines.append(f"| {name} | {_seeds(e['seeds'])} | {e['test_mean']:.2f} | "
                         f"[{e['test_ci'][0]:.2f}, {e['test_ci'][1]:.2f}] | {val} | "
                         f"{' | '.join(_difference(e.get('vs_control')))} | {teacher} | {h} | "
                         f"{e['train_seconds']:.1f} | {', '.join(c[:10] for c in e['commits'])} |")
        lines.append("")
        against = [(n, e["vs_reference"]) for n, e in bench["settings"].items() if "vs_reference" in e]
        if against:
            lines += [f"Against {against[0][1]['against']} (same seeds; Holm across these {len(against)}):", "",
                      "| setting | MPL - reference | 95 % interval | Holm interval | pairs that differ |",
                      "|---|---:|---|---|---:|"]
            lines += [f"| {n} | {' | '.join(_difference(d))} |" for n, d in against]
            found = bench.get("figure2") or []
            lines += ["", f"Reproduces the paper's Figure 2 (MPL >= {against[0][1]['against']} + {FIGURE2_POINTS:g} "
                      f"points, Holm interval excluding 0): {', '.join(found) if found else 'none'}.", ""]
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(summary), figsize=(5 * len(summary), 8), squeeze=False,
                             height_ratios=[3, 2], layout="constrained")
    for (top, bottom), bench in zip(axes.T, summary.values()):
        names = list(bench["settings"])
        means = [bench["settings"][n]["test_mean"] for n in names]
        errs = np.array([[m - bench["settings"][n]["test_ci"][0], bench["settings"][n]["test_ci"][1] - m]
                         for n, m in zip(names, means)]).T
        colors = ["tab:gray" if n.endswith("feedback=none") else "tab:blue" for n in names]
        top.bar(range(len(names)), means, yerr=errs, capsize=3, color=colors)
        top.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=7)
        low = min(e["test_ci"][0] for e in bench["settings"].values())
        top.set_ylim(max(0, low - 5), 100)
        top.set_title(bench["short"], fontsize=10)
        top.set_ylabel("test accuracy (%), mean, 95 % interval", fontsize=8)
        paired = [(n, e["vs_control"]) for n, e in bench["settings"].items() if "vs_control" in e]
        diffs = [d["mean"] for _, d in paired]
        bars = np.array([[d["mean"] - d["ci"][0], d["ci"][1] - d["mean"]] for _, d in paired]).T
        holm_bars = np.array([[d["mean"] - d["holm_ci"][0], d["holm_ci"][1] - d["mean"]] for _, d in paired]).T
        bottom.errorbar(np.arange(len(paired)) + 0.12, diffs, yerr=holm_bars, fmt="none", capsize=3,
                        color="tab:orange", label="Holm-corrected")
        bottom.errorbar(range(len(paired)), diffs, yerr=bars, fmt="o", capsize=4, color="tab:blue", label="raw 95 %")
        if paired:
            bottom.legend(fontsize=7)
        bottom.axhline(0, color="k", linewidth=0.8)
        bottom.set_xticks(range(len(paired)), [n for n, _ in paired], rotation=20, ha="right", fontsize=7)
        bottom.set_xlim(-0.5, len(paired) - 0.5)
        bottom.set_ylabel("feedback - control (points), 95 %", fontsize=8)
    fig.savefig(path, dpi=110)


def parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    low, _, high = text.partition("-")
    return list(range(int(low), int(high or low) + 1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", nargs="+", choices=list(BENCHMARKS), default=DEFAULT_BENCHMARKS)
    parser.add_argument("--seeds", help="e.g. 0-9 (default: each benchmark's own count)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each")
    parser.add_argument("--out", type=Path, default=None,
                        help="docs/ablation (default; paper_toy_open alone: docs/ablation_toy)")
    parser.add_argument("--runs", type=Path, default=RUNS, help="where the runs go (and are reused from)")
    parser.add_argument("--refuse-stale", action="store_true",
                        help="stop (one line) where a finished run was made by other code or overrides, instead of "
                             "running it again")
    args = parser.parse_args(argv)
    out = args.out or REPO / "docs" / ("ablation_toy" if args.benchmarks == ["paper_toy_open"] else "ablation")
    seeds = parse_seeds(args.seeds)
    jobs = [(name, setting, overrides, seed) for name in args.benchmarks
            for setting, overrides in BENCHMARKS[name].settings.items()
            for seed in (seeds or range(BENCHMARKS[name].seeds))]
    planned = plan(jobs, args.runs, code_version(), args.refuse_stale)
    results = []
    # (a worker that dies breaks the pool with an error, where multiprocessing.Pool would wait for it forever)
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for i, result in enumerate(pool.map(run_one, planned), 1):
            results.append(result)
            print(f"[{i}/{len(planned)}] {result['benchmark']} / {result['setting']} / seed {result['seed']}: "
                  f"test {100 * result['test']:.2f}", file=sys.stderr, flush=True)
    write(results, out)


def write(results: list[dict], out: Path) -> dict:
    """``out``.json (summary and every run, with its commit), .md, .png, and for benchmarks that ask for it
    ``out``_boundaries.png."""
    summary = summarise(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps({"summary": summary, "runs": results}, indent=1) + "\n")
    text = markdown(summary)
    Path(f"{out}.md").write_text(text + "\n")
    plot(summary, Path(f"{out}.png"))
    for name in summary:
        if BENCHMARKS[name].boundaries:
            boundary_figure(results, name, Path(f"{out}_boundaries.png"))
    print(text)
    return summary


def best_and_median(results: list[dict], bench: str, setting: str) -> list[dict]:
    """The runs of ``setting`` with the best test accuracy and the median one (the lower median of an even count;
    ties broken by the lower seed)."""
    runs = sorted((r for r in results if r["benchmark"] == bench and r["setting"] == setting),
                  key=lambda r: (-r["test"], r["seed"]))
    return [runs[0], runs[len(runs) // 2]] if runs else []


def boundary_figure(results: list[dict], bench: str, path: Path) -> None:
    """One row per setting: the decision regions of the handed-out model of its best and its median seed, over the
    run's training points (labeled ones large), each model loaded from its run dir."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mpl_runner.cli.config import compose_config
    from mpl_runner.data import build_dataset
    from mpl_runner.data.figures import plot_points
    from mpl_runner.record.model_file import load_model

    settings = [s for s in BENCHMARKS[bench].settings if best_and_median(results, bench, s)]
    fig, axes = plt.subplots(len(settings), 2, figsize=(7, 3.2 * len(settings)), squeeze=False)
    for row, setting in zip(axes, settings):
        for ax, which, r in zip(row, ("best", "median"), best_and_median(results, bench, setting)):
            run_dir = Path(r["run_dir"])
            key = json.loads((run_dir / KEY_FILE).read_text())
            data = build_dataset(compose_config(*key["overrides"]).dataset, "cpu")
            (x, y), = data.eval_splits["all"]
            model, _ = load_model(run_dir)
            plot_points(ax, x, y, data.labeled_indices, f"{setting}\n{which}: seed {r['seed']}, "
                        f"test {100 * r['test']:.1f} %", model)
            ax.title.set_fontsize(8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()

"""Does MPL's teacher feedback help? Each benchmark runs its settings on the same seeds; every MPL setting is paired
with its control (the same run with ``method.feedback=none``: the teacher learns from labels and UDA alone).

Writes ``docs/ablation.{json,md,png}``: per setting the mean test accuracy of the handed-out model with a 95 %
bootstrap interval, the validation accuracy, and for each MPL setting the paired difference from its control with
its own 95 % bootstrap interval. Nothing is selected here: the presets were fixed on validation accuracy before
(DESIGN.md section 8); test accuracy is reported only.

    python scripts/ablation.py                        # every benchmark, all seeds (about an hour on 2 cores)
    python scripts/ablation.py --benchmarks paper_toy --seeds 0-4 --jobs 2

Runs go to outputs/ablation/<benchmark>/<setting>/<seed>/; results already there (metrics.json, completed) are
reused, so an interrupted ablation goes on where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
NONE = "method.feedback=none"


@dataclass
class Benchmark:
    title: str
    short: str  # the figure's panel title
    seeds: int
    settings: dict[str, list[str]]  # name -> overrides
    controls: dict[str, str] = field(default_factory=dict)  # MPL setting -> its feedback=none control
    paired_seeds: int | None = None  # seeds for the MPL settings and their controls (None: ``seeds``)

    def seeds_of(self, setting: str) -> int:
        paired = setting in self.controls or setting in self.controls.values()
        return self.paired_seeds if paired and self.paired_seeds else self.seeds


def mpl_with_control(name: str, *overrides: str) -> dict[str, list[str]]:
    return {name: list(overrides), f"{name}, feedback=none": [*overrides, NONE]}


def _controls(settings: dict[str, list[str]]) -> dict[str, str]:
    return {name[: -len(", feedback=none")]: name for name in settings if name.endswith(", feedback=none")}


def benchmark(title: str, short: str, seeds: int, settings: dict[str, list[str]],
              paired_seeds: int | None = None) -> Benchmark:
    return Benchmark(title, short, seeds, settings, _controls(settings), paired_seeds)


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
        }, paired_seeds=30),
}


# --- running ----------------------------------------------------------------------------------------------------


def run_one(job: tuple[str, str, list[str], int]) -> dict:
    """One run in this process (Hydra composes the config as ``mpl-run`` would); its metrics."""
    bench, setting, overrides, seed = job
    run_dir = REPO / "outputs" / "ablation" / bench / setting.replace(" ", "_").replace(",", "").replace("=", "-") / str(seed)
    done = run_dir / "metrics.json"
    if done.exists() and json.loads(done.read_text()).get("status") == "completed":
        record = json.loads(done.read_text())
    else:
        from mpl_runner.config import compose_config
        from mpl_runner.run import run

        logging.getLogger("mpl_runner").setLevel(logging.WARNING)
        cfg = compose_config(*overrides, f"seed={seed}", "device=cpu", "trainer.num_threads=1",
                             "trainer.progress=false", "trainer.checkpoint_interval=null")
        record = run(cfg, run_dir)
    return {"benchmark": bench, "setting": setting, "seed": seed, "val": record.get("val/acc"),
            "test": record["test/acc"], "teacher_test": record.get("test/teacher/acc"),
            "train_seconds": record["train_seconds"], "h_abs": mean_abs_h(run_dir)}


def mean_abs_h(run_dir: Path) -> float | None:
    """The mean |h| the run logged (TensorBoard's train/mpl/h), or None for a method without a student."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    if "train/mpl/h" not in events.Tags()["scalars"]:
        return None
    return float(np.mean([abs(e.value) for e in events.Scalars("train/mpl/h")]))


def bootstrap_interval(values: np.ndarray, rng: np.random.Generator, resamples: int = 10_000) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the mean."""
    means = values[rng.integers(len(values), size=(resamples, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarise(results: list[dict]) -> dict:
    out = {}
    rng = np.random.default_rng(0)
    for bench_name, bench in BENCHMARKS.items():
        rows = [r for r in results if r["benchmark"] == bench_name]
        if not rows:
            continue
        summary = {"title": bench.title, "short": bench.short, "settings": {}}
        for setting in bench.settings:
            got = sorted((r for r in rows if r["setting"] == setting), key=lambda r: r["seed"])
            if not got:
                continue
            test = np.array([r["test"] for r in got]) * 100
            val = np.array([r["val"] for r in got], dtype=float) * 100
            entry = {"seeds": [r["seed"] for r in got], "test": test.tolist(), "val": val.tolist(),
                     "test_mean": float(test.mean()), "test_ci": bootstrap_interval(test, rng),
                     "val_mean": float(val.mean()), "train_seconds": float(np.mean([r["train_seconds"] for r in got]))}
            if got[0].get("h_abs") is not None:
                entry["h_abs_mean"] = float(np.mean([r["h_abs"] for r in got]))
                entry["teacher_test_mean"] = float(np.mean([r["teacher_test"] for r in got])) * 100
            control = bench.controls.get(setting)
            if control is not None:
                theirs = {r["seed"]: r["test"] * 100 for r in rows if r["setting"] == control}
                paired = np.array([t - theirs[s] for s, t in zip(entry["seeds"], test) if s in theirs])
                if len(paired):
                    low, high = bootstrap_interval(paired, rng)
                    entry["vs_control"] = {"control": control, "pairs": len(paired), "mean": float(paired.mean()),
                                           "ci": (low, high), "significant": bool(low > 0 or high < 0)}
            summary["settings"][setting] = entry
        out[bench_name] = summary
    return out


# --- writing ----------------------------------------------------------------------------------------------------


def markdown(summary: dict) -> str:
    lines = ["# Does the teacher's feedback help? MPL against its no-feedback control", "",
             "Test accuracy (%) of the model each method hands out (the student for MPL, the teacher for UDA): mean "
             "over seeds with a 95 % bootstrap interval; val: mean accuracy on the validation split. "
             "\"vs control\": the paired difference (same seeds) from the same setting with `method.feedback=none` "
             "(h measured but not fed back), with its 95 % bootstrap interval; **bold** where the interval excludes 0. "
             "Teacher test: the MPL teacher's test accuracy (the model the feedback acts on); mean abs h: the mean "
             "of |h| over the logged steps. Train s: training seconds per run, one thread, two runs at a time on "
             "a 2-core CPU. Written by `python scripts/ablation.py`.", ""]
    for bench in summary.values():
        lines += [f"## {bench['title']}", "", "| setting | seeds | test mean | 95 % interval | val mean | "
                  "vs control | 95 % interval | teacher test | mean abs h | train s |",
                  "|---|---:|---:|---|---:|---:|---|---:|---:|---:|"]
        for name, e in bench["settings"].items():
            diff = e.get("vs_control")
            vs = ("", "")
            if diff:
                value = f"{diff['mean']:+.2f}"
                vs = (f"**{value}**" if diff["significant"] else value, f"[{diff['ci'][0]:+.2f}, {diff['ci'][1]:+.2f}]")
            teacher = f"{e['teacher_test_mean']:.2f}" if "teacher_test_mean" in e else ""
            h = f"{e['h_abs_mean']:.1e}" if "h_abs_mean" in e else ""
            lines.append(f"| {name} | {len(e['seeds'])} | {e['test_mean']:.2f} | "
                         f"[{e['test_ci'][0]:.2f}, {e['test_ci'][1]:.2f}] | {e['val_mean']:.2f} | {vs[0]} | {vs[1]} | "
                         f"{teacher} | {h} | {e['train_seconds']:.1f} |")
        lines.append("")
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
        bottom.errorbar(range(len(paired)), diffs, yerr=bars, fmt="o", capsize=4, color="tab:blue")
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
    parser.add_argument("--benchmarks", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--seeds", help="e.g. 0-9 (default: each benchmark's own count)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "ablation")
    args = parser.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    jobs = [(name, setting, overrides, seed) for name in args.benchmarks
            for setting, overrides in BENCHMARKS[name].settings.items()
            for seed in (seeds or range(BENCHMARKS[name].seeds_of(setting)))]
    results = []
    # (a worker that dies breaks the pool with an error, where multiprocessing.Pool would wait for it forever)
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for i, result in enumerate(pool.map(run_one, jobs), 1):
            results.append(result)
            print(f"[{i}/{len(jobs)}] {result['benchmark']} / {result['setting']} / seed {result['seed']}: "
                  f"test {100 * result['test']:.2f}", file=sys.stderr, flush=True)
    summary = summarise(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps({"summary": summary, "runs": results}, indent=1) + "\n")
    text = markdown(summary)
    Path(f"{args.out}.md").write_text(text + "\n")
    plot(summary, Path(f"{args.out}.png"))
    print(text)


if __name__ == "__main__":
    main()

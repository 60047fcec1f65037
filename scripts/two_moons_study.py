"""Two moons over seeds: supervised vs UDA vs MPL (and MPL variants), on the reference notebook's setting.

Every run is a real ``mpl-run`` configuration (composed from conf/ with the same overrides a user would type),
trained in this process to save start-up time. Each seed also draws a different set of labeled points.

    python scripts/two_moons_study.py                      # seeds 0-9, writes docs/two_moons_study.{md,json,png}
    python scripts/two_moons_study.py --seeds 0-29 --out /tmp/study

Accuracy is on all 2000 training points (the notebook's number) and on a fresh draw of 2000 points (test).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
from hydra import compose, initialize_config_module

from mpl_runner.config import register_configs
from mpl_runner.figures import plot_points, save_png
from mpl_runner.run import execute

# label -> overrides; every row uses the default dataset (1000 + 1000 points, noise 0, 6 + 6 labeled).
SETTINGS = {
    "supervised": ["method=supervised"],
    "uda (teacher alone)": ["method=uda"],
    "mpl (default)": [],
    "mpl without UDA": ["method.uda.weight=0"],
    "mpl, official sign (new - old)": ["experiment=two_moons_official_sign"],
    "mpl, exact variant": ["experiment=two_moons_exact"],
}
FIGURE_PANELS = ("supervised", "mpl (default)")


def parse_seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def summarize(rows: list[dict]) -> dict:
    all_acc = [r["all/acc"] for r in rows]
    return {
        "seeds": len(rows),
        "median": statistics.median(all_acc),
        "mean": statistics.mean(all_acc),
        "min": min(all_acc),
        "max": max(all_acc),
        "test_median": statistics.median(r["test/acc"] for r in rows),
        "train_seconds_mean": statistics.mean(r["train_seconds"] for r in rows),
    }


def markdown(summary: dict[str, dict], seeds: list[int]) -> str:
    lines = [
        f"Accuracy (%) of the model each method hands out, on all 2000 points, seeds {seeds[0]}-{seeds[-1]} "
        f"({len(seeds)} runs each; each seed also draws its own 6 + 6 labeled points). "
        "Test: a fresh draw of 2000 points. Train s: mean training-loop seconds per run, 2-core CPU.",
        "",
        "| setting | median | mean | min | max | test median | train s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, s in summary.items():
        lines.append(
            f"| {label} | {100 * s['median']:.2f} | {100 * s['mean']:.2f} | {100 * s['min']:.2f} | "
            f"{100 * s['max']:.2f} | {100 * s['test_median']:.2f} | {s['train_seconds_mean']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def boundary_figure(trained: dict, seed: int):
    """Ground truth, supervised and MPL decision regions for one seed, side by side."""
    first = next(iter(trained.values())).data
    (x, y), = first.eval_splits["all"]
    x, y, labeled = x.cpu(), y.cpu(), first.labeled_indices
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    plot_points(axes[0], x, y, labeled, "ground truth")
    for ax, label in zip(axes[1:], FIGURE_PANELS):
        t = trained[label]
        model = t.method.eval_models()[t.method.handed_out]
        plot_points(ax, x, y, labeled, f"{label}: {100 * t.record['all/acc']:.1f}%", model)
    fig.suptitle(f"two moons, 6 + 6 labeled points (large markers), seed {seed}")
    fig.tight_layout()
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0-9", help="e.g. 0-9 or 0,3,5")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="where the table, JSON and PNG go")
    parser.add_argument("--figure-seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="labels of SETTINGS to run (default: all)")
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    settings = {k: v for k, v in SETTINGS.items() if not args.only or k in args.only}

    register_configs()
    results: dict[str, list[dict]] = {}
    figure_runs = {}
    start = time.perf_counter()
    with initialize_config_module("mpl_runner.conf", version_base="1.3"), tempfile.TemporaryDirectory() as tmp:
        for label, overrides in settings.items():
            results[label] = []
            for seed in seeds:
                cfg = compose("config", overrides=[*overrides, f"seed={seed}", "device=cpu", "trainer.progress=false"])
                trained = execute(cfg, Path(tmp) / f"{label}-{seed}".replace(" ", "_"))
                results[label].append({"seed": seed, **trained.record})
                if seed == args.figure_seed and label in FIGURE_PANELS:
                    figure_runs[label] = trained
                print(f"{label:34s} seed {seed:2d}: all {100 * trained.record['all/acc']:6.2f}%  "
                      f"test {100 * trained.record['test/acc']:6.2f}%  ({trained.record['train_seconds']:.1f}s)",
                      flush=True)

    summary = {label: summarize(rows) for label, rows in results.items()}
    table = markdown(summary, seeds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "two_moons_study.md").write_text(table)
    (args.out / "two_moons_study.json").write_text(
        json.dumps({"seeds": seeds, "summary": summary, "runs": results}, indent=2) + "\n"
    )
    if len(figure_runs) == len(FIGURE_PANELS):
        save_png(boundary_figure(figure_runs, args.figure_seed), args.out / "two_moons_boundaries.png")
    print()
    print(table)
    print(f"total {time.perf_counter() - start:.0f}s; wrote {args.out}/two_moons_study.md, .json, .png")


if __name__ == "__main__":
    main()

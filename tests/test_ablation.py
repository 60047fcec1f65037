"""scripts/ablation.py without training: its cache key (a result is reused only by the code and overrides that
made it), its statistics on tiny fake results (BCa intervals, Holm's correction, the same seeds), and that every
row it would run composes and validates. The ablation itself runs by hand, never in the suite."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import ablation  # noqa: E402
import ablation_stats  # noqa: E402

from mpl_runner.cli.config import compose_config  # noqa: E402
from mpl_runner.gates.validate import validate  # noqa: E402

VERSION = {"commit": "a" * 40, "dirty": False, "diff": ""}
JOB = ("toy", "mpl", ["experiment=two_moons_paper"], 3)


@pytest.fixture
def fake_run(monkeypatch):
    """mpl_runner.loop.run.run replaced by a stub that writes a completed metrics.json; the list of run dirs it ran."""
    import mpl_runner.loop.run

    ran = []

    def run(cfg, run_dir):
        ran.append(Path(run_dir))
        record = {"status": "completed", "test/acc": 0.5 + cfg.seed / 100, "val/acc": 0.5, "train_seconds": 0.1}
        (Path(run_dir) / "metrics.json").write_text(json.dumps(record))
        return record

    monkeypatch.setattr(mpl_runner.loop.run, "run", run)
    monkeypatch.setattr(ablation, "mean_abs_h", lambda run_dir: None)
    return ran


def run_jobs(runs: Path, version: dict, refuse: bool = False, job=JOB) -> list[dict]:
    return [ablation.run_one(planned) for planned in ablation.plan([job], runs, version, refuse)]


# --- the cache key ------------------------------------------------------------------------------------------------


def test_a_result_is_reused_by_the_same_commit_and_overrides(tmp_path, fake_run):
    first = run_jobs(tmp_path, VERSION)
    again = run_jobs(tmp_path, VERSION)
    assert len(fake_run) == 1 and first == again  # run once, then read back
    key = json.loads((fake_run[0] / ablation.KEY_FILE).read_text())
    # the full overrides: the setting's, the seed, and what every ablation run adds
    assert key == {**VERSION, "overrides": ["experiment=two_moons_paper", "seed=3", *ablation.FIXED]}
    assert first[0]["commit"] == VERSION["commit"] and first[0]["dirty"] is False


@pytest.mark.parametrize("change", [
    {"commit": "b" * 40},  # other code
    {"dirty": True, "diff": "0123456789abcdef"},  # the same commit with uncommitted changes
])
def test_a_result_made_by_other_code_is_run_again(tmp_path, fake_run, change):
    """Mutant caught: a cache that checks only that metrics.json is complete (the old behaviour), or that keys on
    the overrides alone."""
    run_jobs(tmp_path, VERSION)
    now = {**VERSION, **change}
    result = run_jobs(tmp_path, now)
    assert len(fake_run) == 2 and result[0]["commit"] == now["commit"] and result[0]["dirty"] == now["dirty"]
    assert json.loads((fake_run[1] / ablation.KEY_FILE).read_text())["diff"] == now["diff"]


def test_a_result_made_with_other_overrides_is_run_again(tmp_path, fake_run, monkeypatch):
    run_jobs(tmp_path, VERSION)
    monkeypatch.setattr(ablation, "FIXED", [*ablation.FIXED, "trainer.steps=5"])
    run_jobs(tmp_path, VERSION)
    assert len(fake_run) == 2


def test_refuse_stale_stops_with_one_line_naming_the_run_and_its_commit(tmp_path, fake_run):
    run_jobs(tmp_path, VERSION)
    with pytest.raises(SystemExit) as stop:
        run_jobs(tmp_path, {**VERSION, "commit": "b" * 40}, refuse=True)
    line = str(stop.value)
    assert "\n" not in line and str(fake_run[0]) in line and "aaaaaaaaaa" in line and "bbbbbbbbbb" in line
    assert len(fake_run) == 1 and (fake_run[0] / "metrics.json").exists()  # nothing run, nothing removed


def test_a_result_without_a_key_is_stale(tmp_path, fake_run):
    """A run dir of the older script (a completed metrics.json, no key): its code is unknown."""
    run_dir = ablation.run_dir_of(tmp_path, *JOB[:2], JOB[3])
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"status": "completed", "test/acc": 1.0, "train_seconds": 1}))
    with pytest.raises(SystemExit, match="no ablation_key.json"):
        run_jobs(tmp_path, VERSION, refuse=True)
    assert run_jobs(tmp_path, VERSION)[0]["test"] == pytest.approx(0.53) and len(fake_run) == 1


def test_an_unfinished_run_of_other_code_is_started_afresh(tmp_path, fake_run):
    run_dir = ablation.run_dir_of(tmp_path, *JOB[:2], JOB[3])
    run_dir.mkdir(parents=True)
    other = ablation.cache_key({**VERSION, "commit": "b" * 40}, JOB[2], JOB[3])
    (run_dir / ablation.KEY_FILE).write_text(json.dumps(other))
    (run_dir / "checkpoints").mkdir()  # what a resumed run would pick up
    run_jobs(tmp_path, VERSION)
    assert not (run_dir / "checkpoints").exists() and len(fake_run) == 1


def test_code_version_sees_uncommitted_and_untracked_changes(monkeypatch):
    outputs = {("rev-parse", "HEAD"): "c" * 40 + "\n"}

    def git(*args):
        if args[0] == "diff":
            return outputs.get("diff", "")
        if args[0] == "ls-files":
            return outputs.get("ls-files", "")
        return outputs[args]

    monkeypatch.setattr(ablation, "_git", git)
    clean = ablation.code_version()
    assert clean == {"commit": "c" * 40, "dirty": False, "diff": ""}
    outputs["diff"] = "diff --git a/x b/x\n+1\n"
    edited = ablation.code_version()
    outputs["diff"] = "diff --git a/x b/x\n+2\n"
    edited_otherwise = ablation.code_version()
    assert edited["dirty"] and edited["diff"] and edited["diff"] != edited_otherwise["diff"]
    outputs["diff"], outputs["ls-files"] = "", "README.md\0"  # a new file git does not ignore
    assert ablation.code_version()["dirty"]


# --- statistics -----------------------------------------------------------------------------------------------------


def test_paired_interval_is_scipys_bca_of_the_differences():
    """Mutant caught: a percentile interval, or an unpaired one (the two samples resampled apart)."""
    from scipy import stats

    rng = np.random.default_rng(1)
    control = rng.normal(80, 5, 30)  # a large seed-to-seed spread, shared by the pair
    ours = control + rng.normal(0.5, 0.5, 30)
    paired = ablation_stats.Paired(ours - control)
    low, high = paired.interval()
    assert low < paired.mean < high and high - low < 1.0  # pairing removes the shared spread (unpaired: ~5 wide)
    expected = stats.bootstrap((ours - control,), np.mean, method="BCa", n_resamples=ablation_stats.RESAMPLES,
                               rng=np.random.default_rng(7)).confidence_interval
    assert low == pytest.approx(expected.low, abs=0.03) and high == pytest.approx(expected.high, abs=0.03)
    percentile = stats.bootstrap((ours - control,), np.mean, method="percentile",
                                 rng=np.random.default_rng(0)).confidence_interval
    assert (low, high) != pytest.approx((percentile.low, percentile.high), abs=1e-9)


def test_holm_corrects_in_order_of_p_and_stops_at_the_first_that_fails():
    """Three comparisons: a strong effect, a marginal one (its raw 95 % interval excludes 0, its Holm interval at
    97.5 % does not) and none. Mutants caught: no correction, Bonferroni (every level 1 - 0.05/3), an order that
    is not by p."""
    rng = np.random.default_rng(3)
    comparisons = {"none": ablation_stats.Paired(rng.normal(0, 1, 30)),
                   "strong": ablation_stats.Paired(rng.normal(2, 1, 30)),
                   "marginal": ablation_stats.Paired(np.random.default_rng(0).normal(0.45, 1, 30))}
    out = ablation_stats.holm(comparisons)
    assert [out[n]["holm_rank"] for n in ("strong", "marginal", "none")] == [1, 2, 3]
    assert [out[n]["holm_level"] for n in ("strong", "marginal", "none")] == pytest.approx([1 - .05 / 3, 1 - .05 / 2,
                                                                                           0.95])
    assert out["marginal"]["significant"] and not out["marginal"]["holm_significant"]
    assert out["strong"]["holm_significant"] and not out["none"]["holm_significant"]
    for name in out:  # the Holm interval is the wider one, about the same mean
        raw, corrected = out[name]["ci"], out[name]["holm_ci"]
        assert corrected[0] <= raw[0] and corrected[1] >= raw[1]
    assert out["none"]["holm_p"] >= out["marginal"]["holm_p"] >= out["strong"]["holm_p"]  # monotone


def test_differences_that_are_all_zero_or_carried_by_a_few_seeds_are_reported_as_such():
    zero = ablation_stats.holm({"z": ablation_stats.Paired(np.zeros(30))})["z"]
    assert zero["ci"] == (0.0, 0.0) and zero["nonzero_pairs"] == 0 and not zero["holm_significant"]
    few = np.zeros(30)
    few[:10] = np.random.default_rng(0).normal(-6, 2, 10)
    out = ablation_stats.holm({"few": ablation_stats.Paired(few)})["few"]
    assert out["nonzero_pairs"] == 10 and out["pairs"] == 30
    assert "10 of 30" in ablation._difference(out)[3]


def fake_results(bench: str, accuracies: dict[str, list[float]], seeds=None) -> list[dict]:
    return [{"benchmark": bench, "setting": setting, "seed": seed, "val": acc, "test": acc, "teacher_test": acc,
             "train_seconds": 1.0, "h_abs": 1e-3, "commit": "d" * 40, "dirty": False, "diff": "",
             "run_dir": f"/runs/{setting}/{seed}"}
            for setting, values in accuracies.items() for seed, acc in zip(seeds or range(len(values)), values)]


def test_summary_pairs_on_common_seeds_records_commits_and_tests_figure_2(monkeypatch):
    bench = ablation.benchmark("fake", "fake", 6, {"supervised": [], **ablation.mpl_with_control("mpl"),
                                                  **ablation.mpl_with_control("big")}, reference="supervised")
    monkeypatch.setitem(ablation.BENCHMARKS, "fake", bench)
    rng = np.random.default_rng(0)
    base = 0.8 + 0.01 * rng.normal(size=30)
    results = fake_results("fake", {"supervised": base, "mpl": base + 0.001, "mpl, feedback=none": base,
                                    "big": base + 0.08 + 0.005 * rng.normal(size=30), "big, feedback=none": base})
    results = [r for r in results if not (r["setting"] == "mpl, feedback=none" and r["seed"] >= 20)]
    summary = ablation.summarise(results, {"fake": bench})["fake"]
    mpl = summary["settings"]["mpl"]
    assert mpl["vs_control"]["pairs"] == 20  # seeds 20-29 have no control: not paired with anything
    assert mpl["commits"] == ["d" * 40]
    assert summary["settings"]["big"]["vs_reference"]["mean"] == pytest.approx(8.0, abs=0.5)
    assert summary["figure2"] == ["big"]  # +8 points with an interval that excludes 0; mpl's +0.1 does not count
    text = ablation.markdown({"fake": summary})
    assert "Reproduces the paper's Figure 2" in text and ": big." in text and "dddddddddd" in text


def test_best_and_median_seed():
    results = fake_results("b", {"s": [0.7, 0.9, 0.8, 0.6, 0.75]})
    best, median = ablation.best_and_median(results, "b", "s")
    assert (best["seed"], median["seed"]) == (1, 4)  # 0.9; sorted 0.9 0.8 0.75 0.7 0.6


# --- the rows -------------------------------------------------------------------------------------------------------


def test_every_setting_compares_the_same_seeds():
    for name, bench in ablation.BENCHMARKS.items():
        jobs = [(s, seed) for s in bench.settings for seed in range(bench.seeds)]
        assert {seed for _, seed in jobs} == set(range(bench.seeds)), name
        assert all(other in bench.settings for other in bench.controls.values()), name


@pytest.mark.parametrize("name", list(ablation.BENCHMARKS))
def test_every_row_composes_and_validates(name):
    """What the ablation would run is a valid config (it is not run here)."""
    for setting, overrides in ablation.BENCHMARKS[name].settings.items():
        cfg = compose_config(*ablation.job_overrides(overrides, 0))
        validate(cfg)
        if setting.endswith("feedback=none"):
            assert cfg.method.feedback == "none"


def test_the_open_toy_rows_are_the_issue_s_settings():
    settings = ablation.BENCHMARKS["paper_toy_open"].settings
    cfgs = {s: compose_config(*ablation.job_overrides(o, 0)) for s, o in settings.items()}
    assert cfgs["mpl, no labeled loss"].method.teacher_labeled_weight == 0
    assert cfgs["exact mpl, validation reward"].method.feedback_batch == "validation"
    assert cfgs["exact mpl, validation reward"].method.variant == "exact"
    assert cfgs["mpl, sampled labels"].method.pseudo_label == "sample"
    room = cfgs["mpl, 3x steps, teacher lr 10x"]
    toy = cfgs["supervised"]
    assert room.trainer.steps == 3 * toy.trainer.steps and room.optim.lr == 10 * room.method.student_lr
    assert ablation.BENCHMARKS["paper_toy_open"].seeds == 30 and "paper_toy_open" not in ablation.DEFAULT_BENCHMARKS


def test_boundary_figure_from_real_tiny_runs(tmp_path):
    """Two 20-step runs of the toy, then the figure of the best and median seed (the models read back from their
    run dirs)."""
    jobs = [("paper_toy_open", "supervised", ["experiment=two_moons_paper_supervised", "trainer.steps=20",
                                              "trainer.eval_interval=20"], seed) for seed in (0, 1)]
    results = [ablation.run_one(j) for j in ablation.plan(jobs, tmp_path / "runs", VERSION, False)]
    path = tmp_path / "boundaries.png"
    ablation.boundary_figure(results, "paper_toy_open", path)
    assert path.stat().st_size > 10_000


@pytest.mark.slow  # (about a minute: spawned workers import torch, and 12 tiny runs)
def test_main_runs_a_tiny_benchmark_end_to_end_and_reuses_it(tmp_path, monkeypatch):
    """The whole script on a made-up benchmark of 5-step runs: the tables, the figure, each row's commit; a second
    call reuses every run (and --refuse-stale accepts them: their keys are this checkout's)."""
    tiny = ["trainer.steps=5", "trainer.eval_interval=5", "trainer.log_interval=5"]
    bench = ablation.benchmark("tiny", "tiny", 2, {"supervised": ["experiment=two_moons_supervised", *tiny],
                                                   **ablation.mpl_with_control("mpl", *tiny)})
    monkeypatch.setitem(ablation.BENCHMARKS, "tiny", bench)
    out, runs = tmp_path / "docs" / "ablation", tmp_path / "runs"
    args = ["--benchmarks", "tiny", "--jobs", "1", "--out", str(out), "--runs", str(runs)]
    ablation.main(args)
    record = json.loads(Path(f"{out}.json").read_text())
    version = ablation.code_version()
    assert {r["commit"] for r in record["runs"]} == {version["commit"]} and len(record["runs"]) == 6
    assert record["summary"]["tiny"]["settings"]["mpl"]["vs_control"]["pairs"] == 2
    assert version["commit"][:10] in Path(f"{out}.md").read_text() and Path(f"{out}.png").stat().st_size > 0
    stamps = {p: p.stat().st_mtime_ns for p in runs.rglob("metrics.json")}
    ablation.main([*args, "--refuse-stale"])
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("metrics.json")} == stamps  # nothing ran again

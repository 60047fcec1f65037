"""What a search found, in its sweep report (:mod:`mpl_runner.search.report`): the study's counts (completed, pruned,
failed), the best trial and the command that runs it again, each failed trial's first error line, and Optuna's
pictures beside ``report.md``: optimisation history, parameter importances, parallel coordinates.

The sweeper (:mod:`mpl_runner.search.optuna`) passes its study; ``mpl-report`` opens it from the storage named in the
sweep dir's ``optimization_results.yaml`` (an in-memory study is gone by then: its report is the one the sweep wrote).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import yaml

from mpl_runner.core.errors import one_line

log = logging.getLogger(__name__)

#: the pictures, by file name: what each shows
PLOTS = {"search_history.png": "optimisation history", "search_importances.png": "parameter importances",
         "search_parallel.png": "parallel coordinates"}


def load_study(sweep_dir: Path) -> Any | None:
    """The study a search in ``sweep_dir`` kept in its storage; None for a sweep that is no search, an in-memory
    study, or a storage that cannot be read (said as a warning)."""
    from mpl_runner.search.optuna import RESULTS

    try:
        results = yaml.safe_load((Path(sweep_dir) / RESULTS).read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(results, dict) or not results.get("storage") or not results.get("study_name"):
        return None
    try:
        import optuna

        from mpl_runner.search.optuna import open_storage

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return optuna.load_study(study_name=results["study_name"], storage=open_storage(results["storage"]))
    except Exception as err:  # noqa: BLE001 - the jobs' report is written all the same
        log.warning(f"the search's study ({results['storage']}) cannot be read: {one_line(err)}")
        return None


def counts(study: Any) -> dict[str, int]:
    """Trials by state (lower case: complete, pruned, fail, running, waiting)."""
    out: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        out[trial.state.name.lower()] = out.get(trial.state.name.lower(), 0) + 1
    return out


def rerun_command(trial: Any) -> str | None:
    """``mpl-run`` with the overrides of ``trial``'s job, as a single run (``hydra.mode=RUN``)."""
    from mpl_runner.record.run_dirs import hydra_quote, shell_word

    job_dir = trial.user_attrs.get("job_dir")
    if job_dir is None:
        return None
    try:
        overrides = yaml.safe_load((Path(job_dir) / ".hydra" / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(overrides, list):
        return None
    words = []
    for override in overrides:
        key, _, value = str(override).partition("=")
        words.append(f"{key}={hydra_quote(value)}" if _ else key)
    return " ".join(shell_word(w) for w in ["mpl-run", *words, "hydra.mode=RUN"])


def section(study: Any, plots: list[str]) -> list[str]:
    """The report's lines on the search."""
    from optuna.trial import TrialState

    n = counts(study)
    lines = ["", "## Search", "",
             f"Study `{study.study_name}` ({study.direction.name.lower()} `val/acc`): {n.get('complete', 0)} "
             f"completed, {n.get('pruned', 0)} pruned, {n.get('fail', 0)} failed"
             + (f", {n['running']} running" if n.get("running") else "") + " trials."]
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if done:
        best = study.best_trial
        params = " ".join(f"{k}={v}" for k, v in best.params.items())
        lines += ["", f"Best: trial {best.number}, val/acc {100 * best.value:.2f}, `{params}`."]
        command = rerun_command(best)
        if command is not None:
            lines += ["", "Run it again:", "", "```", command, "```"]
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    if failed:
        lines += ["", "### Failed trials", ""] + [
            f"- trial {t.number}: {t.user_attrs.get('error', '(no error recorded: interrupted)')}" for t in failed]
    if plots:
        lines += [""] + [f"![{PLOTS[name]}]({name})" for name in plots]
    return lines


def write_plots(study: Any, sweep_dir: Path) -> list[str]:
    """Optuna's pictures of the study as PNGs in ``sweep_dir``; returns the names written (a picture Optuna
    cannot draw yet, e.g. importances before two completed trials, is left out)."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return []
    from mpl_runner.data.figures import save_png  # (chooses matplotlib's Agg backend first)
    from optuna.visualization import matplotlib as plots

    makers = {"search_history.png": plots.plot_optimization_history,
              "search_importances.png": plots.plot_param_importances,
              "search_parallel.png": plots.plot_parallel_coordinate}
    written = []
    for name, make in makers.items():
        if name == "search_importances.png" and len(done) < 2:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # (Optuna's ExperimentalWarning for its matplotlib plots)
                axes = make(study)
            figure = getattr(axes, "figure", None) or axes.flat[0].figure
            figure.set_size_inches(9, 5.5)
            figure.tight_layout()  # (the parameter names: long keys, cut off at the edge otherwise)
            save_png(figure, Path(sweep_dir) / name)
            written.append(name)
        except Exception as err:  # noqa: BLE001 - one picture that cannot be drawn leaves the others
            log.warning(f"{name} not drawn: {one_line(err)}")
    return written

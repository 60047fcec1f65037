"""How long ``mpl-run`` takes to answer, as a whole process: ``--help``, a mistyped key (``trainer.stepz=3``) and the
default two-moons run, median of ``--repeat`` (5) each; and ``python -X importtime``'s heaviest imports (cumulative)
for ``--help``. Several checkouts (``--repo``, each run with its own ``.venv/bin/python -m mpl_runner``) are
measured in one go, taking turns command by command, so that a before and an after share the machine's load.

    python scripts/bench_cli.py --repo /work/main --repo .          # before / after
    python scripts/bench_cli.py --repeat 3 --skip-run --top 15      # this checkout, the quick ones only

Prints a table and writes ``docs/bench_cli.json`` (``--out``). Targets on the reference machine: ``--help`` and the
typo <= 1.5 s, the default run <= 5 s (about 2 s of it training).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = {
    "help": ["--help"],
    "typo": ["trainer.stepz=3"],
    "default run": [],  # (hydra.run.dir=<a fresh temporary dir> is added)
}


def python_of(repo: Path) -> str:
    venv = repo / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def timed(repo: Path, args: list[str], cwd: Path) -> tuple[float, int]:
    """Seconds ``mpl-run args`` took in ``repo`` as a whole process, and its exit status."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env.pop("HYDRA_FULL_ERROR", None)
    start = time.perf_counter()
    result = subprocess.run([python_of(repo), "-m", "mpl_runner", *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=600)
    return time.perf_counter() - start, result.returncode


def import_times(repo: Path, top: int) -> list[tuple[str, float]]:
    """The ``top`` imports of ``mpl-run --help`` with the largest cumulative time, in seconds."""
    result = subprocess.run([python_of(repo), "-X", "importtime", "-m", "mpl_runner", "--help"], cwd=repo,
                            capture_output=True, text=True, timeout=600)
    rows = []
    for line in result.stderr.splitlines():
        found = re.match(r"import time:\s+\d+ \|\s+(\d+) \|(\s*)(\S+)", line)
        if found:
            rows.append((found[3], int(found[1]) / 1e6))
    return sorted(rows, key=lambda r: -r[1])[:top]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", action="append", type=Path, help="a checkout (repeatable; default: this one)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--top", type=int, default=12, help="imports listed per checkout")
    parser.add_argument("--skip-run", action="store_true", help="leave the default run out")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench_cli.json")
    args = parser.parse_args(argv)
    repos = [r.resolve() for r in (args.repo or [ROOT])]
    commands = {k: v for k, v in COMMANDS.items() if not (args.skip_run and k == "default run")}
    times: dict[str, dict[str, list[float]]] = {str(r): {c: [] for c in commands} for r in repos}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            for name, command in commands.items():
                for repo in repos:  # (taking turns: the same load for each checkout)
                    extra = [f"hydra.run.dir={tmp}/{repo.name}_{i}"] if name == "default run" else []
                    seconds, status = timed(repo, [*command, *extra], Path(tmp))
                    expected = 2 if name == "typo" else 0
                    if status != expected:
                        sys.exit(f"{repo}: mpl-run {' '.join(command)} exited with {status}, not {expected}")
                    times[str(repo)][name].append(seconds)
    imports = {str(r): import_times(r, args.top) for r in repos}

    width = max(len(str(r)) for r in repos)
    print(f"whole process, median of {args.repeat} (min-max), seconds; load average {os.getloadavg()[0]:.2f}")
    print(f"{'checkout':<{width}}  " + "  ".join(f"{c:>18}" for c in commands))
    for repo in repos:
        cells = [f"{statistics.median(t):6.2f} ({min(t):.2f}-{max(t):.2f})" for t in times[str(repo)].values()]
        print(f"{str(repo):<{width}}  " + "  ".join(f"{c:>18}" for c in cells))
    for repo in repos:
        print(f"\npython -X importtime -m mpl_runner --help in {repo}: the heaviest (cumulative, s)")
        for module, seconds in imports[str(repo)]:
            print(f"  {seconds:7.3f}  {module}")

    record = {
        "commands": {name: ["mpl-run", *command] for name, command in commands.items()},
        "repeat": args.repeat,
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "python": platform.python_version(),
                    "processor": platform.processor() or platform.machine()},
        "results": {repo: {name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t), "all_s": t}
                           for name, t in by_command.items()}
                    for repo, by_command in times.items()},
        "help_imports_cumulative_s": {repo: dict(rows) for repo, rows in imports.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()

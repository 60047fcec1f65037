"""The table ``scripts/gpu_check.sh`` prints last: every stage, the CUDA tests, the step rows and the pipeline rows,
from what the stages left in OUT (stages.tsv, cuda_tests.xml, the two benchmark JSON files). Also writes it to
OUT/summary.md.

    python scripts/gpu_check_table.py OUT STEP_JSON DATA_JSON
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def test_counts(xml: Path) -> str:
    try:
        suites = ET.parse(xml).getroot()
    except (OSError, ET.ParseError):
        return "no report"
    suites = [suites] if suites.tag == "testsuite" else list(suites)
    total = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    passed = total["tests"] - total["failures"] - total["errors"] - total["skipped"]
    failed = [f"{case.get('name')}" for s in suites for case in s.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    text = f"{passed} passed, {total['failures'] + total['errors']} failed, {total['skipped']} skipped"
    return text + (f" (failed: {', '.join(failed[:6])}{' ...' if len(failed) > 6 else ''})" if failed else "")


def step_rows(bench: dict) -> list[tuple[str, str]]:
    rows = []
    for r in bench["rows"]:
        name = f"step: {r['setting']}" + (" (fp16 + 2 scalers, .item() x 6)" if r["setting"] == "baseline" else "")
        if r.get("skipped"):
            rows.append((name, r["skipped"]))
            continue
        peak = "peak memory n/a" if r["peak_memory_mib"] is None else f"peak {r['peak_memory_mib']:,.0f} MiB"
        best = ", fastest of ours" if r["setting"] == bench.get("best") else ""
        rows.append((name, f"{1000 * r['seconds_per_step']:.1f} ms/step, {r['images_per_s']:,.0f} images/s, "
                           f"{r['speedup']:.2f}x the baseline, {peak}{best}"))
    return rows


def data_rows(bench: dict) -> list[tuple[str, str]]:
    rows = []
    for r in bench["views"]:
        where = f"{r['num_workers']} workers" if r["pipeline"] == "workers" else (
            f"on {r['device']}" + (f", {r['threads']} threads" if r["device"] == "cpu" else ""))
        result = r["error"] if r["views_per_s"] is None else f"{r['views_per_s']:,.0f} views/s"
        rows.append((f"pipeline: {r['pipeline']} ({where})", result))
    if bench.get("fed"):
        rows.append((f"fed step: alone ({bench['fed_setting']})", f"{bench['fed_alone_steps_per_s']:.2f} steps/s"))
        for r in bench["fed"]:
            where = f"{r['num_workers']} workers" if r["pipeline"] == "workers" else "device"
            result = r["error"] if r["steps_per_s"] is None else (
                f"{r['steps_per_s']:.2f} steps/s, data {100 * r['data_share']:.0f} % of the step")
            rows.append((f"fed step: {where}", result))
    return rows


def main() -> None:
    out, step_json, data_json = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    rows: list[tuple[str, str]] = []
    stages = (out / "stages.tsv").read_text().splitlines() if (out / "stages.tsv").exists() else []
    for line in stages:
        name, status, seconds = line.split("\t")
        rows.append((f"stage {name}", f"{status}, {seconds} s"))
    rows.append(("CUDA tests (-m cuda)", test_counts(out / "cuda_tests.xml")))
    step, data = read_json(step_json), read_json(data_json)
    rows += step_rows(step) if step else [("step benchmark", f"no {step_json.name}")]
    rows += data_rows(data) if data else [("pipeline benchmark", f"no {data_json.name}")]
    device = (step or data or {}).get("device", "?")
    lines = [f"gpu_check: {device}; everything under {out}", "", "| check | result |", "|---|---|"]
    lines += [f"| {name} | {result} |" for name, result in rows]
    text = "\n".join(lines)
    (out / "summary.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

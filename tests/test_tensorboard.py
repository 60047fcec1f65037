"""TensorBoard on a finished sweep, read through its HTTP data API as the dashboard reads it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import TINY, mpl_run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def sweep(tmp_path):
    sweep = tmp_path / "sweep"
    result = mpl_run("-m", "method=supervised,mpl", *TINY, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return sweep


def test_tensorboard_shows_each_job_with_scalars_figures_and_hparams(sweep):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(sweep), "--host", "127.0.0.1",
         "--port", str(port), "--load_fast", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    base = f"http://127.0.0.1:{port}/data"
    try:
        deadline = time.monotonic() + 60
        runs = []
        while time.monotonic() < deadline and sorted(runs) != ["0", "1"]:
            try:
                runs = fetch(f"{base}/runs")
            except OSError:
                pass
            time.sleep(0.5)
        assert sorted(runs) == ["0", "1"]  # one run per job, no hparams sub-runs

        scalars = fetch(f"{base}/plugin/scalars/tags")
        for run in ("0", "1"):
            assert {"eval/teacher/acc" if run == "1" else "eval/model/acc", "perf/steps_per_s", "test/acc"} <= set(
                scalars[run])
        assert {"train/mpl/h", "train/uda/mask", "train/student/loss", "lr/teacher"} <= set(scalars["1"])
        images = fetch(f"{base}/plugin/images/tags")
        assert all({"decision_boundary", "confusion_matrix"} <= set(images[run]) for run in ("0", "1"))

        experiment = fetch(f"{base}/plugin/hparams/experiment", {"experimentName": ""})
        hparam_names = [h["name"] for h in experiment["hparamInfos"]]
        assert {"method.name", "seed", "optim.lr"} <= set(hparam_names)
        assert hparam_names[0] == "method.name"  # the swept key leads, so the table shows it
        assert {m["name"]["tag"] for m in experiment["metricInfos"]} >= {"test/acc", "all/acc"}
        groups = fetch(f"{base}/plugin/hparams/session_groups", {
            "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"],
            "colParams": [{"hparam": "method.name"}, {"metric": {"tag": "test/acc", "group": ""}}],
            "startIndex": 0, "sliceSize": 10,
        })
        methods = {g["hparams"]["method.name"] for g in groups["sessionGroups"]}
        assert methods == {"supervised", "mpl"}
        for group in groups["sessionGroups"]:
            metrics = {m["name"]["tag"]: m["value"] for m in group["sessions"][0]["metricValues"]}
            job = "0" if group["hparams"]["method.name"] == "supervised" else "1"
            expected = json.loads((sweep / job / "metrics.json").read_text())["test/acc"]
            assert metrics["test/acc"] == pytest.approx(expected)
    finally:
        server.terminate()
        server.wait(timeout=10)

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

from conftest import TINY, job_dirs, mpl_run
from mpl_runner.data.figures import confusion_figure, plt


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
    names = [job.name for job in job_dirs(sweep)]
    assert names == [f"{num}_method={method},trainer.eval_interval=10,trainer.log_interval=10,trainer.steps=30"
                     for num, method in enumerate(("supervised", "mpl"))]  # runs named by what differs
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
        while time.monotonic() < deadline and sorted(runs) != names:
            try:
                runs = fetch(f"{base}/runs")
            except OSError:
                pass
            time.sleep(0.5)
        assert sorted(runs) == names  # one run per job, no hparams sub-runs
        supervised, mpl = names

        scalars = fetch(f"{base}/plugin/scalars/tags")
        for run in names:
            tags = sorted(scalars[run])
            assert {"eval/teacher/acc" if run == mpl else "eval/model/acc", "perf/steps_per_s"} <= set(tags)
            finals = [t for t in tags if t.startswith("zz_final/")]  # one-point cards, after every curve
            assert {"zz_final/test/acc", "zz_final/val/acc", "zz_final/all/acc"} <= set(finals)
            assert tags[-len(finals):] == finals and "test/acc" not in tags
        assert {"train/mpl/h", "train/uda/mask", "train/student/loss", "lr/teacher"} <= set(scalars[mpl])
        images = fetch(f"{base}/plugin/images/tags")
        assert all({"decision_boundary", "confusion_matrix"} <= set(images[run]) for run in names)

        experiment = fetch(f"{base}/plugin/hparams/experiment", {"experimentName": ""})
        hparam_names = [h["name"] for h in experiment["hparamInfos"]]
        assert {"method.name", "seed", "optim.lr"} <= set(hparam_names)
        assert hparam_names[0] == "method.name"  # the swept key leads, so the table shows it
        metric_names = [m["displayName"] for m in experiment["metricInfos"]]
        assert metric_names[:2] == ["val/acc", "test/acc"]  # the headline first (the table shows the first five)
        assert "all/acc" in metric_names and "steps" not in metric_names
        groups = fetch(f"{base}/plugin/hparams/session_groups", {
            "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"],
            "colParams": [{"hparam": "method.name"}, {"hparam": "seed"},
                          {"metric": {"tag": "zz_final/test/acc", "group": ""}}],
            "startIndex": 0, "sliceSize": 10,
        })
        methods = {g["hparams"]["method.name"] for g in groups["sessionGroups"]}
        assert methods == {"supervised", "mpl"}
        for group in groups["sessionGroups"]:
            assert group["hparams"]["seed"] == "0"  # an integer as text, not 0.0000
            metrics = {m["name"]["tag"]: m["value"] for m in group["sessions"][0]["metricValues"]}
            job = supervised if group["hparams"]["method.name"] == "supervised" else mpl
            expected = json.loads((sweep / job / "metrics.json").read_text())["test/acc"]
            assert metrics["zz_final/test/acc"] == pytest.approx(expected)
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_confusion_matrix_fits_its_labels_and_title():
    """Drawn as TensorBoard draws it (the figure's own size, no bbox_inches), nothing reaches past its edges."""
    for classes in (2, 10):
        fig = confusion_figure([[5] * classes] * classes, [f"class {i}" for i in range(classes)])
        fig.canvas.draw()
        inside = fig.get_tightbbox(fig.canvas.get_renderer())
        width, height = fig.bbox.width / fig.dpi, fig.bbox.height / fig.dpi
        assert inside.x0 >= 0 and inside.y0 >= 0 and inside.x1 <= width and inside.y1 <= height, (classes, inside)
        plt.close(fig)

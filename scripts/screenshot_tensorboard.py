"""Screenshots of TensorBoard (scalars, HParams table) on a sweep, for the README, with headless Chromium.

    python scripts/screenshot_tensorboard.py                 # runs a small two-moons sweep first
    python scripts/screenshot_tensorboard.py --logdir outputs/multirun/<date>_<time>

Needs Debian's `chromium` (apt-get install chromium). Writes docs/tensorboard_scalars.png and
docs/tensorboard_hparams.png.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PAGES = {"tensorboard_scalars.png": "#scalars", "tensorboard_hparams.png": "#hparams"}
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--hide-scrollbars",
    "--window-size=1800,900",  # (wide enough for the first metric columns of HParams' table)
    "--virtual-time-budget=15000",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small_sweep(where: Path) -> Path:
    sweep = where / "sweep"
    subprocess.run(
        [sys.executable, "-m", "mpl_runner", "-m", "method=supervised,uda,mpl", "seed=0,1", "device=cpu",
         f"hydra.sweep.dir={sweep}"], check=True, capture_output=True,
    )
    return sweep


def wait_for(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"TensorBoard did not answer at {url}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logdir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    if not Path(args.chromium).exists():
        sys.exit(f"screenshot_tensorboard: error: no Chromium at {args.chromium} (apt-get install chromium)")

    with tempfile.TemporaryDirectory() as tmp:
        logdir = args.logdir or small_sweep(Path(tmp))
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(f"http://127.0.0.1:{port}/data/runs")
            time.sleep(3)  # let TensorBoard finish its first load of the event files
            args.out.mkdir(parents=True, exist_ok=True)
            for name, fragment in PAGES.items():
                profile = Path(tmp) / f"chromium-{name}"
                subprocess.run(
                    [args.chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                     f"--screenshot={(args.out / name).resolve()}", f"http://127.0.0.1:{port}/{fragment}"],
                    check=True, capture_output=True, timeout=120,
                )
                print(f"wrote {args.out / name}")
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()

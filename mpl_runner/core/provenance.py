"""Which code and which machine made a number: recorded in every ``metrics.json`` and HParams record, so that
results compared months apart can be told apart (``mpl-report`` flags a sweep whose jobs differ in any of it)."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import mpl_runner

if TYPE_CHECKING:
    import torch

#: the keys :func:`provenance` records, all under ``provenance/``
KEYS = ("package", "git_commit", "git_dirty", "python", "torch", "cuda", "cudnn", "device_name", "world_size",
        "command")


def _git(*args: str) -> str | None:
    """``git <args>`` in the package's checkout, or None outside one (an installed wheel) or without git."""
    source = Path(mpl_runner.__file__).resolve().parent.parent
    try:
        result = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (Linux's /proc/cpuinfo; elsewhere what the platform says)."""
    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(device: torch.device, world_size: int = 1, argv: list[str] | None = None) -> dict[str, str | int | bool]:
    """``{"provenance/<key>": value}`` for :data:`KEYS`; git keys are "none" outside a checkout."""
    import torch

    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no")) if commit else False
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    values = {
        "package": mpl_runner.__version__,
        "git_commit": commit or "none",
        "git_dirty": dirty,
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "cuda": torch.version.cuda or "none",
        "cudnn": str(cudnn) if cudnn else "none",
        "device_name": device_name(device),
        "world_size": world_size,
        "command": shlex.join(argv if argv is not None else sys.argv),
    }
    return {f"provenance/{k}": values[k] for k in KEYS}

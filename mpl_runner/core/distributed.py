"""Several processes, one run: ``torchrun --nproc_per_node=N -m mpl_runner ...``, or a SLURM job with several
tasks through hydra-submitit-launcher, with PyTorch's own DistributedDataParallel. Every rank computes on its
share of the global batch; rank 0 alone writes.

Outside torchrun (no ``WORLD_SIZE`` in the environment) everything here is a no-op for one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
import sys
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    import torch.distributed as dist

#: the time stamp every rank puts in its run dir name (Hydra's ${now:} is per process: hydra#2070)
STAMP_ENV = "MPL_RUN_STAMP"


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def _all_reduce(self, value: torch.Tensor, op: dist.ReduceOp) -> torch.Tensor:
        """``op`` over ranks, into a new tensor (autograd does not flow through it); ``value`` on one process."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        value = value.detach().clone()
        dist.all_reduce(value, op=op)
        return value

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The average of ``value`` over ranks."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        return self._all_reduce(value, dist.ReduceOp.SUM) / self.size

    def max(self, value: torch.Tensor) -> torch.Tensor:
        if not self.distributed:
            return value
        import torch.distributed as dist

        return self._all_reduce(value, dist.ReduceOp.MAX)

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if ``flag`` is true on one."""
        if not self.distributed:
            return flag
        import torch

        return bool(self.max(torch.tensor(int(flag), device=device)))


def world_from_env() -> World:
    """The world torchrun describes in the environment, or a submitit job with several tasks (the SLURM launcher
    with ``tasks_per_node`` > 1); one process without either."""
    if "WORLD_SIZE" not in os.environ and "SUBMITIT_EXECUTOR" in os.environ:
        import submitit  # (hydra-submitit-launcher's dependency; imported only inside a submitit job)

        job = submitit.JobEnvironment()
        return World(job.global_rank, job.num_tasks, job.local_rank)
    return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                 int(os.environ.get("LOCAL_RANK", 0)))


def start(world: World) -> None:
    """Join the process group and agree on the run dir's time stamp. PyTorch's default backends serve CUDA tensors
    with NCCL and CPU tensors with gloo, so a CPU run on a machine with GPUs works too."""
    if not world.distributed:
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if "MASTER_ADDR" not in os.environ and "SUBMITIT_EXECUTOR" in os.environ:
        import submitit

        # MASTER_ADDR (the job's first host), MASTER_PORT (from the job id), RANK, WORLD_SIZE, LOCAL_RANK
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group()
    stamp = [datetime.now().isoformat() if world.is_main else None]
    dist.broadcast_object_list(stamp, src=0)
    os.environ[STAMP_ENV] = stamp[0]


def stop() -> None:
    dist = sys.modules.get("torch.distributed")  # (not imported: no process group to leave)
    if dist is not None and dist.is_initialized():
        dist.destroy_process_group()


def now(pattern: str) -> str:
    """``${mpl.now:<pattern>}``: Hydra's ``${now:}`` (cached per config like it), but under torchrun the time stamp
    rank 0 broadcast, so every rank names the same run dir."""
    stamp = os.environ.get(STAMP_ENV)
    return (datetime.fromisoformat(stamp) if stamp else datetime.now()).strftime(pattern)

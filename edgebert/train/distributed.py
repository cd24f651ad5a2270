"""This process's place in a run of one or several processes (torchrun, accelerate launch): rank, device, precision."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgebert.errors import EdgebertError

if TYPE_CHECKING:
    import torch

    from edgebert.dynabert import DynaBert


@dataclass
class Runtime:
    """This process's place in the run: rank, world size, device, mixed precision."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"
    autocast_dtype: Any = None  # torch dtype under autocast, None for fp32

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def start_runtime(mixed_precision: str) -> Runtime:
    """CPU or one GPU automatically; torchrun's (or accelerate's) environment makes a process group."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = f"cuda:{local_rank}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(device)
    rank = 0
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo")
        rank = dist.get_rank()
    dtype = None
    if mixed_precision != "no":
        if not cuda:
            raise EdgebertError(f"--mixed-precision {mixed_precision} needs a GPU; on CPU train in fp32 (no)")
        dtype = torch.float16 if mixed_precision == "fp16" else torch.bfloat16
    return Runtime(rank, world, device, dtype)


def parallel(student: DynaBert, runtime: Runtime) -> torch.nn.Module:
    """`student`, wrapped in DistributedDataParallel when several processes train it."""
    if runtime.world == 1:
        return student
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(student, find_unused_parameters=True)


def autocast(runtime: Runtime) -> contextlib.AbstractContextManager:
    """Mixed precision on the run's device, or nothing (fp32)."""
    import torch

    if runtime.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(runtime.device.split(":")[0], dtype=runtime.autocast_dtype)


def gather_rng(runtime: Runtime) -> list:
    """Every process's torch RNG state, by rank (a resumed run gives each process its own back)."""
    import torch

    state = torch.get_rng_state()
    if runtime.world == 1:
        return [state]
    import torch.distributed as dist

    states: list = [None] * runtime.world
    dist.all_gather_object(states, state)
    return states

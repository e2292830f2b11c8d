"""What every robotworld trainer shares: the process's place in a torchrun job, its device, the
DDP wrapper, TensorBoard, and the learning-rate schedule (world model and VLA alike)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robotworld.device import pick_device


def dist() -> tuple[int, int]:
    """(rank, world size), initialising torch.distributed when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return int(os.environ.get("RANK", "0")), world


def setup(device: str, threads: int) -> tuple[int, int, torch.device]:
    """(rank, world size, this process's device): torch's CPU threads set, and under torchrun on
    GPUs each process on its own (LOCAL_RANK)."""
    rank, world = dist()
    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return rank, world, dev


def data_parallel(module: nn.Module, device: torch.device, world: int) -> nn.Module:
    """The module wrapped in DistributedDataParallel when there are several processes."""
    if world <= 1:
        return module
    return nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def tensorboard(out: Path, rank: int) -> Any:
    """A SummaryWriter under OUT/tb on rank 0, None elsewhere."""
    if rank != 0:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "tb"))


def cosine(step: int, steps: int) -> float:
    """The learning-rate factor: cosine decay from 1 to 0.1 over the run."""
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step / steps, 1.0)))


def finish(bar: Any, writer: Any, world: int) -> None:
    """Close the progress bar and the writer, and leave the process group."""
    bar.close()
    if writer is not None:
        writer.close()
    if world > 1:
        torch.distributed.destroy_process_group()

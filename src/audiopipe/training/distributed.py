"""Process-group helpers for DDP through `torchrun` (gloo on CPU, NCCL on CUDA); no-ops in one process."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """Global rank torchrun gave this process (0 without torchrun), known before the process group exists.

    Stage scripts use it to let rank 0 alone hold the output lock, open the tracking run and write the outputs.
    """
    return int(os.environ.get("RANK", "0"))


def init_distributed() -> bool:
    """Initialise the default process group when started by torchrun; returns whether DDP is active."""
    if dist.is_available() and dist.is_initialized():
        return True
    if world_size_from_env() <= 1 or not dist.is_available():
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes of the default group (1 without DDP)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def mean_over_ranks(values: list[float]) -> list[float]:
    """Element-wise mean of `values` over all ranks (unchanged without DDP); every rank must call it."""
    if not is_distributed() or not values:
        return values
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if dist.get_backend() == "nccl" else None
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return (total / world_size()).tolist()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def resolve_device(device: str) -> torch.device:
    """"auto" picks this process's CUDA device when available, else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and world_size_from_env() > 1:  # torchrun: this process's GPU, also before init
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' requested but CUDA is not available; set device: cpu or auto")
    return torch.device(device)

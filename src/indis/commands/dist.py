"""torch.distributed set-up for `torchrun ... -m indis ...` (gloo on CPU, nccl on CUDA)."""
from __future__ import annotations

import atexit
import os

import torch


def maybe_init_distributed() -> tuple[int, int]:
    """Initialise the default process group when launched by torchrun (WORLD_SIZE > 1); return (rank, world)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend)
        atexit.register(_shutdown)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _shutdown() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        try:
            torch.distributed.destroy_process_group()
        except Exception:  # pragma: no cover - best effort at exit
            pass

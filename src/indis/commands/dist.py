"""torch.distributed set-up for `torchrun ... -m indis ...` (gloo on CPU, nccl on CUDA)."""
from __future__ import annotations

import atexit
import datetime
import os
import sys

import torch

from ..errors import InputError


def _env_int(name: str, default: int | None = None, lo: int = 0) -> int:
    v = os.environ.get(name)
    if v is None:
        if default is None:
            raise InputError(f"environment variable {name} is not set; start multi-process runs with torchrun, which sets "
                             "WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT")
        return default
    try:
        n = int(v)
    except ValueError:
        raise InputError(f"environment variable {name}={v!r} is not an integer") from None
    if n < lo:
        raise InputError(f"environment variable {name}={v!r} must be >= {lo}")
    return n


DEFAULT_TIMEOUT_S = 600


def add_dist_args(p) -> None:
    p.add_argument("--dist-timeout", type=int, default=DEFAULT_TIMEOUT_S, help="under torchrun (WORLD_SIZE > 1): seconds "
                   f"to wait for every process to join before giving up (default {DEFAULT_TIMEOUT_S})")


def maybe_init_distributed(timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[int, int]:
    """Initialise the default process group when launched by torchrun (WORLD_SIZE > 1); return (rank, world). A
    process whose peers never start says what it waits for and gives up after `timeout_s` seconds."""
    world = _env_int("WORLD_SIZE", 1, lo=1)
    if world > 1 and not torch.distributed.is_initialized():
        rank = _env_int("RANK")
        if rank >= world:
            raise InputError(f"environment variable RANK={rank} must be below WORLD_SIZE={world}")
        _env_int("MASTER_PORT", lo=1)
        if not os.environ.get("MASTER_ADDR"):
            raise InputError("environment variable MASTER_ADDR is not set; start multi-process runs with torchrun")
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        print(f"indis: rank {rank} waiting for all {world} processes (WORLD_SIZE={world}) to join at {where}; giving up "
              f"after {timeout_s:g} s (--dist-timeout)", file=sys.stderr, flush=True)
        try:
            torch.distributed.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
        except (RuntimeError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InputError(f"cannot join the process group (WORLD_SIZE={world}, RANK={rank}, at {where}) within "
                             f"{timeout_s:g} s (--dist-timeout): {first[:300]}; start every process with torchrun "
                             "--nproc_per_node, or unset WORLD_SIZE for a single process") from exc
        atexit.register(_shutdown)
        if backend == "nccl":
            torch.cuda.set_device(_env_int("LOCAL_RANK", 0))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _shutdown() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        try:
            torch.distributed.barrier()  # no rank leaves (and tears its gloo pair down) while another still talks
            torch.distributed.destroy_process_group()
        except Exception:  # pragma: no cover - best effort at exit
            pass

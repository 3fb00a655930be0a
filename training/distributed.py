"""The end of a ``torchrun`` job's process group."""

from __future__ import annotations

import torch.distributed as dist


def close_process_group() -> None:
    """Shut down this process's DDP group, if one was started.

    A gloo group left open at interpreter exit can abort the process ("terminate called without an active
    exception", SIGABRT): its worker threads are still joinable when C++ static destructors run, and torchrun
    then kills the other ranks, which may still be writing results. Closing it explicitly joins them first.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

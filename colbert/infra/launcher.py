"""Runs an indexing entry point on `nranks` processes.

nranks == 1 runs in the calling process (so a script without an `if __name__ == "__main__":`
guard works); the seed is set right before, as upstream's launcher does, and the results equal
upstream's spawned child (same seed, same thread count). nranks > 1 spawns one process per rank
joined by torch.distributed with the gloo backend (CPU) or nccl (GPU).
"""

from __future__ import annotations

import os
import random
import socket

import numpy as np
import torch

SEED = 12345


def set_seed(seed: int = SEED) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(entry, configs: list, *args):
    """`configs[r]` is rank r's config; returns rank 0's result."""
    nranks = len(configs)
    if nranks == 1:
        set_seed()
        return entry(configs[0], *args)
    import torch.multiprocessing as mp

    port = _free_port()
    ctx = mp.get_context("spawn")
    result_queue = ctx.SimpleQueue()
    procs = []
    for rank, cfg in enumerate(configs):
        p = ctx.Process(target=_run_rank, args=(entry, cfg, rank, nranks, port, result_queue, args))
        p.start()
        procs.append(p)
    results = {}
    try:
        for _ in procs:
            rank, ok, value = result_queue.get()
            results[rank] = (ok, value)
    except BaseException:
        # Ctrl-C or SIGTERM in the parent: stop the ranks too (each marks its tap manifest failed),
        # or they would go on writing an index that the parent no longer holds the lock of
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=30)
        raise
    for p in procs:
        p.join()
    for rank in sorted(results):
        ok, value = results[rank]
        if not ok:
            raise RuntimeError(f"rank {rank} failed:\n{value}")
    return results[0][1]


def _run_rank(entry, cfg, rank, nranks, port, result_queue, args):
    import traceback

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(nranks), RANK=str(rank))
    try:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=nranks)
        set_seed()
        value = entry(cfg, *args)
        result_queue.put((rank, True, value))
    except BaseException:
        result_queue.put((rank, False, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()

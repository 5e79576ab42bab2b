"""The exact-scoring reduction of CPU search: the compiled segmented_maxsim kernel against the pure-torch
path the Searcher used before it (scatter_reduce amax from 0, then torch's sum over query tokens).

Inputs shaped like PLAID's exact stage: `docs` survivors (ndocs // 4: 64 at k=10, 256 at k=100, 1,024 at
k=1000), each with a random length in [20, 180] tokens, 32 query tokens, similarities in [-1, 1].
Both variants run alternately in one process, --rounds times each per size, and every round's two
outputs are checked for bit equality (torch.equal), because the Searcher may only take the kernel if it
changes no score. Prints the median time of each and the ratio torch / kernel (> 1: the kernel is faster).

    python benchmarks/maxsim_speed.py                    # sizes 64, 256, 1024, 4096
    python benchmarks/maxsim_speed.py --docs 256 --rounds 200
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from common import cpu_name, load_text  # noqa: E402  (benchmarks/ is sys.path[0])

from colbert.search import extensions, reference


def torch_path(sims: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return reference._segment_max(sims, lengths, 0.0).sum(-1)


def case(ndocs: int, nq: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(20, 181, (ndocs,), generator=g, dtype=torch.int64)
    sims = torch.rand(int(lengths.sum()), nq, generator=g) * 2 - 1
    return sims, lengths


def timed(fn, *args) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, nargs="+", default=[64, 256, 1024, 4096])
    p.add_argument("--nq", type=int, default=32)
    p.add_argument("--rounds", type=int, default=100)
    args = p.parse_args(argv)

    backend = extensions.extension_status()["backend"]
    print(f"CPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads; load {load_text()}")
    print(f"kernel backend: {backend}")
    print(f"{'docs':>6} {'rows':>8} {'torch ms':>9} {'kernel ms':>10} {'ratio':>6}  bit-equal")
    for ndocs in args.docs:
        sims, lengths = case(ndocs, args.nq, seed=ndocs)
        for _ in range(3):  # warm-up: first calls allocate
            torch_path(sims, lengths), extensions.segmented_maxsim(sims, lengths)
        t_torch, t_kernel, equal = [], [], True
        for r in range(args.rounds):
            # alternate which goes first, so neither always runs on a warmer cache
            order = ((t_torch, torch_path), (t_kernel, extensions.segmented_maxsim))
            outs = []
            for times, fn in (order if r % 2 == 0 else order[::-1]):
                dt, out = timed(fn, sims, lengths)
                times.append(dt)
                outs.append(out)
            equal &= torch.equal(outs[0], outs[1])
        mt, mk = statistics.median(t_torch), statistics.median(t_kernel)
        print(f"{ndocs:>6} {sims.size(0):>8} {1e3 * mt:>9.3f} {1e3 * mk:>10.3f} {mt / mk:>6.2f}  {equal}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

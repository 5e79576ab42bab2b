"""Whether encode-once's row reuse gives a chunk the very bits that encoding it gives, at any N and on this
machine's CPU: the check behind "identical output" where a full index run against colbert-ai is too long.

It draws the sample as an indexing run does (the launcher's seed, then `sample_pids`), encodes the sample
groups that hold the sampled passages of --groups chunk groups of chunk 0 (from --first-group), then encodes
those chunk groups
twice, with row reuse and without (upstream's way: every passage again), and compares the float16
embeddings with torch.equal. Above N = 30,720 the sample is a subset, so the chunk groups mix reused
rows, rows of another padded width and unsampled rows.

    python benchmarks/encode_once_check.py --collection /tmp/vaswani-31000.tsv --n 31000 --first-group 2 --groups 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests", "parity"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collection", default=os.path.join(REPO, "colbert", "data", "vaswani", "collection.tsv"))
    ap.add_argument("--n", type=int, required=True, help="passages (the sample's size depends on it)")
    ap.add_argument("--groups", type=int, default=2, help="chunk groups (index_bsize * 50 passages) to check")
    ap.add_argument("--first-group", type=int, default=0, help="the first of them (0: chunk 0 from pid 0)")
    ap.add_argument("--config", default="A", choices=["A", "B"], help="tests/parity/index_script.py's configs")
    ap.add_argument("--checkpoint", help="default: the benchmarks' MiniLM checkpoint, made under --workdir")
    ap.add_argument("--workdir", help="default: a temp dir")
    args = ap.parse_args(argv)

    import torch
    from rich.console import Console

    from common import benchmark_checkpoint  # noqa: E402 (benchmarks/ is this script's folder)
    from index_script import CONFIGS
    from colbert.indexing.collection import Collection, load_tsv
    from colbert.indexing.collection_encoder import CollectionEncoder
    from colbert.indexing.sampling import sample_pids
    from colbert.infra import ColBERTConfig
    from colbert.infra.launcher import set_seed
    from colbert.modeling.checkpoint import Checkpoint

    console = Console()
    ckpt_path = benchmark_checkpoint(args.workdir or tempfile.mkdtemp(prefix="encode-once-"), args.checkpoint)
    passages = load_tsv(args.collection)[:args.n]
    config = ColBERTConfig(checkpoint=ckpt_path, **CONFIGS[args.config])
    ckpt = Checkpoint(ckpt_path, colbert_config=config)
    G = config.index_bsize * 50
    chunksize = Collection(data=passages).get_chunksize(nranks=1)
    start = args.first_group * G  # chunk 0 starts at pid 0; its groups are G passages
    end = min(start + args.groups * G, chunksize, len(passages))
    if start >= end:
        ap.error(f"--first-group {args.first_group}: chunk 0 has {-(-min(chunksize, len(passages)) // G)} groups")

    set_seed()
    sampled = sorted(sample_pids(len(passages)))
    inside = [i for i, pid in enumerate(sampled) if start <= pid < end]  # positions in the sample
    needed = sampled[inside[0] // G * G:(inside[-1] // G + 1) * G] if inside else []  # whole sample groups
    console.print(f"{len(passages):,} passages, {len(sampled):,} sampled; checking pids {start:,}..{end - 1:,} "
                  f"({args.groups} chunk group(s) of {G:,}), which needs {len(needed):,} sampled passages "
                  f"(sample groups {inside[0] // G if inside else '-'}..{inside[-1] // G if inside else '-'}) encoded.")

    encoder = CollectionEncoder(config, ckpt)
    encoder.enable_reuse(rows=True)
    t0 = time.perf_counter()
    sample, doclens = encoder.encode_passages([passages[p] for p in needed], site="sample", pids=needed)
    encoder.keep_sample_for_reuse(needed, doclens, sample.half())
    t1 = time.perf_counter()
    got, got_doclens = encoder.encode_passages(passages[start:end], site="chunk0", pids=range(start, end))
    t2 = time.perf_counter()
    want, want_doclens = CollectionEncoder(config, ckpt).encode_passages(passages[start:end], site="chunk0",
                                                                         pids=range(start, end))
    t3 = time.perf_counter()
    equal = got_doclens == want_doclens and got.dtype == want.dtype and torch.equal(got, want)
    sampled_here = len(inside)
    console.print(f"sample groups {t1 - t0:.1f} s; chunk groups with reuse {t2 - t1:.1f} s, without {t3 - t2:.1f} s")
    console.print(f"reused {encoder.reused:,} of {sampled_here:,} sampled passages in the checked groups "
                  f"(the rest had another padded width or a batch below the floor); {end - start:,} passages, "
                  f"{got.size(0):,} embeddings: [bold]{'torch.equal' if equal else 'NOT EQUAL'}[/bold]")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())

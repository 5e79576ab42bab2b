"""A collection larger than Vaswani for indexing at N > 30,720 (where colbert-ai samples only part of it):
the shipped 11,429 passages repeated, each copy after the first with a distinct suffix (" copy 1", ...) so
that no two copies of a passage are equal. Written as pid<TAB>passage, atomically.

--max-words W keeps each passage's first W words (before the suffix): the same number of passages, and of
sampled passages, at a fraction of the tokens, for a run at N > 30,720 that all three sides finish in one
invocation (Vaswani's passages average 42 words; at W = 16, about a fifth of the encoder, k-means and
compression work).

    python benchmarks/replicate_collection.py --n 32000 --out /tmp/vaswani-32000.tsv
    python benchmarks/replicate_collection.py --n 31000 --max-words 16 --out /tmp/vaswani-31000-w16.tsv
"""

from __future__ import annotations

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-words", type=int, default=None, help="keep each passage's first W words")
    args = ap.parse_args(argv)
    from colbert.indexing.collection import load_tsv
    from colbert.utils.io import atomic_write_text

    if args.max_words is not None and args.max_words < 1:
        ap.error(f"--max-words must be >= 1; got {args.max_words}")
    base = load_tsv(os.path.join(REPO, "colbert", "data", "vaswani", "collection.tsv"))
    if args.max_words is not None:
        base = [" ".join(p.split()[: args.max_words]) for p in base]
    lines = []
    for pid in range(args.n):
        copy, i = divmod(pid, len(base))
        lines.append(f"{pid}\t{base[i]}{f' copy {copy}' if copy else ''}\n")
    atomic_write_text(args.out, "".join(lines))
    print(f"{args.n:,} passages ({-(-args.n // len(base))} copies of Vaswani's {len(base):,}"
          f"{f', first {args.max_words} words of each' if args.max_words else ''}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

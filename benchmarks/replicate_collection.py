"""A collection larger than Vaswani for indexing at N > 30,720 (where colbert-ai samples only part of it):
the shipped 11,429 passages repeated, each copy after the first with a distinct suffix (" copy 1", ...) so
that no two passages are equal. Written as pid<TAB>passage, atomically.

    python benchmarks/replicate_collection.py --n 32000 --out /tmp/vaswani-32000.tsv
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
    args = ap.parse_args(argv)
    from colbert.indexing.collection import load_tsv
    from colbert.utils.io import atomic_write_text

    base = load_tsv(os.path.join(REPO, "colbert", "data", "vaswani", "collection.tsv"))
    lines = []
    for pid in range(args.n):
        copy, i = divmod(pid, len(base))
        lines.append(f"{pid}\t{base[i]}{f' copy {copy}' if copy else ''}\n")
    atomic_write_text(args.out, "".join(lines))
    print(f"{args.n:,} passages ({-(-args.n // len(base))} copies of Vaswani's {len(base):,}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

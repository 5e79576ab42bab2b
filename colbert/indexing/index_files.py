"""The one place that names the files of an index folder (colbert-ai 0.2.22's PLAID layout).

The writers (collection_indexer, ivf, the residual codec), the loader (search/index_loader), erase and
overwrite (Indexer.erase), `colbert-tap compare`, the tap's save check and the CLI's description all
take the names from here, so a name cannot drift between the side that writes a file and the sides
that read, pair or remove it. Which stage each file holds is the stage registry's business
(`Stage.index_file` in colbert/tap/stages.py); the names it uses are the constants below.

Per-chunk names are templates with a `{chunk}` field; `chunk_file` fills one in and `parse` reads
one back.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

PLAN = "plan.json"  # written by setup; the config and the plan (chunks, centroids)
METADATA = "metadata.json"  # written last: its presence marks the index complete
CENTROIDS = "centroids.pt"
BUCKETS = "buckets.pt"  # (bucket_cutoffs, bucket_weights)
AVG_RESIDUAL = "avg_residual.pt"
IVF = "ivf.pid.pt"  # (pid_ivf, pid_ivf_lengths)
LEGACY_IVF = "ivf.pt"  # (embedding ids, lengths) of older colbert-ai; the loader converts it

CODES = "{chunk}.codes.pt"
RESIDUALS = "{chunk}.residuals.pt"
DOCLENS = "doclens.{chunk}.json"
CHUNK_METADATA = "{chunk}.metadata.json"
# an unfinished run's collection fingerprint (colbert/indexing/fingerprint.py): a dot-file, so that
# `colbert-tap compare` skips it; removed once the index is complete
FINGERPRINT = ".collection-fingerprint"
# a multi-rank run's per-rank sample, handed to rank 0 for k-means and removed after
RANK_SAMPLE = "sample.{rank}.pt"

CODEC_FILES = (CENTROIDS, BUCKETS, AVG_RESIDUAL)
CHUNK_TEMPLATES = (CODES, RESIDUALS, DOCLENS, CHUNK_METADATA)
# Any one of these makes a folder an index folder (a finished one, or one a run has started).
MARKERS = (PLAN, METADATA, IVF, BUCKETS)

_CHUNK_RX = {t: re.compile(re.escape(t).replace(re.escape("{chunk}"), r"(\d+)")) for t in CHUNK_TEMPLATES}


def chunk_file(template: str, chunk: int) -> str:
    return template.format(chunk=chunk)


def chunk_files(chunk: int) -> tuple[str, ...]:
    """The four files one chunk writes (codes, residuals, doclens, chunk metadata)."""
    return tuple(chunk_file(t, chunk) for t in CHUNK_TEMPLATES)


def chunk_glob(template: str) -> str:
    """A glob (and a message's wording) for every chunk's file of one template, e.g. `doclens.*.json`."""
    return template.replace("{chunk}", "*")


# how the layout is named in messages
LAYOUT_TEXT = f"{METADATA}, {CENTROIDS}, {IVF}, {chunk_glob(CODES)}, ..."


def rank_sample_file(rank: int) -> str:
    return RANK_SAMPLE.format(rank=rank)


def parse(name: str) -> tuple[str, int | None] | None:
    """(template or name, chunk) for a file name of the index layout, else None."""
    if name in (PLAN, METADATA, LEGACY_IVF, IVF) or name in CODEC_FILES:
        return name, None
    for template, rx in _CHUNK_RX.items():
        m = rx.fullmatch(name)
        if m:
            return template, int(m.group(1))
    return None


def chunks_of(folder: str | os.PathLike, template: str) -> list[tuple[int, str]]:
    """(chunk, file name) of every file of `template` in `folder`, in chunk order."""
    rx = _CHUNK_RX[template]
    return sorted((int(m.group(1)), n) for n in os.listdir(folder) if (m := rx.fullmatch(n)))


def index_markers(folder: str | os.PathLike) -> list[str]:
    """The files that make `folder` an index folder (empty if none)."""
    folder = Path(folder)
    return ([m for m in MARKERS if (folder / m).exists()]
            + sorted(p.name for p in folder.glob(chunk_glob(CODES))))


def erased_by_overwrite(name: str) -> bool:
    """Whether an overwrite removes the file `name` of an index folder: every tensor file, and JSON
    named like the plan, the metadata or the doclens (upstream's erase rule, kept so that overwriting
    removes what colbert-ai would)."""
    return (name.endswith(".pt") or name == FINGERPRINT
            or (name.endswith(".json") and any(w in name for w in ("metadata", "doclen", "plan"))))

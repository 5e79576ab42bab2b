"""Comparisons that mean what the artifact means, where plain element equality misleads.

* sets (sample_pids): membership, not order;
* ivf / pid_ivf: per centroid, the set of ids it holds (order inside a centroid and padding carry
  no meaning: upstream sorts codes with an unstable sort, and pads the pid ivf with zeros);
* residuals: unpacked into nbits bucket indices, so one flipped bit reads as one changed bucket;
* codes: the fraction of embeddings assigned to another centroid, and whether each passage keeps the
  same multiset of centroids (a reordering inside passages changes codes but not the ivf);
* JSON: field by field, ignoring paths, names and timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from colbert.compare.numeric import DEFAULT_CHUNK_ELEMS, row_blocks
from colbert.indexing.codecs.residual_bits import unpack_buckets


@dataclass
class Semantic:
    match: bool
    text: str
    details: dict = field(default_factory=dict)


def pct(n: int | float, d: int | float) -> str:
    if not d:
        return "0%"
    f = 100.0 * n / d
    if f == 0:
        return "0%"
    if f < 0.01:
        return f"{f:.2g}%"
    return f"{f:.2f}%"


def _as_id_set(v: Any) -> set:
    if isinstance(v, torch.Tensor):
        return set(v.reshape(-1).tolist())
    return set(v)


def compare_sets(a: Any, b: Any) -> Semantic:
    sa, sb = _as_id_set(a), _as_id_set(b)
    only_a, only_b = len(sa - sb), len(sb - sa)
    det = {"size_a": len(sa), "size_b": len(sb), "only_a": only_a, "only_b": only_b}
    if not only_a and not only_b:
        text = f"same set of {len(sa)}"
        ordered = isinstance(a, (list, tuple, torch.Tensor)) and isinstance(b, (list, tuple, torch.Tensor))
        if ordered and _as_list(a) != _as_list(b):
            text += " (order differs)"
            det["order_differs"] = True
        return Semantic(True, text, det)
    return Semantic(False, f"{only_a} only in A, {only_b} only in B (of {len(sa)} / {len(sb)})", det)


def _as_list(v: Any) -> list:
    return v.reshape(-1).tolist() if isinstance(v, torch.Tensor) else list(v)


def compare_number_lists(a: list, b: list, what: str = "elements") -> Semantic:
    if len(a) != len(b):
        return Semantic(False, f"length {len(a)} vs {len(b)}", {"len_a": len(a), "len_b": len(b)})
    n = sum(1 for x, y in zip(a, b) if x != y)
    det = {"n_diff": n, "n_total": len(a)}
    if n == 0:
        return Semantic(True, f"all {len(a)} {what} equal", det)
    first = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    det["first_diff"] = first
    return Semantic(False, f"{n}/{len(a)} {what} differ ({pct(n, len(a))}), first at [{first}]", det)


def compare_ivf_sets(ivf_a: torch.Tensor, len_a: torch.Tensor, ivf_b: torch.Tensor, len_b: torch.Tensor,
                     what: str = "pid", chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> Semantic:
    """Per centroid, the set of ids its segment holds. Processed in blocks of whole centroids."""
    ka, kb = len_a.numel(), len_b.numel()
    if ka != kb:
        return Semantic(False, f"{ka} vs {kb} centroids", {"centroids_a": ka, "centroids_b": kb})
    la, lb = len_a.reshape(-1).to(torch.int64), len_b.reshape(-1).to(torch.int64)
    oa = torch.zeros(ka + 1, dtype=torch.int64)
    ob = torch.zeros(kb + 1, dtype=torch.int64)
    oa[1:] = torch.cumsum(la, 0)
    ob[1:] = torch.cumsum(lb, 0)
    if int(oa[-1]) > ivf_a.numel() or int(ob[-1]) > ivf_b.numel():
        return Semantic(False, "lengths exceed the ivf tensor (corrupt ivf)", {})
    bad_centroids = only_a = only_b = 0
    c = 0
    while c < ka:
        # as many centroids as fit in one chunk (at least one)
        limit = int(max(oa[c], ob[c])) + chunk_elems
        c1 = max(c + 1, int(torch.searchsorted(torch.maximum(oa, ob), limit, right=True)) - 1)
        c1 = min(c1, ka)
        ua, ca = _segment_keys(ivf_a, oa, la, c, c1)
        ub, cb = _segment_keys(ivf_b, ob, lb, c, c1)
        in_b = torch.isin(ua, ub)
        in_a = torch.isin(ub, ua)
        only_a += int((~in_b).sum())
        only_b += int((~in_a).sum())
        bad = torch.cat([ca[~in_b], cb[~in_a]]).unique()
        bad_centroids += bad.numel()
        c = c1
    raw_equal = ivf_a.shape == ivf_b.shape and bool(torch.equal(ivf_a, ivf_b.to(ivf_a.dtype))) and torch.equal(la, lb)
    det = {"centroids": ka, "centroids_differ": bad_centroids, f"{what}s_only_a": only_a, f"{what}s_only_b": only_b,
           "raw_equal": raw_equal}
    if bad_centroids == 0:
        text = f"per-centroid {what} sets identical ({ka} centroids)"
        if not raw_equal:
            text += "; raw tensor differs only in order/padding"
        return Semantic(True, text, det)
    return Semantic(False, f"{bad_centroids}/{ka} centroids hold a different {what} set ({pct(bad_centroids, ka)}); "
                           f"{only_a} {what}s only in A, {only_b} only in B", det)


def _segment_keys(ivf: torch.Tensor, offsets: torch.Tensor, lengths: torch.Tensor, c0: int, c1: int):
    """Unique (centroid, id) pairs of centroids [c0, c1), one int64 each (ids fit in 32 bits), and their centroid."""
    s, e = int(offsets[c0]), int(offsets[c1])
    vals = ivf[s:e].to(torch.int64)
    cent = torch.repeat_interleave(torch.arange(c0, c1, dtype=torch.int64), lengths[c0:c1])
    keys = torch.unique(cent * (1 << 32) + vals)
    return keys, keys >> 32


def compare_residuals(a: torch.Tensor, b: torch.Tensor, nbits: int | None, chunk_elems: int = DEFAULT_CHUNK_ELEMS,
                      advance: Callable[[int], None] | None = None) -> Semantic:
    if a.dim() != 2 or nbits is None or nbits <= 0 or (a.shape[1] * 8) % nbits:
        why = "nbits unknown" if not nbits else f"row of {a.shape[-1] if a.dim() else 0} bytes does not split into {nbits}-bit buckets"
        return Semantic(True, f"packed bytes only ({why}; pass --nbits)", {"nbits": nbits})
    rows, nbytes = a.shape
    dim = nbytes * 8 // nbits
    diff_buckets = diff_rows = diff_bytes = 0
    for s, e in row_blocks(a, chunk_elems):
        xa, xb = a[s:e], b[s:e]
        ne = xa != xb
        row_ne = ne.any(1)
        if bool(row_ne.any()):
            diff_bytes += int(ne.sum())
            diff_rows += int(row_ne.sum())
            diff_buckets += int((unpack_buckets(xa[row_ne], nbits, torch.int32)
                                  != unpack_buckets(xb[row_ne], nbits, torch.int32)).sum())
        if advance is not None:
            advance(2 * (e - s) * nbytes)
    total = rows * dim
    det = {"nbits": nbits, "dim": dim, "buckets_total": total, "buckets_differ": diff_buckets,
           "fraction_buckets_differ": diff_buckets / total if total else 0.0, "embeddings_differ": diff_rows,
           "bytes_differ": diff_bytes}
    if diff_buckets == 0:
        return Semantic(True, f"all {total} buckets equal (nbits={nbits}, dim={dim})", det)
    return Semantic(False, f"{diff_buckets}/{total} buckets differ ({pct(diff_buckets, total)}) "
                           f"in {diff_rows}/{rows} embeddings (nbits={nbits})", det)


def compare_codes(a: torch.Tensor, b: torch.Tensor, doclens: list[int] | None, n_diff: int,
                  chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> Semantic:
    n = a.numel()
    det = {"embeddings": n, "reassigned": n_diff, "fraction_reassigned": n_diff / n if n else 0.0}
    text = f"{n_diff}/{n} embeddings assigned to another centroid ({pct(n_diff, n)})"
    if n_diff == 0:
        return Semantic(True, f"all {n} embeddings on the same centroid", det)
    if doclens is not None and sum(doclens) == n:
        bad = _passages_with_other_centroids(a.reshape(-1), b.reshape(-1), doclens, chunk_elems)
        det["passages"] = len(doclens)
        det["passages_other_centroids"] = bad
        if bad == 0:
            text += "; every passage keeps the same multiset of centroids (reordered within passages)"
            det["reordered_within_passages"] = True
        else:
            text += f"; {bad}/{len(doclens)} passages reach a different multiset of centroids"
    return Semantic(False, text, det)


def _passages_with_other_centroids(a: torch.Tensor, b: torch.Tensor, doclens: list[int], chunk_elems: int) -> int:
    bad = 0
    start_p = 0
    offset = 0
    while start_p < len(doclens):
        end_p, size = start_p, 0
        while end_p < len(doclens) and (size == 0 or size + doclens[end_p] <= chunk_elems):
            size += doclens[end_p]
            end_p += 1
        lens = torch.tensor(doclens[start_p:end_p], dtype=torch.int64)
        pid = torch.repeat_interleave(torch.arange(end_p - start_p, dtype=torch.int64), lens)
        xa = a[offset:offset + size].to(torch.int64)
        xb = b[offset:offset + size].to(torch.int64)
        base = int(max(int(xa.max()) if size else 0, int(xb.max()) if size else 0)) + 1
        sa = torch.sort(pid * base + xa).values
        sb = torch.sort(pid * base + xb).values
        ne = sa != sb
        if bool(ne.any()):
            bad += int(torch.unique(pid[ne]).numel())  # sorted keys keep pid blocks aligned
        offset += size
        start_p = end_p
    return bad


# Keys whose values are paths, names or times of a run, not results of it.
IGNORED_KEYS = frozenset({
    "root", "index_path", "index_root", "index_name", "name", "experiment", "checkpoint", "collection",
    "triples", "queries", "path", "paths", "file", "hostname", "cmd", "current_datetime", "timestamp",
    "time", "date", "created", "created_at", "started", "finished", "git_branch", "git_hash",
    "git_commit_datetime", "tap_dir", "index_dir", "output", "output_dir",
})
IGNORED_SUFFIXES = ("_path", "_dir", "_root", "_time", "_timestamp", "_date", "_datetime", "_at")
# manifest.json: where and how a run ran (versions, device, threads, command line) is shown in the report
# header, not judged: comparing two installs is the point, and their environments differ by design.
# Per-artifact entries are the other rows. The config stays compared: a different config is a cause.
MANIFEST_IGNORED = frozenset({"versions", "artifacts", "device", "threads", "argv", "working_dir", "git_revision",
                              "tap", "status", "format", "replay"})


def ignored_key(k: str) -> bool:
    kl = str(k).lower()
    return kl in IGNORED_KEYS or kl.endswith(IGNORED_SUFFIXES) or "timestamp" in kl or "datetime" in kl


def json_diff(a: Any, b: Any, extra_ignored: frozenset = frozenset()) -> tuple[list[tuple[str, Any, Any]], list[str]]:
    """(differences as (path, a, b), ignored paths). Lists compare element by element."""
    diffs: list[tuple[str, Any, Any]] = []
    ignored: list[str] = []
    missing = object()

    def walk(x: Any, y: Any, p: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in list(dict.fromkeys(list(x) + list(y))):
                q = f"{p}.{k}" if p else str(k)
                if ignored_key(k) or (not p and k in extra_ignored):
                    ignored.append(q)
                    continue
                walk(x.get(k, missing), y.get(k, missing), q)
        elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{p}[{i}]")
        elif x is missing or y is missing or type(x) is not type(y) or x != y:
            if not (isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool)
                    and not isinstance(y, bool) and x == y):
                diffs.append((p or "(root)", None if x is missing else x, None if y is missing else y))

    walk(a, b, "")
    return diffs, ignored


def compare_json(a: Any, b: Any, manifest: bool = False) -> Semantic:
    diffs, ignored = json_diff(a, b, MANIFEST_IGNORED if manifest else frozenset())
    det = {"fields_differ": [{"field": p, "a": x, "b": y} for p, x, y in diffs], "ignored": ignored}
    if not diffs:
        text = "all fields equal"
        if ignored:
            text += f" (ignored: {_short_list(ignored)})"
        return Semantic(True, text, det)
    shown = "; ".join(f"{p}: {_short(x)} vs {_short(y)}" for p, x, y in diffs[:3])
    more = f"; +{len(diffs) - 3} more" if len(diffs) > 3 else ""
    return Semantic(False, f"{len(diffs)} field(s) differ: {shown}{more}", det)


def _short(v: Any, n: int = 40) -> str:
    s = "missing" if v is None else repr(v)
    return s if len(s) <= n else s[: n - 1] + "…"


def _short_list(items: list[str], n: int = 4) -> str:
    return ", ".join(items[:n]) + (f", +{len(items) - n} more" if len(items) > n else "")

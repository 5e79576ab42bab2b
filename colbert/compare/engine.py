"""Compare two runs: pair their artifacts, compare each piece, then judge the report as a whole."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from colbert.compare.layers import aggregate_layers
from colbert.compare.layout import Artifact, RunLayout, pair_artifacts, scan_run
from colbert.compare.loading import (IntegrityError, LoadError, describe_type, file_sha256, is_number, is_number_seq,
                                     leaf_dtype, leaf_kind, leaf_shape, leaves, load_artifact, load_json, verify)
from colbert.compare.numeric import DEFAULT_CHUNK_ELEMS, compare_tensors
from colbert.compare.report import DIFFERS, DOWNSTREAM_TEXT, ERROR, MATCH, ONLY_A, ONLY_B, Report, Row
from colbert.compare.semantic import (Semantic, compare_codes, compare_ivf_sets, compare_json, compare_number_lists,
                                      compare_residuals, compare_sets)
from colbert.compare.tolerances import Profile, resolve_profiles
from colbert.indexing import index_files as files
from colbert.tap.stages import artifact_filename, downstream, get_stage, match_stages

PROGRESS_MIN_BYTES = 256 << 20


@dataclass
class Options:
    profiles: list[Profile] = field(default_factory=lambda: resolve_profiles(None))
    chunk_elems: int = DEFAULT_CHUNK_ELEMS
    nbits: int | None = None
    stages: str | None = None  # comma-separated names/globs from the registry
    layers: bool = False
    progress: bool | None = None  # None: only on a terminal and for big comparisons


class _Side:
    """One run, with a small cache for files read more than once (tuple files, companions)."""

    def __init__(self, layout: RunLayout, label: str, nbits_override: int | None):
        self.layout = layout
        self.label = label
        self._cache: dict[tuple[str, int | None], Any] = {}
        self._nbits = nbits_override
        self._nbits_done = nbits_override is not None

    def load(self, art: Artifact) -> Any:
        k = (str(art.path), art.element)
        if k not in self._cache:
            value = load_artifact(art)
            if art.element is not None or art.kind in ("json", "doclens"):
                self._cache[k] = value
            return value
        return self._cache[k]

    def companion(self, key: str, source: str | None) -> Any:
        art = self.layout.find(key, source)
        if art is None:
            return None
        try:
            return self.load(art)
        except LoadError:
            return None

    @property
    def nbits(self) -> int | None:
        if not self._nbits_done:
            self._nbits_done = True
            self._nbits = self._find_nbits()
        return self._nbits

    def _find_nbits(self) -> int | None:
        for name in (files.METADATA, files.PLAN, "manifest.json", "tap/manifest.json"):
            p = self.layout.root / name
            if p.is_file():
                try:
                    d = load_json(p)
                except LoadError:
                    continue
                for cand in (d.get("config", {}) if isinstance(d, dict) else {}, d if isinstance(d, dict) else {}):
                    if isinstance(cand, dict) and isinstance(cand.get("nbits"), int):
                        return cand["nbits"]
        w = self.companion("bucket_weights", None)
        if isinstance(w, torch.Tensor) and w.numel() > 1:
            n = int(round(math.log2(w.numel())))
            if 1 << n == w.numel():
                return n
        return None


class _Progress:
    def __init__(self, total: int, enabled: bool | None):
        self.bar = None
        show = enabled if enabled is not None else (total >= PROGRESS_MIN_BYTES and sys.stderr.isatty())
        if show:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="B", unit_scale=True, desc="compare", file=sys.stderr, leave=False)
        self._budget = 0

    def start(self, name: str, nbytes: int) -> None:
        self._budget = nbytes
        if self.bar is not None:
            self.bar.set_postfix_str(name, refresh=False)

    def advance(self, nbytes: int) -> None:
        step = min(nbytes, self._budget)
        self._budget -= step
        if self.bar is not None and step:
            self.bar.update(step)

    def finish(self) -> None:
        self.advance(self._budget)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _size(art: Artifact | None) -> int:
    if art is None or art.element not in (None, 0):  # a tuple file is counted once
        return 0
    try:
        return art.path.stat().st_size
    except OSError:
        return 0


def compare_runs(a: str | Path, b: str | Path, options: Options | None = None) -> Report:
    opts = options or Options()
    la, lb = scan_run(a), scan_run(b)
    for label, layout in (("A", la), ("B", lb)):
        if not _comparable(layout):
            # two empty or mistyped folders would otherwise read "0/0 match" and pass a CI check
            raise ValueError(f"{label}: {layout.root} holds nothing to compare (no tap artifacts, no index files)")
    side_a, side_b = _Side(la, "A", opts.nbits), _Side(lb, "B", opts.nbits)
    pairs = pair_artifacts(la, lb)
    if opts.stages:
        chosen = match_stages(opts.stages)
        pairs = [p for p in pairs if (p[0] or p[1]).stage in chosen]
        if not pairs:
            raise ValueError(f"--stages {opts.stages}: neither {la.root} nor {lb.root} holds an artifact of "
                             f"{', '.join(sorted(chosen))}")
    progress = _Progress(sum(_size(x) + _size(y) for x, y in pairs), opts.progress)
    rows: list[Row] = []
    try:
        for art_a, art_b in pairs:
            art = art_a or art_b
            progress.start(art.display, _size(art_a) + _size(art_b))
            rows.extend(_compare_pair(art_a, art_b, side_a, side_b, opts, progress.advance))
            progress.finish()
    finally:
        progress.close()
    for label, layout in (("A", la), ("B", lb)):
        for err in layout.errors:
            rows.insert(0, Row(name=f"{label}: manifest", key=f"manifest-{label}", stage=None, status=ERROR,
                               error=err, verdicts={p.name: None for p in opts.profiles}))
    report = Report(str(a), str(b), [_profile_json(p) for p in opts.profiles], rows,
                    versions={"A": _versions(la), "B": _versions(lb)})
    report.notes.extend(f"{label}: {n}" for label, layout in (("A", la), ("B", lb)) for n in layout.notes)
    _mark_downstream(report)
    _add_notes(report)
    if opts.layers:
        report.layers = aggregate_layers(rows, [p.name for p in opts.profiles])
    return report


def _comparable(layout: RunLayout) -> bool:
    """Whether a folder holds anything of a run (a .pt or .json artifact, an index file), not just
    unrelated files."""
    return bool(layout.errors) or any(a.kind != "file" for a in layout.artifacts)


def _profile_json(p: Profile) -> dict:
    return {"name": p.name, "description": p.description,
            "tolerances": {d: {"atol": t[0], "rtol": t[1]} for d, t in p.per_dtype.items()}}


def _versions(layout: RunLayout) -> dict:
    """What a run ran with (torch and friends, device, threads, encode mode), from its manifest, else
    (a bare index folder) the encode mode from its metadata.json / plan.json."""
    if not any((layout.root / rel).is_file() for rel in ("manifest.json", "tap/manifest.json")):
        for p in (layout.root / files.METADATA, layout.root / files.PLAN):
            if p.is_file():
                try:
                    d = load_json(p)
                except LoadError:
                    return {}
                mode = _encode_mode(d.get("config") if isinstance(d, dict) else None)
                return {"encode mode": mode} if mode else {}
        return {}
    for rel in ("manifest.json", "tap/manifest.json"):
        p = layout.root / rel
        if p.is_file():
            try:
                d = load_json(p)
            except LoadError:
                return {}
            if not isinstance(d, dict):
                return {}
            v = dict(d.get("versions") or {}) if isinstance(d.get("versions"), dict) else {}
            device, threads = d.get("device"), d.get("threads")
            if isinstance(device, dict):
                gpus = device.get("gpus") if device.get("device") == "cuda" else None
                v["device"] = ", ".join(gpus) if gpus else device.get("cpu")
            if isinstance(threads, dict) and "torch_num_threads" in threads:
                v["torch threads"] = threads["torch_num_threads"]
            if isinstance(d.get("config"), dict):
                v["encode mode"] = _encode_mode(d["config"])
            return v
    return {}


def _encode_mode(config) -> str | None:
    """An index config's encode mode: exported only when not upstream's ("parity")."""
    if not isinstance(config, dict):
        return None
    return config.get("encode_mode") or "parity"


def _mark_downstream(report: Report) -> None:
    first = report.first_divergent_row
    if first is None or first.stage is None:
        return
    below = downstream(first.stage)
    for r in report.rows:
        if r.stage in below:
            r.downstream = True
            r.notes.append(DOWNSTREAM_TEXT)


def _add_notes(report: Report) -> None:
    # the index's codes against the index's per-centroid pid lists (what search reads)
    def indexed(r: Row, how: str) -> bool:
        return r.stage is not None and get_stage(r.stage).compare == how and get_stage(r.stage).index_file is not None

    codes_differ = [r for r in report.rows if indexed(r, "codes") and r.status == DIFFERS]
    ivf_rows = [r for r in report.rows if indexed(r, "ivf") and r.compared]
    if codes_differ and ivf_rows and all(r.status == MATCH for r in ivf_rows):
        report.notes.append("codes differ but every centroid holds the same set of pids in the ivf: "
                            "search sees the same candidate passages")


def _row_base(art: Artifact, art_a: Artifact | None, art_b: Artifact | None, path: str = "") -> Row:
    return Row(name=art.display + path, key=art.key, stage=art.stage,
               file_a=None if art_a is None else str(art_a.path), file_b=None if art_b is None else str(art_b.path),
               ctx=dict(art.ctx))


def _compare_pair(art_a: Artifact | None, art_b: Artifact | None, side_a: _Side, side_b: _Side, opts: Options,
                  advance: Callable[[int], None]) -> list[Row]:
    art = art_a or art_b
    if art_a is None or art_b is None:
        return [_one_sided(art, art_a, art_b, side_a if art_a else side_b)]
    errors = []
    va = vb = None
    try:
        va = side_a.load(art_a)
    except LoadError as e:
        errors.append(f"A: {e}")
    try:
        vb = side_b.load(art_b)
    except LoadError as e:
        errors.append(f"B: {e}")
    if errors:
        row = _row_base(art, art_a, art_b)
        row.status, row.error = ERROR, "; ".join(errors)
        row.kind = "json" if art.kind in ("json", "doclens") else art.kind
        row.verdicts = {p.name: None for p in opts.profiles}
        return [row]
    if art.kind == "json":
        return [_json_row(art, art_a, art_b, va, vb, opts)]
    if art.kind == "file":
        return [_file_row(art, art_a, art_b, opts)]
    pair = _Pair(art_a, art_b, side_a, side_b, opts, advance)
    la, lb = leaves(va), leaves(vb)
    da = {p: (v, inside) for p, v, inside in la}
    db = {p: (v, inside) for p, v, inside in lb}
    rows = []
    for path in list(dict.fromkeys([p for p, _, _ in la] + [p for p, _, _ in lb])):
        row = _row_base(art, art_a, art_b, path)
        if path not in db or path not in da:
            v, inside = da[path] if path in da else db[path]
            row.status = ONLY_A if path in da else ONLY_B
            row.kind = leaf_kind(v, inside)
            _describe(row, v, "a" if path in da else "b")
            row.verdicts = {p.name: None for p in opts.profiles}
            rows.append(row)
            continue
        (x, inside), (y, _) = da[path], db[path]
        try:
            _compare_leaf(row, x, y, inside, pair)
        except Exception as e:  # a value we could not compare must not stop the run
            row.status, row.error = ERROR, f"comparing {art.display}{path}: {type(e).__name__}: {e}"
            row.verdicts = {p.name: None for p in opts.profiles}
        rows.append(row)
    return rows


def _describe(row: Row, v: Any, side: str) -> None:
    setattr(row, f"dtype_{side}", leaf_dtype(v))
    setattr(row, f"shape_{side}", leaf_shape(v))


def _one_sided(art: Artifact, art_a: Artifact | None, art_b: Artifact | None, side: _Side) -> Row:
    row = _row_base(art, art_a, art_b)
    row.status = ONLY_A if art_a is not None else ONLY_B
    letter = "a" if art_a is not None else "b"
    row.kind = {"json": "json", "doclens": "list", "file": "file"}.get(art.kind, "")
    if art.kind == "pt":
        try:
            v = side.load(art)
            lv = leaves(v)
            if len(lv) == 1:
                row.kind = leaf_kind(lv[0][1], lv[0][2])
                _describe(row, lv[0][1], letter)
            else:
                row.kind = describe_type(v)
        except IntegrityError as e:
            row.status, row.error = ERROR, str(e)
        except LoadError as e:
            row.notes.append(str(e))
    return row


def _set_verdicts(row: Row, opts: Options, ok: bool) -> None:
    row.verdicts = {p.name: ok for p in opts.profiles}
    row.status = MATCH if ok else DIFFERS


@dataclass
class _Pair:
    """One pair of artifacts being compared: both sides (companion stages are read from them) and the options."""

    art_a: Artifact
    art_b: Artifact
    side_a: _Side
    side_b: _Side
    opts: Options
    advance: Callable[[int], None]

    def companions(self, stage: str, ctx: dict) -> tuple[Any, Any]:
        """Each side's value of `stage` at the same chunk (e.g. the doclens beside a chunk's codes)."""
        key = artifact_filename(stage, chunk=ctx.get("chunk"))[: -len(".pt")]
        return self.side_a.companion(key, self.art_a.source), self.side_b.companion(key, self.art_b.source)


def _compare_leaf(row: Row, x: Any, y: Any, inside: bool, pair: _Pair) -> None:
    """Judge one leaf the way its stage's `compare` says (colbert/tap/stages.py COMPARISONS)."""
    stage = get_stage(row.stage) if row.stage else None
    how = stage.compare if stage else "exact"
    row.kind = leaf_kind(x, inside)
    _describe(row, x, "a")
    _describe(row, y, "b")
    # a set of pids, a list of pids and a tensor of pids are the same sample: no dtype verdict
    if how == "set" or isinstance(x, (set, frozenset)) or isinstance(y, (set, frozenset)):
        sem = compare_sets(x, y)
        _apply_semantic(row, sem, pair.opts, decides=True)
        row.n_total = sem.details["size_a"]
        row.n_diff = sem.details["only_a"] + sem.details["only_b"]
        return
    dtype_ok = row.dtype_a == row.dtype_b
    if not dtype_ok:
        row.notes.append(f"dtype {row.dtype_a} vs {row.dtype_b}")
    if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
        _compare_tensors(row, x, y, stage, how, dtype_ok, pair)
    else:
        _compare_values(row, x, y, stage, dtype_ok, pair.opts)


def _compare_tensors(row: Row, x: torch.Tensor, y: torch.Tensor, stage, how: str, dtype_ok: bool,
                     pair: _Pair) -> None:
    opts = pair.opts
    if how == "ivf":
        la, lb = pair.companions(stage.companion, row.ctx)
        if isinstance(la, torch.Tensor) and isinstance(lb, torch.Tensor):
            sem = compare_ivf_sets(x.reshape(-1), la, y.reshape(-1), lb, stage.unit, opts.chunk_elems)
            _apply_semantic(row, sem, opts, decides=True, also=dtype_ok)
            if x.shape == y.shape:
                st = compare_tensors(x, y, opts.profiles, opts.chunk_elems)
                row.n_total, row.n_diff = st.n_total, st.n_diff
            return
        row.notes.append(f"no {stage.companion} on both sides: compared as a plain tensor")
    if x.shape != y.shape:
        row.notes.append(f"shape {row.shape_a} vs {row.shape_b}")
        _set_verdicts(row, opts, False)
        return
    st = compare_tensors(x, y, opts.profiles, opts.chunk_elems, pair.advance)
    _apply_stats(row, st, opts, dtype_ok)
    explain = _EXPLAIN_EQUAL_SHAPES.get(how)
    if explain is not None:
        explain(row, x, y, st, stage, pair)


def _explain_codes(row: Row, x: torch.Tensor, y: torch.Tensor, st, stage, pair: _Pair) -> None:
    if st.is_float:
        return
    doclens = None
    if stage.companion is not None:
        da, db = pair.companions(stage.companion, row.ctx)
        if is_number_seq(da) and list(da) == list(db or []):
            doclens = [int(v) for v in da]
    row.semantic = compare_codes(x, y, doclens, st.n_diff, pair.opts.chunk_elems).text


def _explain_residuals(row: Row, x: torch.Tensor, y: torch.Tensor, st, stage, pair: _Pair) -> None:
    if x.dtype != torch.uint8 or y.dtype != torch.uint8:
        return
    a, b = pair.side_a.nbits, pair.side_b.nbits
    sem = compare_residuals(x, y, a if a == b else None, pair.opts.chunk_elems)
    row.semantic, row.details = sem.text, {**row.details, **sem.details}


# What a comparison kind adds once two same-shaped tensors have been compared element by element.
_EXPLAIN_EQUAL_SHAPES = {"codes": _explain_codes, "residuals": _explain_residuals}


def _compare_values(row: Row, x: Any, y: Any, stage, dtype_ok: bool, opts: Options) -> None:
    """Leaves that are not two tensors: numbers, lists of numbers, and anything else by equality."""
    if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
        row.notes.append(f"type {describe_type(x)} vs {describe_type(y)}")
        _set_verdicts(row, opts, False)
        return

    if is_number_seq(x) and is_number_seq(y):
        if all(isinstance(v, int) for v in list(x) + list(y)):
            sem = compare_number_lists(list(x), list(y), stage.unit if stage else "elements")
            _apply_semantic(row, sem, opts, decides=True)
            row.n_total = sem.details.get("n_total")
            row.n_diff = sem.details.get("n_diff")
            return
        if len(x) != len(y):
            row.notes.append(f"length {len(x)} vs {len(y)}")
            _set_verdicts(row, opts, False)
            return
        st = compare_tensors(torch.tensor(list(x), dtype=torch.float64), torch.tensor(list(y), dtype=torch.float64),
                             opts.profiles, opts.chunk_elems)
        _apply_stats(row, st, opts, True)
        return

    if is_number(x) and is_number(y):
        if isinstance(x, float) or isinstance(y, float):
            st = compare_tensors(torch.tensor(float(x), dtype=torch.float64), torch.tensor(float(y), dtype=torch.float64),
                                 opts.profiles, opts.chunk_elems)
            _apply_stats(row, st, opts, dtype_ok)
            if not st.n_diff:
                row.semantic = f"{x!r}"
            else:
                row.semantic = f"{x!r} vs {y!r}"
        else:
            _set_verdicts(row, opts, x == y and dtype_ok)
            row.n_total, row.n_diff = 1, int(x != y)
            row.semantic = f"{x!r}" if x == y else f"{x!r} vs {y!r}"
        return

    ok = type(x) is type(y) and x == y
    _set_verdicts(row, opts, bool(ok))
    if not ok:
        row.semantic = f"{_short(x)} vs {_short(y)}"


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:39] + "…"


def _apply_semantic(row: Row, sem: Semantic, opts: Options, decides: bool, also: bool = True) -> None:
    row.semantic = sem.text
    row.details = {**row.details, **sem.details}
    if decides:
        _set_verdicts(row, opts, sem.match and also)


def _apply_stats(row: Row, st, opts: Options, dtype_ok: bool) -> None:
    row.n_total, row.n_diff = st.n_total, st.n_diff
    if st.is_float:
        row.max_abs, row.mean_abs = st.max_abs, st.mean_abs
        row.details.update({"sum_abs": st.sum_abs, "n_finite": st.n_finite,
                            "tolerances": {k: {"atol": v[0], "rtol": v[1]} for k, v in st.tol.items()}})
    row.frac_outside = {k: (v / st.n_total if st.n_total else 0.0) for k, v in st.n_out.items()}
    row.verdicts = {p.name: st.n_out[p.name] == 0 and dtype_ok for p in opts.profiles}
    row.status = MATCH if row.verdicts[opts.profiles[0].name] else DIFFERS


def _json_row(art: Artifact, art_a: Artifact, art_b: Artifact, va: Any, vb: Any, opts: Options) -> Row:
    row = _row_base(art, art_a, art_b)
    row.kind = "json"
    sem = compare_json(va, vb, manifest=art.path.name == "manifest.json")
    _apply_semantic(row, sem, opts, decides=True)
    return row


def _file_row(art: Artifact, art_a: Artifact, art_b: Artifact, opts: Options) -> Row:
    row = _row_base(art, art_a, art_b)
    row.kind = "file"
    row.shape_a, row.shape_b = leaf_shape(art_a.path), leaf_shape(art_b.path)
    try:
        verify(art_a)
        verify(art_b)
        ha, hb = file_sha256(art_a.path), file_sha256(art_b.path)
    except OSError as e:
        row.status, row.error = ERROR, f"cannot read {e.filename}: {e.strerror}"
        row.verdicts = {p.name: None for p in opts.profiles}
        return row
    except LoadError as e:
        row.status, row.error = ERROR, str(e)
        row.verdicts = {p.name: None for p in opts.profiles}
        return row
    _set_verdicts(row, opts, ha == hb)
    row.semantic = "same bytes" if ha == hb else "bytes differ"
    return row

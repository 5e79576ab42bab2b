"""What is in a run folder: every comparable artifact, its pairing key, its stage and its place in order.

A run is a tap folder, an index folder (colbert-ai 0.2.22 layout), or an index folder holding `tap/`.
Tap file names are parsed against the stage registry (colbert/tap/stages.py) and accepted only if
`artifact_filename` gives the same name back, so the registry stays the one source of naming.
Index files are mapped onto the stage they hold (the registry's `Stage.index_file`; the names are
colbert/indexing/index_files.py's), so a tap `codes_0.pt` and the index's chunk-0 codes file share
the key `codes_0` and can be paired when one side has only one of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from colbert.indexing import index_files as files
from colbert.tap.stages import STAGES, artifact_filename, get_stage, index_stages, stage_index

# Names used in the maintainer's hand-made taps (torch.save lines added to upstream) for stages the registry names differently.
ALIASES = {"sampled_pids": "sample_pids"}

SOURCE_RANK = {"tap": 0, "index": 1, "other": 2}
GROUP_STAGE, GROUP_OTHER_PT, GROUP_JSON, GROUP_FILE = 0, 1, 2, 3


@dataclass
class Artifact:
    key: str  # pairs A with B
    path: Path
    source: str  # tap | index | other
    kind: str  # pt | json | doclens | file
    stage: str | None = None
    element: int | None = None  # index files that hold a tuple: which element is this stage
    ctx: dict = field(default_factory=dict)  # rank, chunk, site, group, batch, layer
    rel: str = ""  # path relative to the run root, for display
    sha256: str | None = None  # what the run's manifest recorded for the file ("" if nothing); None: no manifest

    @property
    def display(self) -> str:
        return self.rel + (f"[{self.element}]" if self.element is not None else "")

    def order(self) -> tuple:
        c = self.ctx
        if self.stage is not None:
            group = GROUP_STAGE
            stage_pos = stage_index(self.stage)
        else:
            group = {"pt": GROUP_OTHER_PT, "json": GROUP_JSON}.get(self.kind, GROUP_FILE)
            stage_pos = _json_position(self.path.name) if group == GROUP_JSON else 0
        return (group, stage_pos, c.get("chunk", -1), _site_order(c.get("site")), c.get("group", -1),
                c.get("batch", -1), c.get("layer", -1), c.get("rank", -1), SOURCE_RANK.get(self.source, 3),
                _natural(self.key), self.element if self.element is not None else -1)


def _json_position(name: str) -> int:
    """Index JSON in the order upstream writes it: plan (setup), chunk metadata (index), metadata (finalize)."""
    if name == files.PLAN:
        return 0
    if (files.parse(name) or ("", None))[0] == files.CHUNK_METADATA:
        return 1
    return {files.METADATA: 2, "manifest.json": 3}.get(name, 4)


def _natural(s: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s))


def _site_order(site: str | None) -> tuple:
    if site is None:
        return (-1, 0, "")
    if site == "sample":
        return (0, 0, "")
    m = re.fullmatch(r"chunk(\d+)", site)
    if m:
        return (1, int(m.group(1)), "")
    return (2, 0, site)


_SITE = r"(?P<site>[A-Za-z]+\d*)"
_RANK = r"(?:\.rank(?P<rank>\d+))?"
_SCOPE_PATTERNS = {
    "global": "",
    "rank": _RANK,
    "chunk": r"_(?P<chunk>\d+)",
    "group": rf"_{_SITE}_(?P<group>\d+){_RANK}",
    "layer": rf"_{_SITE}_(?P<group>\d+)_b(?P<batch>\d+)_l(?P<layer>\d+){_RANK}",
    "query": r"_q(?P<qid>[A-Za-z0-9-]+)",
}
_TAP_REGEXES = [(s.name, re.compile(re.escape(s.name) + _SCOPE_PATTERNS[s.scope] + r"\.pt")) for s in STAGES]


def parse_tap_name(filename: str) -> tuple[str, dict] | None:
    """(stage, ctx) for a registry-named tap file, else None."""
    stem = filename[:-3] if filename.endswith(".pt") else filename
    if stem in ALIASES:
        return ALIASES[stem], {}
    hits = []
    for name, rx in _TAP_REGEXES:
        m = rx.fullmatch(filename)
        if not m:
            continue
        ctx = {k: (v if k == "site" or (k == "qid" and not v.isdigit()) else int(v))
               for k, v in m.groupdict().items() if v is not None}
        nranks = 2 if "rank" in ctx else 1
        try:
            again = artifact_filename(name, rank=ctx.get("rank", 0), nranks=nranks, chunk=ctx.get("chunk"),
                                      site=ctx.get("site"), group=ctx.get("group"), batch=ctx.get("batch"),
                                      layer=ctx.get("layer"), qid=ctx.get("qid"))
        except Exception:  # a registry change we do not know about: treat the file as unnamed
            continue
        if again == filename:
            hits.append((name, ctx))
    if not hits:
        return None
    return max(hits, key=lambda h: len(h[0]))


def _held_by_index_file() -> dict[str, list[str]]:
    """index file name or per-chunk template -> the stages it holds, in element order."""
    held: dict[str, list[str]] = {}
    for name in index_stages():
        held.setdefault(get_stage(name).index_file, []).append(name)
    for stages in held.values():
        stages.sort(key=lambda n: get_stage(n).index_element or 0)
    return held


_HELD = _held_by_index_file()


def _index_artifacts(path: Path, rel: str) -> list[Artifact] | None:
    parsed = files.parse(path.name)
    held = _HELD.get(parsed[0]) if parsed else None
    if not held:
        return None
    chunk = parsed[1]
    kind = "doclens" if path.name.endswith(".json") else "pt"
    if chunk is not None:
        (stage,) = held
        return [Artifact(f"{stage}_{chunk}", path, "index", kind, stage, None, {"chunk": chunk}, rel)]
    return [Artifact(stage, path, "index", kind, stage, get_stage(stage).index_element, {}, rel) for stage in held]


def looks_like_index(folder: Path) -> bool:
    return bool(files.index_markers(folder))


def _run_manifest(folder: Path) -> tuple[dict | None, str | None]:
    """(manifest, error) of a tap folder written by a save; (None, None) when it has no manifest."""
    from colbert.tap.manifest import MANIFEST, load_manifest

    if not (folder / MANIFEST).is_file() and not any(folder.glob("manifest.rank*.json")):
        return None, None
    try:
        m = load_manifest(str(folder))
    except Exception as e:  # noqa: BLE001 - reported as an error row, the comparison goes on
        return None, f"cannot read the manifest of {folder}: {type(e).__name__}: {e}"
    if not isinstance(m, dict) or not isinstance(m.get("artifacts"), dict):
        return None, f"the manifest of {folder} has no artifacts table"
    return m, None


@dataclass
class RunLayout:
    root: Path
    artifacts: list[Artifact]
    is_index: bool
    has_tap: bool
    notes: list[str] = field(default_factory=list)  # what the report should say about this folder
    errors: list[str] = field(default_factory=list)  # e.g. an unreadable manifest

    def by_key(self) -> dict[str, list[Artifact]]:
        out: dict[str, list[Artifact]] = {}
        for a in self.artifacts:
            out.setdefault(a.key, []).append(a)
        return out

    def find(self, key: str, prefer_source: str | None = None) -> Artifact | None:
        cands = [a for a in self.artifacts if a.key == key]
        if not cands:
            return None
        for a in cands:
            if a.source == prefer_source:
                return a
        return cands[0]


def scan_run(root: str | Path) -> RunLayout:
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder")
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder (give a tap folder or an index folder)")
    is_index = looks_like_index(root)
    folders = [root]
    tap_dir = root / "tap"
    if tap_dir.is_dir():
        folders.append(tap_dir)
    artifacts: list[Artifact] = []
    seen_keys: set[tuple[str, str]] = set()
    has_tap = False
    notes: list[str] = []
    errors: list[str] = []
    for folder in folders:
        in_tap_dir = folder != root
        files = sorted(p for p in folder.iterdir() if p.is_file())
        manifest, error = (None, None) if (is_index and not in_tap_dir) else _run_manifest(folder)
        if error:
            errors.append(error)
        expected: dict[str, str | None] = {}
        if manifest is not None:
            # A saved run is what its manifest lists: files an earlier save left behind, or a second
            # save mixed in, are not this run's and must not be paired as if they were.
            expected = _listed_files(manifest["artifacts"])
            listed = {n for n in expected if "/" not in n and n not in (".", "..")}
            unlisted = [p.name for p in files if p.name not in listed and not _manifest_file(p.name)
                        and not p.name.startswith(".")]
            if unlisted:
                rel_folder = "" if folder == root else f"{folder.name}/"
                more = f" (+{len(unlisted) - 5} more)" if len(unlisted) > 5 else ""
                notes.append(f"{root}: {len(unlisted)} file(s) in {rel_folder or './'} not listed in its manifest "
                             f"were ignored: {', '.join(rel_folder + n for n in unlisted[:5])}{more}")
            present = {p.name for p in files}
            files = [p for p in files if p.name in listed or _manifest_file(p.name)]
            files += [folder / n for n in sorted(listed - present)]  # listed but gone: an error row
            status = manifest.get("status")
            if status not in (None, "complete"):
                notes.append(f"{folder}: the run's manifest says {status!r} (the run did not finish)")
        for path in files:
            rel = str(path.relative_to(root))
            found = _classify(path, rel, in_tap_dir, is_index)
            for art in found:
                if path.name in expected:
                    art.sha256 = expected[path.name] or ""
                if (art.key, art.source) in seen_keys:  # e.g. the same tap file at the root and in tap/
                    art.key = f"{folder.name}/{art.key}"
                seen_keys.add((art.key, art.source))
                has_tap = has_tap or art.source == "tap"
                artifacts.append(art)
    artifacts.sort(key=Artifact.order)
    return RunLayout(root, artifacts, is_index, has_tap, notes, errors)


def _listed_files(entries: dict) -> dict[str, str]:
    """file name -> recorded sha256 ("" when the entry records none a reader could check)."""
    out = {}
    for key, e in entries.items():
        e = e if isinstance(e, dict) else {}
        name = e.get("file") if isinstance(e.get("file"), str) else key
        sha = e.get("sha256")
        out[str(name)] = sha.lower() if isinstance(sha, str) and re.fullmatch(r"[0-9a-fA-F]{64}", sha) else ""
    return out


def _manifest_file(name: str) -> bool:
    return name == "manifest.json" or re.fullmatch(r"manifest\.rank\d+\.json", name) is not None


def _classify(path: Path, rel: str, in_tap_dir: bool, is_index: bool) -> list[Artifact]:
    name = path.name
    if name.startswith("."):  # lock files, temp files of unfinished writes: never a run's artifact
        return []
    if not in_tap_dir and is_index:
        idx = _index_artifacts(path, rel)
        if idx is not None:
            return idx
    if name.endswith(".pt"):
        parsed = parse_tap_name(name)
        if parsed is not None:
            stage, ctx = parsed
            return [Artifact(name[:-3], path, "tap", "pt", stage, None, ctx, rel)]
        if not in_tap_dir:
            idx = _index_artifacts(path, rel)  # index-style names in a folder with no index markers
            if idx is not None:
                return idx
        return [Artifact(name[:-3], path, "other", "pt", None, None, {}, rel)]
    if name.endswith(".json"):
        idx = _index_artifacts(path, rel)
        if idx is not None:
            return idx
        return [Artifact(name, path, "index" if is_index and not in_tap_dir else "tap", "json", None, None,
                         _json_ctx(name), rel)]
    return [Artifact(name, path, "other", "file", None, None, {}, rel)]


def _json_ctx(name: str) -> dict:
    parsed = files.parse(name)
    return {"chunk": parsed[1]} if parsed and parsed[0] == files.CHUNK_METADATA else {}


def pair_artifacts(a: RunLayout, b: RunLayout) -> list[tuple[Artifact | None, Artifact | None]]:
    """Pair by key and source; leftovers with one key on each side pair across sources (tap vs index)."""
    ka, kb = a.by_key(), b.by_key()
    pairs: list[tuple[Artifact | None, Artifact | None]] = []
    for key in list(dict.fromkeys(list(ka) + list(kb))):
        la, lb = list(ka.get(key, [])), list(kb.get(key, []))
        for x in list(la):
            y = next((y for y in lb if y.source == x.source and y.element == x.element), None)
            if y is not None:
                pairs.append((x, y))
                la.remove(x)
                lb.remove(y)
        while la and lb:
            pairs.append((la.pop(0), lb.pop(0)))
        pairs.extend((x, None) for x in la)
        pairs.extend((None, y) for y in lb)
    pairs.sort(key=lambda p: (p[0] or p[1]).order())
    return pairs


__all__ = ["Artifact", "RunLayout", "scan_run", "pair_artifacts", "parse_tap_name"]

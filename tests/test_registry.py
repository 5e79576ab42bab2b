"""The stage registry is the one source per stage, and one module names the index files.

Read from the source (ast), not by running anything: the registry's `producer` must name the
function whose body calls `tap("<stage>", ...)`, every such call must name a registered stage, and
no module but colbert/indexing/index_files.py may spell an index file's name.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from colbert.indexing import index_files as files
from colbert.tap.stages import COMPARISONS, STAGE_NAMES, STAGES, get_stage, index_stages

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "colbert"
INDEX_FILES = PACKAGE / "indexing" / "index_files.py"


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _tap_calls() -> list[tuple[str, str, int]]:
    """(stage, qualified name of the enclosing function, line) of every `tap("...", ...)` call in colbert/."""
    found = []

    class Visitor(ast.NodeVisitor):
        def __init__(self, module: str):
            self.scope = [module]

        def _scoped(self, node):
            self.scope.append(node.name)
            self.generic_visit(node)
            self.scope.pop()

        visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

        def visit_Call(self, node):
            f = node.func
            if (isinstance(f, ast.Name) and f.id == "tap" and node.args and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)):
                found.append((node.args[0].value, ".".join(self.scope), node.lineno))
            self.generic_visit(node)

    for path in sorted(PACKAGE.rglob("*.py")):
        Visitor(_module_name(path)).visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return found


def test_the_scan_sees_the_pipeline():
    # a broken scan (say, one that finds no calls) would pass the checks below vacuously
    calls = _tap_calls()
    assert {s for s, _, _ in calls} >= {"codes", "pid_ivf", "Q", "ranked_scores", "tensorize_output"}
    assert ("codes", "colbert.indexing.collection_indexer.index_chunks") in {(s, f) for s, f, _ in calls}


def test_every_tap_call_names_a_registered_stage():
    unknown = [f"{fn}:{line} tap({s!r})" for s, fn, line in _tap_calls() if s not in STAGE_NAMES]
    assert not unknown, f"tap calls of stages the registry does not list: {unknown}"


def test_every_stage_is_tapped_where_its_producer_says():
    by_stage: dict[str, set[str]] = {}
    for s, fn, _ in _tap_calls():
        by_stage.setdefault(s, set()).add(fn)
    wrong = {s.name: (s.producer, sorted(by_stage.get(s.name, ()))) for s in STAGES
             if by_stage.get(s.name) != {s.producer}}
    assert not wrong, f"stage: (registry's producer, functions that tap it): {wrong}"


def test_how_each_stage_is_compared_is_consistent():
    for s in STAGES:
        assert s.compare in COMPARISONS, s.name
        if s.kind == "tensor" and s.dtype is not None:
            float_dtype = s.dtype.startswith(("float", "bfloat"))
            # a float stage gets tolerances; an exact one is judged bit for bit
            assert (s.compare == "float") == float_dtype, (s.name, s.compare, s.dtype)
        if s.compare == "set":
            assert s.kind in ("set", "list", "tensor"), s.name
        if s.compare == "ivf":
            assert s.companion is not None and get_stage(s.companion).scope == s.scope, s.name
        if s.companion is not None:
            get_stage(s.companion)  # raises for an unknown name
    assert get_stage("sample_pids").compare == "set"
    assert get_stage("residuals").compare == "residuals"
    assert get_stage("pid_ivf").companion == "pid_ivf_lengths"


def test_index_files_of_the_registry_are_index_file_names():
    for name in index_stages():
        s = get_stage(name)
        assert files.parse(files.chunk_file(s.index_file, 0) if "{chunk}" in s.index_file else s.index_file), name
        assert ("{chunk}" in s.index_file) == (s.scope == "chunk"), name
    held: dict[str, list] = {}
    for name in index_stages():
        s = get_stage(name)
        held.setdefault(s.index_file, []).append(s.index_element)
    # a tuple file lists its elements 0..n-1 once each; a single-value file has no element
    for f, elements in held.items():
        assert elements == [None] or sorted(elements) == list(range(len(elements))), (f, elements)
    assert held[files.IVF] == [0, 1] and held[files.BUCKETS] == [0, 1]
    assert set(index_stages()) == {"bucket_cutoffs", "bucket_weights", "avg_residual", "centroids", "doclens",
                                   "codes", "residuals", "pid_ivf", "pid_ivf_lengths"}


# Index file names as they would be spelled: whole names, and the per-chunk forms ({i}.codes.pt,
# doclens.{i}.json, *.metadata.json, ...). Tap names such as postnorm_centroids.pt or codes_0.pt do not match.
_SPELLED = re.compile(r"(?<![\w.])(plan\.json|metadata\.json|centroids\.pt|buckets\.pt|avg_residual\.pt|ivf\.pid\.pt"
                      r"|ivf\.pt)|\.(codes|residuals|metadata)\.(pt|json)|doclens\.[{*\d]")


def _code_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every string literal that is not a docstring (f-string parts included)."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_the_pattern_finds_index_names_and_not_tap_names():
    for s in ("ivf.pid.pt", "x/metadata.json", "{i}.codes.pt", "doclens.{chunk}.json", "*.metadata.json", "ivf.pt"):
        assert _SPELLED.search(s), s
    for s in ("postnorm_centroids.pt", "codes_0.pt", "manifest.json", "doclens.numel()", "pid_ivf.pt"):
        assert not _SPELLED.search(s), s


def test_only_index_files_spells_index_file_names():
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == INDEX_FILES:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        hits += [f"{path.relative_to(ROOT)}:{line}: {text!r}" for line, text in _code_strings(tree)
                 if _SPELLED.search(text)]
    assert not hits, "index file names spelled outside colbert/indexing/index_files.py:\n" + "\n".join(hits)


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_ivf_pid_pt_is_written_in_one_module():
    out = subprocess.run(["git", "grep", "--untracked", "-l", "-F", "ivf.pid.pt", "--", "colbert"], cwd=ROOT, capture_output=True,
                         text=True, check=False)
    assert out.returncode in (0, 1), out.stderr
    assert out.stdout.split() == ["colbert/indexing/index_files.py"]


def test_index_file_names_round_trip_and_erase_covers_them(tmp_path):
    for template in files.CHUNK_TEMPLATES:
        assert files.parse(files.chunk_file(template, 12)) == (template, 12)
    assert files.chunk_files(3) == ("3.codes.pt", "3.residuals.pt", "doclens.3.json", "3.metadata.json")
    assert files.parse("12.codes.pt.tmp") is None and files.parse("codes_0.pt") is None
    every = [files.PLAN, files.METADATA, *files.CODEC_FILES, files.IVF, files.LEGACY_IVF, files.FINGERPRINT,
             files.rank_sample_file(1), *files.chunk_files(0)]
    assert all(files.erased_by_overwrite(n) for n in every)
    assert not any(files.erased_by_overwrite(n) for n in ("collection.tsv", "notes.json", "tap"))
    assert files.index_markers(tmp_path) == []
    (tmp_path / files.chunk_file(files.CODES, 0)).write_bytes(b"")
    (tmp_path / files.PLAN).write_text("{}")
    assert files.index_markers(tmp_path) == [files.PLAN, "0.codes.pt"]
    assert [n for _, n in files.chunks_of(tmp_path, files.CODES)] == ["0.codes.pt"]

"""manifest.json: what produced a saved tap folder, and what each artifact in it is.

One rank (nranks == 1) writes `manifest.json` directly. With nranks > 1 each rank writes its own
`manifest.rank{r}.json` part (no rank ever rewrites another's), and at the end each rank merges all
parts present into `manifest.json` under a file lock; the last rank to finish therefore leaves the
complete merge. `load_manifest(folder)` re-merges from the parts, so readers never depend on who
finished last.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import glob
import importlib.metadata as _md
import json
import os
import platform
import sys
from typing import Any

from colbert.utils.io import atomic_write_bytes  # noqa: F401 - also imported from here by colbert.matrix
from colbert.utils.locks import folder_lock

MANIFEST = "manifest.json"
MERGE_LOCK = ".manifest.lock"
FORMAT = "colbert-tap-manifest/1"

# distribution names tried for each reported package, first found wins
_PACKAGES = {
    "torch": ("torch",),
    "transformers": ("transformers",),
    "numpy": ("numpy",),
    "faiss": ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cu11", "faiss"),
    "fastkmeans": ("fastkmeans",),
    "tokenizers": ("tokenizers",),
    "colbert-tap": ("colbert-tap",),
}


def part_name(rank: int, nranks: int) -> str:
    return MANIFEST if nranks <= 1 else f"manifest.rank{rank}.json"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    # importlib.metadata, not import: importing faiss or transformers just to read a version
    # would cost seconds and could change the process's thread settings.
    out = {"python": platform.python_version()}
    for key, dists in _PACKAGES.items():
        for d in dists:
            try:
                out[key] = _md.version(d)
                break
            except _md.PackageNotFoundError:
                continue
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch"] = torch.__version__  # the imported one, in case several are installed
    return out


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(config: dict[str, Any] | None) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(), "cpu": cpu_name(),
                            "cuda_available": bool(torch.cuda.is_available())}
    if info["cuda_available"]:
        with contextlib.suppress(Exception):
            info["gpu_count"] = torch.cuda.device_count()
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            info["cuda"] = torch.version.cuda
    info["device"] = "cuda" if info["cuda_available"] and _uses_gpu(config) else "cpu"
    return info


def _uses_gpu(config: dict[str, Any] | None) -> bool:
    if not config:
        return True
    gpus = config.get("gpus", config.get("total_visible_gpus"))
    return bool(gpus) and gpus not in (0, "0", [], "")


def thread_info() -> dict[str, Any]:
    import torch

    return {"torch_num_threads": torch.get_num_threads(), "torch_num_interop_threads": torch.get_num_interop_threads(),
            "os_cpu_count": os.cpu_count(),
            **{k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}}


def git_revision() -> str | None:
    """HEAD of the checkout the `colbert` package runs from, read without running git."""
    here = os.path.dirname(os.path.abspath(__file__))
    d = here
    while True:
        git = os.path.join(d, ".git")
        if os.path.exists(git):
            return _read_head(git)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    # an installed wheel/sdist from a VCS URL records the commit in direct_url.json
    with contextlib.suppress(Exception):
        text = _md.distribution("colbert-tap").read_text("direct_url.json")
        if text:
            return json.loads(text).get("vcs_info", {}).get("commit_id")
    return None


def _read_head(git: str) -> str | None:
    try:
        if os.path.isfile(git):  # worktree: "gitdir: <path>"
            with open(git) as f:
                git = f.read().split(":", 1)[1].strip()
        with open(os.path.join(git, "HEAD")) as f:
            head = f.read().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(":", 1)[1].strip()
        commondir = git
        if os.path.exists(os.path.join(git, "commondir")):
            with open(os.path.join(git, "commondir")) as f:
                commondir = os.path.join(git, f.read().strip())
        for base in (git, commondir):
            p = os.path.join(base, ref)
            if os.path.exists(p):
                with open(p) as f:
                    return f.read().strip()
        packed = os.path.join(commondir, "packed-refs")
        if os.path.exists(packed):
            with open(packed) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 2 and parts[1] == ref:
                        return parts[0]
        return None  # a branch with no commits yet
    except OSError:
        return None


# Besides COLBERT_*: what decides where `colbert` and the model come from, and the thread counts.
_REPLAY_ENV = ("PYTHONPATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def replay_record() -> dict[str, Any]:
    """What `colbert-tap replay` needs to run this process again unattended.

    argv is the interpreter's own (sys.orig_argv, so `python -m colbert.cli index ...` and
    `python index.py` both replay as typed), without the interpreter, which is `executable`.
    Other variables a script reads are not recorded: a replay inherits them from its caller.
    """
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])[1:]
    env = {k: v for k, v in os.environ.items() if k.startswith("COLBERT_") or k in _REPLAY_ENV}
    return {"executable": sys.executable, "argv": argv, "cwd": os.getcwd(), "env": env}


def environment_record(info: dict[str, Any]) -> dict[str, Any]:
    config = info.get("config")
    return {
        "versions": package_versions(),
        "device": device_info(config if isinstance(config, dict) else None),
        "threads": thread_info(),
        "config": config,
        "argv": list(info.get("argv", sys.argv)),
        "working_dir": os.getcwd(),
        "git_revision": git_revision(),
        "index_path": info.get("index_path"),
        "replay": replay_record(),
        "phase": info.get("phase", "index"),  # "search" for a Searcher call
        **({"source": info["source"]} if info.get("source") else {}),
    }


class ManifestWriter:
    """Holds one rank's manifest in memory and writes it atomically."""

    def __init__(self, folder: str, info: dict[str, Any], tap_settings: dict[str, Any]):
        self.folder = folder
        self.rank = int(info.get("rank", 0) or 0)
        self.nranks = int(info.get("nranks", 1) or 1)
        self.path = os.path.join(folder, part_name(self.rank, self.nranks))
        self.data: dict[str, Any] = {
            "format": FORMAT,
            "status": "running",
            "started": _now(),
            "updated_at": None,
            "rank": self.rank,
            "nranks": self.nranks,
            "tap_dir": os.path.abspath(folder),
            "tap": tap_settings,
            **environment_record(info),
            "artifacts": {},
        }

    def add(self, filename: str, entry: dict[str, Any]) -> None:
        self.data["artifacts"][filename] = entry

    def write(self) -> None:
        self.data["updated_at"] = _now()
        blob = json.dumps(self.data, indent=1, default=_json_default).encode()
        try:
            atomic_write_bytes(self.path, blob)
        except FileNotFoundError:
            # the folder was removed under us (an index overwrite clears <index_path>/tap)
            os.makedirs(self.folder, exist_ok=True)
            atomic_write_bytes(self.path, blob)

    def finish(self, status: str) -> None:
        self.data["status"] = status
        self.data["finished"] = _now()
        self.write()
        if self.nranks > 1:
            with folder_lock(self.folder, MERGE_LOCK, what="tap manifest merge", blocking=True):
                merged = merge_parts(self.folder)
                atomic_write_bytes(os.path.join(self.folder, MANIFEST),
                                   json.dumps(merged, indent=1, default=_json_default).encode())


def _json_default(x: Any) -> Any:
    if isinstance(x, (set, frozenset, tuple)):
        return list(x)
    return str(x)


def merge_parts(folder: str) -> dict[str, Any]:
    parts = []
    for p in sorted(glob.glob(os.path.join(folder, "manifest.rank*.json"))):
        with open(p) as f:
            parts.append(json.load(f))
    if not parts:
        raise FileNotFoundError(f"no manifest parts in {folder}")
    parts.sort(key=lambda m: m.get("rank", 0))
    base = {k: v for k, v in parts[0].items() if k not in ("artifacts", "status", "rank")}
    artifacts: dict[str, Any] = {}
    for m in parts:
        for name, entry in m.get("artifacts", {}).items():
            artifacts[name] = {**entry, "rank": m.get("rank", 0)}
    statuses = {m.get("rank", 0): m.get("status") for m in parts}
    nranks = base.get("nranks", len(parts))
    complete = len(parts) == nranks and all(s == "complete" for s in statuses.values())
    return {**base, "status": "complete" if complete else "incomplete", "rank_status": statuses,
            "ranks": {str(m.get("rank", 0)): {k: m.get(k) for k in ("started", "finished", "device", "threads")}
                      for m in parts},
            "artifacts": dict(sorted(artifacts.items()))}


def load_manifest(folder: str) -> dict[str, Any]:
    """The manifest of a saved tap folder, merged over ranks. Raises FileNotFoundError if none."""
    if glob.glob(os.path.join(folder, "manifest.rank*.json")):
        return merge_parts(folder)
    with open(os.path.join(folder, MANIFEST)) as f:
        return json.load(f)

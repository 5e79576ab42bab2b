"""Re-running a saved run unattended: `colbert-tap replay RUN --save OUT [--swap DIR] [--only STAGES]`.

A tap folder's manifest records how its process was started (`replay`: interpreter, argv, working
directory, COLBERT_* and PYTHONPATH). A replay starts the same command in the same interpreter, so a
run made under another torch install replays there, with the tap settings replaced: save into OUT,
optionally swap from DIR (only STAGES of it, while every stage is still saved), and the index
redirected to a folder of its own (COLBERT_TAP_INDEX_PATH) so the original index is never touched.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from dataclasses import dataclass

from colbert.tap.errors import TapConfigError
from colbert.tap.manifest import MANIFEST, load_manifest

log = logging.getLogger(__name__)

# Set by the replay itself; the recorded values of these never carry over.
_REPLACED = ("COLBERT_TAP", "COLBERT_TAP_DIR", "COLBERT_TAP_SWAP_ONLY", "COLBERT_TAP_INDEX_PATH")


class ReplayError(RuntimeError):
    """A run that cannot be replayed, or a replay that failed; the message names the file or log."""


@dataclass
class Replay:
    run: str  # the tap folder replayed
    tap: str  # the new tap folder
    index: str  # the new index folder
    log: str
    seconds: float
    command: list[str]


def tap_folder_of(run: str) -> str:
    """A tap folder, or an index folder holding tap/."""
    run = os.path.abspath(run)
    if os.path.exists(os.path.join(run, MANIFEST)):
        return run
    if os.path.exists(os.path.join(run, "tap", MANIFEST)):
        return os.path.join(run, "tap")
    raise ReplayError(f"replay: {run} holds no {MANIFEST} (expected a folder written by COLBERT_TAP=save, "
                      "or an index folder with tap/)")


def replay_record_of(tap: str) -> dict:
    try:
        manifest = load_manifest(tap)
    except (OSError, ValueError) as e:
        raise ReplayError(f"replay: cannot read {os.path.join(tap, MANIFEST)}: {e}") from None
    rec = manifest.get("replay")
    if not isinstance(rec, dict) or not rec.get("executable") or not isinstance(rec.get("argv"), list):
        raise ReplayError(f"replay: {os.path.join(tap, MANIFEST)} has no replay record (saved by an older "
                          "colbert-tap, or by hand): re-run that run yourself with COLBERT_TAP=save:OUT "
                          "(and swap:DIR) in its own environment")
    if manifest.get("phase", "index") != "index":
        raise ReplayError(f"replay: {tap} is a {manifest.get('phase')} run; only indexing runs replay")
    return rec


def replay_command(tap: str, save: str, swap: str | None = None, only: str | None = None,
                   index: str | None = None) -> tuple[list[str], dict[str, str], str, str]:
    """(command, environment, working directory, index folder) of the replay; checks every input first."""
    rec = replay_record_of(tap)
    python = rec["executable"]
    if not os.path.isfile(python) or not os.access(python, os.X_OK):
        raise ReplayError(f"replay: the run's interpreter {python} (recorded in {os.path.join(tap, MANIFEST)}) "
                          "no longer exists or is not executable")
    cwd = rec.get("cwd") or os.getcwd()
    if not os.path.isdir(cwd):
        raise ReplayError(f"replay: the run's working directory {cwd} no longer exists")
    save = os.path.abspath(save)
    if os.path.abspath(tap) == save:
        raise ReplayError(f"replay: --save {save} is the run being replayed; choose a new folder")
    if swap is not None and not os.path.isdir(swap):
        raise ReplayError(f"replay: --swap {swap} is not a folder")
    if only:
        from colbert.tap.stages import match_stages

        try:
            match_stages(only)
        except ValueError as e:
            raise TapConfigError(f"replay --only: {e}") from None
    index = os.path.abspath(index or save.rstrip(os.sep) + ".index")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLBERT_")}
    env.update({k: v for k, v in (rec.get("env") or {}).items() if k not in _REPLACED})
    env["COLBERT_TAP"] = ",".join(([f"swap:{os.path.abspath(swap)}"] if swap else []) + _user_taps(rec)
                                  + [f"save:{save}"])
    if only:
        env["COLBERT_TAP_SWAP_ONLY"] = only
    env["COLBERT_TAP_INDEX_PATH"] = index
    return [python, *rec["argv"]], env, cwd, index


def _user_taps(rec: dict) -> list[str]:
    """The run's own `package.module:Class` taps (part of what the run computed), kept in the replay;
    only its save/swap actions are replaced."""
    from colbert.tap.env import parse_actions

    try:
        return [arg for action, arg in parse_actions((rec.get("env") or {}).get("COLBERT_TAP", "")) if action == "user"]
    except TapConfigError:
        return []


def replay(run: str, save: str, *, swap: str | None = None, only: str | None = None, index: str | None = None,
           log_path: str | None = None, timeout: float | None = None) -> Replay:
    """Run it again; raises ReplayError (naming the log) when the replayed process fails."""
    tap = tap_folder_of(run)
    cmd, env, cwd, index = replay_command(tap, save, swap, only, index)
    log_path = os.path.abspath(log_path or os.path.abspath(save).rstrip(os.sep) + ".log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as logf:
        logf.write(f"$ {' '.join(cmd)}\n  (cwd {cwd}; COLBERT_TAP={env['COLBERT_TAP']}; "
                   f"COLBERT_TAP_INDEX_PATH={index})\n")
        logf.flush()
        try:
            proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=logf, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ReplayError(f"replay of {tap} timed out after {timeout} s (log: {log_path})") from None
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise ReplayError(f"replay of {tap} failed with exit code {proc.returncode} (log: {log_path}): "
                          f"{_last_line(log_path)}")
    if not os.path.exists(os.path.join(save, MANIFEST)):
        raise ReplayError(f"replay of {tap} exited 0 but wrote no {MANIFEST} to {save} (log: {log_path})")
    log.debug("replayed %s into %s in %.1f s", tap, save, seconds)  # the CLI reports the replay itself
    return Replay(run=tap, tap=save, index=index, log=log_path, seconds=seconds, command=cmd)


def _last_line(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
        return lines[-1] if lines else ""
    except OSError:
        return ""


def replay_json(r: Replay) -> str:
    return json.dumps({"run": r.run, "tap": r.tap, "index": r.index, "log": r.log, "seconds": round(r.seconds, 2),
                       "command": r.command}, indent=2)

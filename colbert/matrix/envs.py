"""Building and checking the matrix's environments: one virtual environment per torch version.

An environment is complete when its marker file `.matrix-env-<hash>` exists, where the hash covers the
requirement lines, the installer and its index options; a complete environment is reused as it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field

from colbert.matrix.pins import no_deps_packages, pin_set, requirement_lines, upstream_pins

log = logging.getLogger(__name__)

ENV_MARKER_PREFIX = ".matrix-env-"
UPSTREAM_MARKER_PREFIX = ".matrix-upstream-"

# What a run's interpreter is asked before any job: its torch, and where `colbert` comes from.
PROBE = r"""
import json, os, sys
if sys.path and sys.path[0] in ("", os.getcwd()):
    sys.path.pop(0)  # python -c puts the current folder first; the probe must see what a job sees
out = {"python": sys.version.split()[0], "executable": sys.executable}
try:
    import torch
    out["torch"] = torch.__version__
except Exception as e:
    out["torch_error"] = f"{type(e).__name__}: {e}"
try:
    import colbert
    out["colbert"] = os.path.dirname(os.path.abspath(colbert.__file__))
    # the package folder itself, not find_spec: an editable install's finder maps colbert.tap by name
    out["fork"] = os.path.isfile(os.path.join(out["colbert"], "tap", "__init__.py"))
except Exception as e:
    out["colbert_error"] = f"{type(e).__name__}: {e}"
print("MATRIX-PROBE " + json.dumps(out))
"""


class InstallError(RuntimeError):
    """An installer step failed; the message carries the installer's own error lines."""


@dataclass
class Installer:
    """How environments are made: `uv` when it is on PATH (and not refused), else venv + pip."""

    base_python: str = sys.executable
    use_uv: bool | None = None  # None: uv if found
    index_url: str | None = None
    extra_index_urls: list[str] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.uv = shutil.which("uv") if self.use_uv in (None, True) else None
        if self.use_uv and not self.uv:
            raise ValueError("--installer uv: no `uv` on PATH")

    @property
    def name(self) -> str:
        return "uv" if self.uv else "pip"

    def index_args(self) -> list[str]:
        out: list[str] = []
        if self.index_url:
            out += ["--index-url", self.index_url]
        for u in self.extra_index_urls:
            out += ["--extra-index-url", u]
        for f in self.find_links:
            out += ["--find-links", f]
        return out

    def fingerprint(self) -> list[str]:
        return [self.name] + self.index_args()

    def create_venv(self, path: str) -> list[str]:
        if self.uv:
            return [self.uv, "venv", "--python", self.base_python, path]
        return [self.base_python, "-m", "venv", path]

    def install(self, python: str, requirements: list[str], no_deps: bool = False,
                target: str | None = None) -> list[str]:
        if self.uv:
            cmd = [self.uv, "pip", "install", "--python", python]
        else:
            cmd = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
        if no_deps:
            cmd.append("--no-deps")
        if target:
            cmd += ["--target", target]
        return cmd + self.index_args() + list(requirements)


def env_python(env_dir: str) -> str:
    return os.path.join(env_dir, "bin", "python")


def _digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def env_requirements(torch_version: str) -> tuple[list[str], list[str]]:
    """(resolved with dependencies, installed with --no-deps) requirement lines for torch==V."""
    pins = pin_set(torch_version)
    main = {k: v for k, v in pins.items() if k not in no_deps_packages()}
    nodeps = {k: v for k, v in pins.items() if k in no_deps_packages()}
    # torch first, so that an unknown torch version is the first thing the installer complains about
    ordered = {"torch": main.pop("torch"), **main}
    return requirement_lines(ordered), requirement_lines(nodeps)


def env_marker(env_dir: str, installer: Installer, torch_version: str) -> str:
    main, nodeps = env_requirements(torch_version)
    digest = _digest(main + ["--no-deps"] + nodeps + installer.fingerprint() + [os.path.realpath(installer.base_python)])
    return os.path.join(env_dir, ENV_MARKER_PREFIX + digest)


def upstream_dir(env_dir: str) -> str:
    return os.path.join(env_dir, "upstream")


def upstream_marker(env_dir: str, installer: Installer) -> str:
    lines = requirement_lines(upstream_pins())
    return os.path.join(upstream_dir(env_dir), UPSTREAM_MARKER_PREFIX + _digest(lines + installer.fingerprint()))


def run_logged(cmd: list[str], log_path: str, env: dict | None = None, cwd: str | None = None,
               timeout: float | None = None) -> tuple[int, str]:
    """Run cmd with stdout+stderr going straight into log_path (so a long run can be followed there);
    returns (exit code, what it wrote). The command gets its own process group: on a timeout the whole
    group is killed, helpers (e.g. multiprocessing's resource tracker) included."""
    with open(log_path, "a", encoding="utf-8") as logf:
        logf.write(f"$ {' '.join(cmd)}\n")
        if cwd:
            logf.write(f"  (cwd {cwd})\n")
        logf.flush()
        start = logf.tell()
        try:
            proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    cwd=cwd, start_new_session=True)
        except OSError as e:
            logf.write(f"cannot start: {e}\n")
            return 127, str(e)
        try:
            rc = proc.wait(timeout=timeout)
            note = ""
        except subprocess.TimeoutExpired:
            rc, note = 124, f"timed out after {timeout} s"
        finally:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever it left behind
            proc.wait()
    with open(log_path, encoding="utf-8", errors="replace") as f:
        f.seek(start)
        out = f.read()
    with open(log_path, "a", encoding="utf-8") as logf:
        logf.write((f"\n{note}\n" if note else "") + f"[exit {rc}]\n")
    return rc, out + (f"\n{note}" if note else "")


def installer_error(output: str, limit: int = 6) -> str:
    """The installer's own words for why it failed (pip's ERROR lines, uv's × / ╰─▶ lines)."""
    picked = []
    for line in output.splitlines():
        s = line.strip()
        if s.startswith(("ERROR:", "error:", "×", "╰─▶", "│", "The conflict is caused by", "The user requested")) \
                or "No matching distribution" in s \
                or "Could not find a version" in s or "ResolutionImpossible" in s:
            picked.append(s)
    if not picked:
        picked = [s.strip() for s in output.splitlines() if s.strip()][-3:]
    return " | ".join(picked[-limit:])[:1500]


def ensure_env(env_dir: str, torch_version: str, installer: Installer, log_path: str) -> tuple[str, bool]:
    """(python of the environment for torch==V, reused?). Raises InstallError with the installer's message."""
    marker = env_marker(env_dir, installer, torch_version)
    python = env_python(env_dir)
    if os.path.exists(marker) and os.path.exists(python):
        _note(log_path, f"environment {env_dir} reused (marker {os.path.basename(marker)})")
        return python, True
    if os.path.exists(env_dir):
        shutil.rmtree(env_dir)  # incomplete or built for other requirements
    os.makedirs(os.path.dirname(env_dir) or ".", exist_ok=True)
    main, nodeps = env_requirements(torch_version)
    _note(log_path, f"building environment {env_dir} with {installer.name}: {' '.join(main)}; "
                    f"--no-deps {' '.join(nodeps)}")
    rc, out = run_logged(installer.create_venv(env_dir), log_path)
    if rc != 0:
        raise InstallError(f"creating the environment failed (exit {rc}): {installer_error(out)}")
    if not installer.uv:
        with open(os.path.join(env_dir, "requirements.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(main + nodeps) + "\n")
    rc, out = run_logged(installer.install(python, main), log_path)
    if rc != 0:
        raise InstallError(f"installing torch=={torch_version} and its pins failed (exit {rc}): "
                           f"{installer_error(out)}")
    if nodeps:
        rc, out = run_logged(installer.install(python, nodeps, no_deps=True), log_path)
        if rc != 0:
            raise InstallError(f"installing {' '.join(nodeps)} failed (exit {rc}): {installer_error(out)}")
    with open(marker, "w", encoding="utf-8") as f:
        f.write("\n".join(main + ["--no-deps"] + nodeps + installer.fingerprint()) + "\n")
    return python, False


def ensure_upstream(env_dir: str, python: str, installer: Installer, log_path: str) -> tuple[str, bool]:
    """colbert-ai 0.2.22 and what it needs beyond the pin set, --no-deps into ENV/upstream. -> (folder, reused?)"""
    target = upstream_dir(env_dir)
    marker = upstream_marker(env_dir, installer)
    if os.path.exists(marker):
        _note(log_path, f"upstream folder {target} reused")
        return target, True
    if os.path.exists(target):
        shutil.rmtree(target)
    lines = requirement_lines(upstream_pins())
    _note(log_path, f"installing colbert-ai into {target}: {' '.join(lines)}")
    rc, out = run_logged(installer.install(python, lines, no_deps=True, target=target), log_path)
    if rc != 0:
        raise InstallError(f"installing colbert-ai 0.2.22 failed (exit {rc}): {installer_error(out)}")
    with open(marker, "w", encoding="utf-8") as f:
        f.write("\n".join(lines + installer.fingerprint()) + "\n")
    return target, False


def probe(python: str, env: dict, log_path: str, timeout: float | None = 300) -> dict:
    """What the interpreter imports (torch version, colbert folder, whether it is this fork)."""
    if not os.path.exists(python):
        raise FileNotFoundError(f"interpreter {python} does not exist")
    rc, out = run_logged([python, "-c", PROBE], log_path, env=env, timeout=timeout)
    for line in out.splitlines():
        if line.startswith("MATRIX-PROBE "):
            return json.loads(line[len("MATRIX-PROBE "):])
    raise RuntimeError(f"interpreter {python} could not be probed (exit {rc}): {output_tail(out)}")


def output_tail(out: str, n: int = 3) -> str:
    lines = [s.strip() for s in out.splitlines() if s.strip()]
    return " | ".join(lines[-n:])[:1000]


def _note(log_path: str, text: str) -> None:
    log.info(text)
    with open(log_path, "a", encoding="utf-8") as f:
        f.write(f"[matrix] {text}\n")

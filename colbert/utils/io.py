"""Atomic file writes. Every file an index holds goes through here, so a crash never leaves a
half-written file under its final name.

Files end up with the mode a plain open() would give them (0666 less the process umask), not
mkstemp's private 0600: an index is often built by one account and searched by another.
A write that fails is reported against the final path (a disk-full torch.save otherwise names
neither the file nor the cause), and its temp file is removed before the error propagates.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile

import torch
import ujson

# Below this many free bytes a write failure that torch reports without an errno is taken to be
# a full disk (torch's stream writer says only "file write failed").
_LOW_SPACE_BYTES = 16 << 20
_TEMP_PREFIX = ".tmp-"


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (os.umask can only be read
    by setting it, which would briefly hand a concurrent thread's new file the wrong mode)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_default_mode(path: str, *, directory: bool = False) -> None:
    """Give a file or folder made by mkstemp/mkdtemp (0600/0700) the mode open()/mkdir() would."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def write_error(path: str, e: BaseException) -> OSError:
    """An OSError that names the final path; a full disk says so in words."""
    code = getattr(e, "errno", None)
    if code is None and _low_space(os.path.dirname(os.path.abspath(path))):
        code = errno.ENOSPC
    if code in (errno.ENOSPC, errno.EDQUOT):
        why = "No space left on device" if code == errno.ENOSPC else "Disk quota exceeded"
        return OSError(code, f"{why}: could not write {path} (nothing was left under that name; free some "
                             "space and run again)", path)
    detail = getattr(e, "strerror", None) or str(e)
    return OSError(code or errno.EIO, f"could not write {path}: {detail}", path)


def _low_space(directory: str) -> bool:
    try:
        return shutil.disk_usage(directory).free < _LOW_SPACE_BYTES
    except OSError:
        return False


def _write_all(f, data: bytes) -> None:
    f.write(data)
    f.flush()


def atomic_write_bytes(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=_TEMP_PREFIX, suffix="-" + os.path.basename(path))
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                _write_all(f, data)
            apply_default_mode(tmp)
        except OSError as e:
            raise write_error(path, e) from e
        os.replace(tmp, path)
    except BaseException:
        _silent_remove(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj, path: str) -> None:
    # torch.save names the archive root after the file's base name, which is part of the bytes we
    # must match; so the temp file keeps the final base name inside a private temp folder.
    # (torch.save opens the file itself, so it gets open()'s umask mode; the folder never survives.)
    directory = os.path.dirname(os.path.abspath(path))
    tmpdir = tempfile.mkdtemp(dir=directory, prefix=_TEMP_PREFIX + "save-")
    try:
        tmp = os.path.join(tmpdir, os.path.basename(path))
        try:
            torch.save(obj, tmp)
        except OSError as e:
            raise write_error(path, e) from e
        except RuntimeError as e:
            # torch's zip writer turns a failed write into a RuntimeError without errno or path
            if "write" not in str(e).lower():
                raise
            raise write_error(path, e) from e
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def write_json_compact(path: str, obj) -> None:
    atomic_write_text(path, ujson.dumps(obj))


def write_json_pretty(path: str, obj) -> None:
    atomic_write_text(path, ujson.dumps(obj, indent=4) + "\n")


def remove_stale_temps(directory: str) -> list[str]:
    """Remove the temp files and folders that writes here left in `directory` when their process
    was killed (a clean failure removes its own). Only for a folder no other run is writing to."""
    removed = []
    for name in sorted(os.listdir(directory)):
        if not name.startswith(_TEMP_PREFIX):
            continue
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            _silent_remove(path)
        removed.append(name)
    return removed


def _silent_remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass

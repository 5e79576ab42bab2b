"""Per-folder write locks: one writer at a time for an index folder or a tap save folder.

The lock is `fcntl.flock` on a dot-file inside the folder. The kernel drops a flock when its holder
dies (kill -9 included), so a crash never leaves a stale lock; the file itself is removed on release.
Dot-files are skipped by Indexer.erase (glob), by `colbert-tap compare` and by upstream's readers,
which open the files they need by name.

A second writer does not wait: it gets FolderLockedError naming the folder and the holder's pid, so
two runs on one folder fail loudly instead of writing a mix of both. Within one process the lock is
re-entrant for the thread that holds it (the indexer locks the folder, then the tap session it runs
asks again); another thread of the same process is refused like another process.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import socket
import sys
import threading
from typing import Iterator

INDEX_LOCK = ".colbert-index.lock"
TAP_LOCK = ".colbert-tap.lock"


class FolderLockedError(RuntimeError):
    """Another run is writing to the folder."""


# realpath of the lock file -> [fd, depth, owning thread ident]
_HELD: dict[str, list[int]] = {}
_HELD_GUARD = threading.Lock()


def _holder_line() -> bytes:
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    cmd = " ".join(getattr(sys, "orig_argv", None) or sys.argv)[:300]
    return f"pid {os.getpid()} on {socket.gethostname()} since {started}: {cmd}\n".encode(errors="replace")


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 1000).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "a process that has not yet recorded its pid"


def _open_locked(path: str, blocking: bool, what: str, folder: str) -> int:
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise FolderLockedError(f"{what}: {folder} is being written by another run ({holder}); wait for it "
                                    "to finish or use another folder") from None
        except BaseException:
            os.close(fd)
            raise
        # the previous holder unlinks the file on release: if it did so between our open and our
        # flock, we hold a lock on a file nobody else will ever see, so start again
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextlib.contextmanager
def folder_lock(folder: str, name: str = INDEX_LOCK, *, what: str = "index", blocking: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (which must exist) for the duration of the block.

    blocking=False raises FolderLockedError at once when another process (or another thread of this
    one) holds it; blocking=True waits (for short critical sections such as a manifest merge).
    """
    try:
        import fcntl  # noqa: F401
    except ImportError:  # pragma: no cover - not POSIX: no locking, writes are still atomic
        yield
        return
    path = os.path.join(os.path.realpath(folder), name)
    me = threading.get_ident()
    with _HELD_GUARD:
        held = _HELD.get(path)
        if held is not None and held[2] == me:
            held[1] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _HELD_GUARD:
                _HELD[path][1] -= 1
        return
    if held is not None and not blocking:
        raise FolderLockedError(f"{what}: {folder} is being written by another thread of this process "
                                f"(pid {os.getpid()}); wait for it to finish or use another folder")
    fd = _open_locked(path, blocking, what, folder)
    try:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, _holder_line())
        with _HELD_GUARD:
            _HELD[path] = [fd, 1, me]
        try:
            yield
        finally:
            with _HELD_GUARD:
                _HELD.pop(path, None)
            # unlink while still holding the lock, so no one can lock the old file after we let go
            with contextlib.suppress(OSError):
                os.unlink(path)
    finally:
        os.close(fd)


"""colbert's progress lines, through `logging`.

Every module logs to `logging.getLogger(__name__)`, below the `colbert` logger. Upstream printed
`[Dec 02, 13:50:00] #> ...` lines to stdout; so that `python index.py` still shows them, importing
`colbert` gives the `colbert` logger one default handler that writes them to stdout in that look,
and sets the logger to INFO if nobody has set its level.

A user's own configuration wins:

* a handler the user put on the `colbert` logger before importing colbert: no default handler;
* a console handler of the user's (e.g. `logging.basicConfig()`) that the record reaches: the
  default handler stands aside, so the line is shown once, in the user's format;
* `logging.getLogger("colbert").setLevel(logging.WARNING)` silences the progress lines;
  `remove_default_handler()` sends them only to the user's handlers.

Warnings and errors go to stderr. Quiet settings (`verbose=0` of Indexer/Searcher, `verbose=False` of a tap, COLBERT_TAP_QUIET=1) do
not drop a line: they log it at DEBUG instead of INFO (see `progress_level`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator

ROOT = "colbert"
FORMAT = "[%(asctime)s] %(message)s"
DATEFMT = "%b %d, %H:%M:%S"  # upstream's print_message


class _StdoutHandler(logging.StreamHandler):
    """Writes progress (INFO and below) to whatever sys.stdout is at the time of the record (a
    redirect, pytest's capture), as upstream's print did, rather than to the stream current at
    import; warnings and errors go to sys.stderr, where Python's last-resort handler put them."""

    def __init__(self) -> None:
        self._to_stderr = False
        super().__init__()
        self.setFormatter(logging.Formatter(FORMAT, DATEFMT))

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr if self._to_stderr else sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass  # chosen per record

    def emit(self, record: logging.LogRecord) -> None:
        self._to_stderr = record.levelno >= logging.WARNING  # Handler.handle holds the lock
        try:
            super().emit(record)
        finally:
            self._to_stderr = False

    def filter(self, record: logging.LogRecord) -> bool:
        return bool(super().filter(record)) and not _user_console_shows(record, self)


def _is_console(stream) -> bool:
    return stream is not None and any(stream is s for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__))


def _user_console_shows(record: logging.LogRecord, ours: logging.Handler) -> bool:
    """Whether a console handler other than ours will also emit `record` (walks the logger
    hierarchy as Logger.callHandlers does)."""
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None:
        for h in logger.handlers:
            if h is not ours and isinstance(h, logging.StreamHandler) and not isinstance(h, _StdoutHandler) \
                    and record.levelno >= h.level and _is_console(getattr(h, "stream", None)):
                return True
        logger = logger.parent if logger.propagate else None
    return False


def install_default_handler() -> None:
    """Called once when `colbert` is imported; a second call (a reload) adds nothing."""
    root = logging.getLogger(ROOT)
    if root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    if not root.handlers:
        root.addHandler(_StdoutHandler())


def remove_default_handler() -> None:
    root = logging.getLogger(ROOT)
    for h in [h for h in root.handlers if isinstance(h, _StdoutHandler)]:
        root.removeHandler(h)


@contextlib.contextmanager
def command_logging(level: int, fmt: str = "%(levelname)s %(name)s: %(message)s") -> Iterator[None]:
    """A command's logging (basicConfig-like, and colbert's own level), undone when it returns, so that an
    in-process caller (a test, a notebook) keeps its progress lines and handlers afterwards."""
    root, ours = logging.getLogger(), logging.getLogger(ROOT)
    saved_level, saved_handlers, saved_ours = root.level, list(root.handlers), ours.level
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(fmt))
        root.addHandler(handler)
    root.setLevel(level)
    ours.setLevel(level)
    try:
        yield
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        ours.setLevel(saved_ours)


def progress_level(show: bool) -> int:
    """The level of a progress line: INFO (shown by default) when `show`, else DEBUG."""
    return logging.INFO if show else logging.DEBUG


install_default_handler()

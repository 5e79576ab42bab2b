"""Errors raised by the built-in taps. All derive from TapError so a script can catch them as one."""

from __future__ import annotations


class TapError(RuntimeError):
    pass


class TapConfigError(TapError, ValueError):
    """A bad COLBERT_TAP* setting or tap argument (ValueError too: it is bad input)."""


class TapLoadError(TapError):
    """A stored artifact could not be read: missing folder, corrupt file."""


class TapUnsafeError(TapLoadError):
    """A stored artifact would need arbitrary code execution to load (refused)."""


class TapMismatchError(TapError):
    """A stored artifact does not fit the stage it would replace."""


class TapWriteError(TapError):
    """The save folder or an artifact in it could not be written."""

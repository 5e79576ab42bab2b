"""`Run()`: upstream's process-wide stack of RunConfigs (the one global our public API must keep)."""

from __future__ import annotations

import contextlib
import logging
import os

from colbert.infra.config import RunConfig

log = logging.getLogger(__name__)

# Upstream sets this on import; tokenizers otherwise warns after a fork.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")


class Run:
    _instance = None

    def __new__(cls):
        if cls._instance is None:
            inst = super().__new__(cls)
            inst.stack = []
            base = RunConfig()
            base.assign_defaults()
            inst.stack.append(base)
            cls._instance = inst
        return cls._instance

    @property
    def config(self) -> RunConfig:
        return self.stack[-1]

    def __getattr__(self, name):
        if name == "stack":
            raise AttributeError(name)
        if hasattr(self.config, name):
            return getattr(self.config, name)
        raise AttributeError(f"'Run' object has no attribute {name!r}")

    def __append(self, runconfig: RunConfig):
        self.stack.append(runconfig)

    def __pop(self):
        self.stack.pop()

    @contextlib.contextmanager
    def context(self, runconfig: RunConfig, inherit_config: bool = True):
        if inherit_config:
            runconfig = RunConfig.from_existing(self.config, runconfig)
        self.__append(runconfig)
        try:
            yield
        finally:
            self.__pop()

    def print(self, *args):
        """Upstream's `Run().print`: one progress line, prefixed with this process's rank."""
        log.info(" ".join(map(str, (f"[{self.config.rank}]", *args))))

    def print_main(self, *args):
        if self.config.rank == 0:
            self.print(*args)

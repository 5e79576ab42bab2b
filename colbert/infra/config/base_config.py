"""Construction, merging and JSON export of configs, with upstream's "assigned field" semantics.

A field counts as assigned when the caller passed anything but the DefaultVal marker (an explicit
None included). `from_existing` merges only assigned fields, later sources winning; that is how a
checkpoint's artifact.metadata ends up as the defaults of an indexing run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import ujson

from colbert.infra.config.settings import DefaultVal

# Ours only: exported when it differs from the value that reproduces upstream.
_OWN_FIELDS_DEFAULTS = {"kmeans_backend": (None, "faiss"), "encode_mode": (None, "parity")}


@dataclasses.dataclass
class BaseConfig:
    def __post_init__(self):
        self.assigned = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, DefaultVal) or value is None:
                setattr(self, f.name, f.default.val if isinstance(f.default, DefaultVal) else None)
            if not isinstance(value, DefaultVal):
                self.assigned[f.name] = True

    def assign_defaults(self):
        for f in dataclasses.fields(self):
            setattr(self, f.name, f.default.val)
            self.assigned[f.name] = True

    def configure(self, ignore_unrecognized: bool = True, **kw_args) -> set:
        ignored = set()
        for key, value in kw_args.items():
            self.set(key, value, ignore_unrecognized) or ignored.add(key)
        return ignored

    def set(self, key: str, value: Any, ignore_unrecognized: bool = False) -> bool | None:
        if hasattr(self, key) and key in self.field_names():
            setattr(self, key, value)
            self.assigned[key] = True
            return True
        if not ignore_unrecognized:
            raise ValueError(f"unrecognized config key {key!r} for {type(self).__name__}")
        return None

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_existing(cls, *sources):
        kw_args = {}
        names = set(cls.field_names())
        for source in sources:
            if source is None:
                continue
            for key in source.assigned:
                if key in names:
                    kw_args[key] = getattr(source, key)
        return cls(**kw_args)

    @classmethod
    def from_path(cls, name: str):
        from colbert.infra.validation import ConfigError

        try:
            with open(name, encoding="utf-8") as f:
                args = ujson.load(f)
        except (ValueError, UnicodeDecodeError) as e:  # ujson's JSONDecodeError is a ValueError
            raise ConfigError(f"{name} is not valid JSON: {e}") from None
        if isinstance(args, dict) and "config" in args:
            args = args["config"]
        if not isinstance(args, dict):
            raise ConfigError(f"{name}: expected a JSON object of config fields, got {type(args).__name__}")
        obj = cls()
        obj.configure(**args)
        return obj

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | None):
        if checkpoint_path is None:
            return None
        from colbert.modeling.checkpoint_files import find_artifact_metadata

        metadata = find_artifact_metadata(checkpoint_path)
        if metadata is None:
            return None
        obj = cls.from_path(metadata)
        obj.set("checkpoint", checkpoint_path)
        return obj

    @classmethod
    def load_from_index(cls, index_path: str):
        from colbert.indexing.index_files import METADATA, PLAN

        try:
            return cls.from_path(os.path.join(index_path, METADATA))
        except Exception:
            return cls.from_path(os.path.join(index_path, PLAN))

    def export(self) -> dict:
        d = dataclasses.asdict(self)
        for key, (unset, upstream_value) in _OWN_FIELDS_DEFAULTS.items():
            if key in d and d[key] in (unset, upstream_value):
                del d[key]
        for k, v in d.items():
            d[k] = _export_value(getattr(self, k) if hasattr(getattr(self, k), "provenance") else v)
        return d

    def help(self):
        logging.getLogger(__name__).info(ujson.dumps(self.export(), indent=4))

    def save(self, path: str, overwrite: bool = False):
        from colbert.utils.io import atomic_write_text

        if not overwrite and os.path.exists(path):
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        atomic_write_text(path, ujson.dumps({"config": self.export()}, indent=4) + "\n")


def _export_value(v: Any) -> Any:
    if hasattr(v, "provenance"):
        return v.provenance()
    if isinstance(v, list) and len(v) > 100:
        return [f"list with {len(v)} elements starting with...", v[:3]]
    if isinstance(v, dict) and len(v) > 100:
        return [f"dict with {len(v)} keys starting with...", list(v.keys())[:3]]
    return v

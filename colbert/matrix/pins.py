"""The tested pin sets per torch version (pins.json beside this file): one source for the matrix
command, the parity tests and the docs.

A pin set is what goes into a fresh Python 3.11 environment beside `torch==VERSION` so that both this
fork and colbert-ai 0.2.22 run there: numpy < 2 and transformers 4.38.2 serve every torch from 1.13.1
on, so across a matrix only torch changes.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache

PINS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pins.json")


@lru_cache(maxsize=1)
def _load() -> dict:
    with open(PINS_FILE, encoding="utf-8") as f:
        return json.load(f)


def tested_torch_versions() -> list[str]:
    """The torch versions whose pin set is recorded, oldest first."""
    return sorted(_load()["torch"], key=version_key)


def version_key(v: str) -> tuple:
    base = v.split("+")[0]
    return tuple(int(p) if p.isdigit() else 0 for p in base.split("."))


def pin_set(torch_version: str) -> dict[str, str]:
    """package -> exact version for an environment with torch==torch_version (torch itself included).

    A version without its own entry gets the common pins (the nearest tested set); the matrix says so.
    """
    data = _load()
    pins = dict(data["common"])
    pins.update(data["torch"].get(torch_version, {}))
    pins["torch"] = torch_version
    return pins


def is_tested(torch_version: str) -> bool:
    return torch_version in _load()["torch"]


def no_deps_packages() -> frozenset[str]:
    """Packages installed in a second step with --no-deps (their declared dependencies must not resolve)."""
    return frozenset(_load().get("no_deps", []))


def upstream_pins() -> dict[str, str]:
    """What colbert-ai 0.2.22 needs on top of a pin set (installed --no-deps into its own folder)."""
    return dict(_load()["upstream"])


def requirement_lines(pins: dict[str, str]) -> list[str]:
    return [f"{name}=={version}" for name, version in pins.items()]

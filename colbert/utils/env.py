"""The one parser of boolean COLBERT_* environment flags, and the meaning of those outside the tap.

The COLBERT_TAP* variables are listed in colbert/tap/env.py (ENV_VARS, recorded in each manifest);
OTHER_ENV_VARS below lists the rest. docs/tap.md carries both tables, and tests/test_tap_docs.py
checks that every COLBERT_* name in colbert/ is in one of them.
"""

from __future__ import annotations

import os
from typing import Mapping

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})

# name -> one-line meaning (docs/tap.md "Other environment variables" is generated from it)
OTHER_ENV_VARS: dict[str, str] = {
    "COLBERT_ENCODE_ONCE": "`0`: encode every passage twice (sample, then chunks) instead of reusing the sample's "
                           "encodings; the index is identical either way (default `1`).",
    "COLBERT_ENCODE_MODE": "`parity` (default): upstream's padded encode batches; `exact`: each passage encoded at "
                           "its own length, the index independent of index_bsize, collection order and ranks "
                           "(`ColBERTConfig(encode_mode=...)` wins).",
    "COLBERT_KMEANS": "k-means backend when `ColBERTConfig(kmeans_backend=...)` is unset: `faiss` (default), "
                      "`fastkmeans` or `torch`.",
    "COLBERT_EXTENSIONS": "`off`: pure-torch search kernels; `require`: raise instead of falling back when the C++/"
                          "CUDA extensions cannot load. At build time (setup.py), `off` skips compiling them.",
    "COLBERT_EXTENSIONS_CACHE": "folder for JIT-built extensions (default `$XDG_CACHE_HOME/colbert-tap/extensions/`, "
                                "else `~/.cache/colbert-tap/extensions/`).",
    "COLBERT_EXTENSIONS_VERBOSE": "`1`: show the compiler output of a JIT extension build.",
    "COLBERT_EXTENSIONS_CPU": "build time only: `off` skips the ahead-of-time CPU module.",
    "COLBERT_EXTENSIONS_CUDA": "build time only: `off` skips the ahead-of-time CUDA module.",
}


def env_flag(name: str, default: bool = False, env: Mapping[str, str] | None = None,
             error: type[Exception] = ValueError) -> bool:
    """A boolean flag: 1/true/yes/on or 0/false/no/off (any case); unset or blank: `default`.

    Anything else raises `error` naming the variable, so a typo is not read as "off".

    >>> env_flag("COLBERT_TAP_CAST", env={"COLBERT_TAP_CAST": "Yes"})
    True
    >>> env_flag("COLBERT_ENCODE_ONCE", default=True, env={})
    True
    """
    env = os.environ if env is None else env
    raw = env.get(name)
    value = "" if raw is None else raw.strip().lower()
    if not value:
        return default
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise error(f"{name}={raw!r}: expected 1/0 (or true/false, yes/no, on/off)")

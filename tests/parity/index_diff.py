"""Compares two index folders file by file: every .pt with torch.equal (tuples element by element),
doclens/chunk metadata JSON for equality, plan.json/metadata.json equal except paths and timestamps.
Run as a script: prints one line per difference, exit 1 if any."""

from __future__ import annotations

import json
import os
import sys

import torch

# Fields that legitimately differ between two runs: paths and timestamps.
VOLATILE_CONFIG_KEYS = {"root", "name", "index_path", "checkpoint", "collection", "experiment", "index_root"}


def _tensors_equal(a, b) -> bool:
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_tensors_equal(x, y) for x, y in zip(a, b))
    if torch.is_tensor(a) and torch.is_tensor(b):
        return a.dtype == b.dtype and a.shape == b.shape and a.device == b.device and torch.equal(a, b)
    return a == b


def _strip_config(d: dict) -> dict:
    d = dict(d)
    if "config" in d:
        d["config"] = {k: v for k, v in d["config"].items() if k not in VOLATILE_CONFIG_KEYS}
    return d


def diff_indexes(a: str, b: str, ignore_config_keys: set[str] = frozenset()) -> list[str]:
    problems = []
    files_a, files_b = set(os.listdir(a)), set(os.listdir(b))
    for name in sorted(files_a ^ files_b):
        problems.append(f"{name}: only in {'A' if name in files_a else 'B'}")
    for name in sorted(files_a & files_b):
        pa, pb = os.path.join(a, name), os.path.join(b, name)
        if os.path.isdir(pa):
            continue
        if name.endswith(".pt"):
            ta = torch.load(pa, map_location="cpu", weights_only=True)
            tb = torch.load(pb, map_location="cpu", weights_only=True)
            if not _tensors_equal(ta, tb):
                problems.append(f"{name}: tensors differ")
        elif name in ("plan.json", "metadata.json"):
            ja, jb = (_strip_config(json.load(open(p))) for p in (pa, pb))
            for key in ignore_config_keys:
                ja.get("config", {}).pop(key, None)
                jb.get("config", {}).pop(key, None)
            if ja != jb:
                keys = sorted(k for k in set(ja) | set(jb) if ja.get(k) != jb.get(k))
                detail = keys
                if "config" in keys:
                    ca, cb = ja["config"], jb["config"]
                    detail = [f"config.{k}: {ca.get(k)!r} != {cb.get(k)!r}" for k in sorted(set(ca) | set(cb))
                              if ca.get(k) != cb.get(k)] + [k for k in keys if k != "config"]
                problems.append(f"{name}: differs in {detail}")
        elif name.endswith(".json"):
            if json.load(open(pa)) != json.load(open(pb)):
                problems.append(f"{name}: JSON differs")
            with open(pa, "rb") as fa, open(pb, "rb") as fb:
                if fa.read() != fb.read():
                    problems.append(f"{name}: bytes differ (JSON equal)")
    return problems


if __name__ == "__main__":
    found = diff_indexes(sys.argv[1], sys.argv[2])
    for p in found:
        print(p)
    print(f"{len(found)} difference(s)")
    sys.exit(1 if found else 0)

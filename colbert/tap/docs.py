"""Markdown generated from the stage registry, so docs/tap.md cannot drift from the code.

    python -m colbert.tap.docs            # print the stage table
    python -m colbert.tap.docs --env      # print the env-flag table
    python -m colbert.tap.docs --other-env   # print the table of the other COLBERT_* variables
    python -m colbert.tap.docs --values   # print the value-facts table
    python -m colbert.tap.docs --check docs/tap.md   # exit 1 if the file's tables are stale
"""

from __future__ import annotations

import argparse
import sys

from colbert.tap.stages import STAGES, filename_pattern


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def stage_table() -> str:
    rows = ["| # | stage | file (one rank) | phase | scope | kind, dtype and shape | produced in | feeds |",
            "|---|---|---|---|---|---|---|---|"]
    for i, s in enumerate(STAGES, 1):
        kind = s.kind + (f" {s.dtype}" if s.dtype else "")
        feeds = ", ".join(f"`{c}`" for c in s.consumers) or "(index files / capture only)"
        note = " (capture only, never swapped)" if s.capture_only else ""
        rows.append(f"| {i} | `{s.name}` | `{filename_pattern(s.name)}` | {s.phase} | {s.scope} | "
                    f"{_cell(kind)}: {_cell(s.shape)}{note} | `{s.producer}` | {feeds} |")
    return "\n".join(rows) + "\n"


def value_facts(s) -> str:
    """The value facts of one stage in words (what a swapped-in value must also satisfy)."""
    parts = []
    if s.low is not None and s.high is not None:
        parts.append(f"in [{s.low}, {s.high}]")
    elif s.low is not None:
        parts.append(f">= {s.low}")
    elif s.high is not None:
        parts.append(f"<= {s.high}")
    if s.power_of_two:
        parts.append("a power of two")
    if s.total is not None:
        parts.append(f"sums to {s.total}")
    if s.order is not None:
        parts.append(s.order)
    return ", ".join(parts)


def value_table() -> str:
    rows = ["| stage | values must be (besides finite, for floating-point numbers) |", "|---|---|"]
    rows += [f"| `{s.name}` | {_cell(value_facts(s))} |" for s in STAGES if value_facts(s) and not s.capture_only]
    return "\n".join(rows) + "\n"


def _var_table(variables: dict[str, str]) -> str:
    rows = ["| variable | meaning |", "|---|---|"]
    rows += [f"| `{k}` | {_cell(v)} |" for k, v in variables.items()]
    return "\n".join(rows) + "\n"


def env_table() -> str:
    from colbert.tap.env import ENV_VARS

    return _var_table(ENV_VARS)


def other_env_table() -> str:
    """The COLBERT_* variables outside the tap (colbert/utils/env.py OTHER_ENV_VARS)."""
    from colbert.utils.env import OTHER_ENV_VARS

    return _var_table(OTHER_ENV_VARS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m colbert.tap.docs")
    ap.add_argument("--env", action="store_true", help="print the env-flag table instead")
    ap.add_argument("--values", action="store_true", help="print the value-facts table instead")
    ap.add_argument("--other-env", action="store_true", help="print the table of the other COLBERT_* variables")
    ap.add_argument("--check", metavar="MD", help="fail if MD does not contain the current tables")
    a = ap.parse_args(argv)
    if a.check:
        with open(a.check) as f:
            text = f.read()
        stale = [n for n, t in (("stage table", stage_table()), ("env table", env_table()),
                                ("other env table", other_env_table()), ("value table", value_table()))
                 if t not in text]
        if stale:
            sys.stderr.write(f"{a.check}: stale {', '.join(stale)}; regenerate with python -m colbert.tap.docs\n")
            return 1
        return 0
    sys.stdout.write(env_table() if a.env else other_env_table() if a.other_env else value_table() if a.values
                     else stage_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

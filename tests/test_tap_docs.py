"""docs/tap.md must carry the tables generated from the code (stage registry, env flags)."""

from __future__ import annotations

import os
import re

from colbert.tap import STAGE_NAMES
from colbert.tap.docs import env_table, main, stage_table
from colbert.tap.env import ENV_VARS

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)
DOC = os.path.join(ROOT, "docs", "tap.md")


def test_doc_has_current_tables():
    with open(DOC) as f:
        text = f.read()
    assert stage_table() in text, "docs/tap.md stage table is stale: regenerate with python -m colbert.tap.docs"
    assert env_table() in text, "docs/tap.md env table is stale: regenerate with python -m colbert.tap.docs --env"
    assert main(["--check", DOC]) == 0


def test_stage_table_lists_every_stage_in_order():
    rows = [line for line in stage_table().splitlines()[2:]]
    assert [re.search(r"`([^`]+)`", r).group(1) for r in rows] == list(STAGE_NAMES)


def test_every_env_flag_read_is_documented():
    tap_dir = os.path.join(ROOT, "colbert", "tap")
    used = set()
    for name in os.listdir(tap_dir):
        if name.endswith(".py"):
            with open(os.path.join(tap_dir, name)) as f:
                used |= set(re.findall(r"\bCOLBERT_TAP[A-Z_]*\b", f.read()))
    assert used <= set(ENV_VARS), used - set(ENV_VARS)
    with open(DOC) as f:
        text = f.read()
    assert all(f"`{v}`" in text for v in ENV_VARS)


def test_check_detects_stale(tmp_path, capsys):
    stale = tmp_path / "tap.md"
    stale.write_text("# nothing here\n")
    assert main(["--check", str(stale)]) == 1
    assert "stale" in capsys.readouterr().err

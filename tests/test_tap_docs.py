"""docs/tap.md must carry the tables generated from the code (stage registry, env flags)."""

from __future__ import annotations

import os
import re

from colbert.tap import STAGE_NAMES
import pytest

from colbert.tap.docs import env_table, main, other_env_table, stage_table
from colbert.tap.env import ENV_VARS
from colbert.utils.env import OTHER_ENV_VARS, env_flag

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)
DOC = os.path.join(ROOT, "docs", "tap.md")


def test_doc_has_current_tables():
    with open(DOC) as f:
        text = f.read()
    assert stage_table() in text, "docs/tap.md stage table is stale: regenerate with python -m colbert.tap.docs"
    assert env_table() in text, "docs/tap.md env table is stale: regenerate with python -m colbert.tap.docs --env"
    assert other_env_table() in text, "docs/tap.md other-env table is stale: python -m colbert.tap.docs --other-env"
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


def _colbert_variables_in_code() -> set[str]:
    """Every COLBERT_* name written in colbert/ (reads and mentions alike: a name that is only
    mentioned must be documented too), plus the ones setup.py reads at build time."""
    names: set[str] = set()
    for folder, _, files in os.walk(os.path.join(ROOT, "colbert")):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name)) as f:
                    names |= set(re.findall(r"\bCOLBERT_[A-Z0-9_]*[A-Z0-9]\b", f.read()))
    with open(os.path.join(ROOT, "setup.py")) as f:
        names |= set(re.findall(r"(?:_off|environ\.get|getenv)\(\s*[\"'](COLBERT_[A-Z0-9_]+)[\"']", f.read()))
    return names


def test_every_colbert_variable_in_the_code_is_documented():
    used = _colbert_variables_in_code()
    assert {"COLBERT_TAP", "COLBERT_ENCODE_ONCE", "COLBERT_EXTENSIONS_CUDA"} <= used  # the scan finds them
    assert used <= set(ENV_VARS) | set(OTHER_ENV_VARS), sorted(used - set(ENV_VARS) - set(OTHER_ENV_VARS))
    # the tap's variables are the ones a manifest records (env_settings); the others never are
    assert not {v for v in OTHER_ENV_VARS if v.startswith("COLBERT_TAP")}
    with open(DOC) as f:
        text = f.read()
    assert all(f"| `{v}` |" in text for v in (*ENV_VARS, *OTHER_ENV_VARS))


@pytest.mark.parametrize("raw, default, want", [("1", False, True), (" Yes ", False, True), ("ON", False, True),
                                                ("0", True, False), ("off", True, False), ("", True, True),
                                                ("  ", False, False), (None, True, True), (None, False, False)])
def test_env_flag_values(raw, default, want):
    env = {} if raw is None else {"COLBERT_X": raw}
    assert env_flag("COLBERT_X", default=default, env=env) is want


def test_env_flag_refuses_a_typo():
    with pytest.raises(ValueError, match="COLBERT_X='maybe': expected 1/0"):
        env_flag("COLBERT_X", env={"COLBERT_X": "maybe"})

    class Mine(Exception):
        pass

    with pytest.raises(Mine):
        env_flag("COLBERT_X", default=True, env={"COLBERT_X": "2"}, error=Mine)


def test_check_detects_stale(tmp_path, capsys):
    stale = tmp_path / "tap.md"
    stale.write_text("# nothing here\n")
    assert main(["--check", str(stale)]) == 1
    assert "stale" in capsys.readouterr().err


def test_public_classes_document_an_example():
    from colbert import Checkpoint, Indexer, Searcher
    from colbert.tap import ArtifactTap

    for cls in (Indexer, Searcher, Checkpoint, ArtifactTap):
        doc = cls.__doc__ or ""
        assert "Examples\n    --------" in doc and cls.__name__ in doc.split("Examples", 1)[1], cls.__name__


def test_runnable_docstring_examples_pass():
    """The examples that need no model (ArtifactTap, env_flag, encode-mode batching) run as doctests."""
    import doctest

    import colbert.indexing.collection_encoder
    import colbert.indexing.encode_mode
    import colbert.tap.core
    import colbert.utils.env

    for module in (colbert.tap.core, colbert.utils.env, colbert.indexing.encode_mode,
                   colbert.indexing.collection_encoder):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, (module.__name__, result)

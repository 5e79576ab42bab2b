"""Library code logs through `logging` (colbert/utils/logs.py); the tap relies on ArtifactTap's methods."""

from __future__ import annotations

import ast
import contextlib
import logging
import os
import re
import sys

import pytest

from colbert.tap import ArtifactTap, SaveTap, tap, tap_wants, use_tap
from colbert.tap.composite import FilterTap
from colbert.tap.session import tap_session
from colbert.utils import logs

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)
LIBRARY = ["colbert/indexing", "colbert/search", "colbert/modeling", "colbert/tap", "colbert/infra",
           "colbert/indexer.py", "colbert/searcher.py"]
UPSTREAM_LINE = re.compile(r"^\[[A-Z][a-z]{2} \d{2}, \d{2}:\d{2}:\d{2}\] ")


@contextlib.contextmanager
def user_root_handler(level=logging.NOTSET):
    """A console handler of the user's on the root logger (as logging.basicConfig() adds one).
    Made inside the test: capsys's sys.stderr differs between fixture setup and the test call."""
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("USER %(name)s: %(message)s"))
    h.setLevel(level)
    logging.getLogger().addHandler(h)
    try:
        yield h
    finally:
        logging.getLogger().removeHandler(h)


def _library_files():
    for entry in LIBRARY:
        path = os.path.join(ROOT, entry)
        if path.endswith(".py"):
            yield path
            continue
        for folder, _, files in os.walk(path):
            yield from (os.path.join(folder, f) for f in files if f.endswith(".py") and not f.endswith("cli.py"))


def test_no_print_in_library_code():
    calls = []
    for path in _library_files():
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        calls += [f"{os.path.relpath(path, ROOT)}:{n.lineno}" for n in ast.walk(tree)
                  if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]
    assert calls == []


def test_default_handler_prints_upstreams_look_on_stdout(capsys):
    logging.getLogger("colbert.indexing.collection_indexer").info("#> Encoding 3 sampled passages (of 9).")
    out = capsys.readouterr().out
    assert UPSTREAM_LINE.match(out) and out.endswith("] #> Encoding 3 sampled passages (of 9).\n"), out


def test_default_handler_is_installed_once():
    logs.install_default_handler()
    logs.install_default_handler()
    root = logging.getLogger(logs.ROOT)
    assert sum(isinstance(h, logs._StdoutHandler) for h in root.handlers) == 1
    assert root.getEffectiveLevel() == logging.INFO


def test_a_users_console_handler_shows_the_line_once(capsys):
    with user_root_handler():
        logging.getLogger("colbert.tap.save").info("[colbert-tap] saving artifacts to /x")
    cap = capsys.readouterr()
    assert cap.out == ""  # the default handler stood aside
    assert cap.err == "USER colbert.tap.save: [colbert-tap] saving artifacts to /x\n"


def test_a_users_quieter_console_handler_does_not_hide_the_line(capsys):
    with user_root_handler(logging.WARNING):  # it will not show INFO, so ours does
        logging.getLogger("colbert.tap.save").info("#> shown")
    cap = capsys.readouterr()
    assert cap.out.endswith("] #> shown\n") and cap.err == ""


def test_the_user_can_silence_colbert(capsys):
    root = logging.getLogger(logs.ROOT)
    root.setLevel(logging.WARNING)
    try:
        logging.getLogger("colbert.searcher").info("#> Loading index /x")
    finally:
        root.setLevel(logging.INFO)
    assert capsys.readouterr().out == ""


def test_quiet_taps_log_at_debug(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setenv("COLBERT_TAP", f"save:{tmp_path / 'S'}")
    monkeypatch.setenv("COLBERT_TAP_QUIET", "1")
    with tap_session(config_dict={}, index_path=str(tmp_path / "index")):
        tap("num_passages", 3, rank=0, nranks=1)
    assert "[colbert-tap]" not in capsys.readouterr().out
    caplog.set_level(logging.DEBUG, logger="colbert.tap")  # now asked for, the DEBUG lines are there
    with tap_session(config_dict={}, index_path=str(tmp_path / "index")):
        tap("num_passages", 3, rank=0, nranks=1)
    capsys.readouterr()
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "colbert.tap.save"]
    assert (logging.DEBUG, f"[colbert-tap] saving artifacts to {tmp_path / 'S'}") in lines
    assert all(level == logging.DEBUG for level, _ in lines)

    caplog.clear()
    caplog.set_level(logging.INFO, logger="colbert.tap")
    monkeypatch.delenv("COLBERT_TAP_QUIET")
    with tap_session(config_dict={}, index_path=str(tmp_path / "index")):
        tap("num_passages", 3, rank=0, nranks=1)
    assert f"saving artifacts to {tmp_path / 'S'}" in capsys.readouterr().out
    assert {r.levelno for r in caplog.records if r.name == "colbert.tap.save"} == {logging.INFO}


def test_use_tap_takes_artifact_taps_only():
    class NotATap:
        def on_artifact(self, stage, value, ctx):
            return value

    with pytest.raises(TypeError, match="subclass colbert.tap.ArtifactTap"):
        with use_tap(NotATap()):
            pass


def test_a_subclass_with_only_wants_gets_the_default_wants_at(tmp_path):
    class OnlySample(ArtifactTap):
        def wants(self, stage):
            return stage == "sample"

    for t in (OnlySample(), FilterTap(OnlySample(), stages="sample,embs")):
        with use_tap(t):
            assert tap_wants("sample", site="chunk0", group=0) and not tap_wants("embs", site="chunk0", group=0)
            assert tap_wants("sample") and not tap_wants("codes")


def test_a_failing_run_reaches_fail_of_a_filtered_tap(tmp_path):
    seen = []

    class Watch(ArtifactTap):
        def fail(self, exc):
            seen.append(type(exc).__name__)

    with pytest.raises(KeyError):
        with use_tap(FilterTap(Watch())), tap_session(config_dict={}, index_path=str(tmp_path / "i")):
            raise KeyError("x")
    assert seen == ["KeyError"]


def test_save_tap_default_is_loud(tmp_path, capsys):
    with use_tap(SaveTap(str(tmp_path / "S"))), tap_session(config_dict={}, index_path=str(tmp_path / "i")):
        tap("num_passages", 1, rank=0, nranks=1)
    out = capsys.readouterr().out
    assert [bool(UPSTREAM_LINE.match(line)) for line in out.splitlines()] == [True, True], out


def test_warnings_go_to_stderr(capsys):
    logging.getLogger("colbert.matrix.render").warning("matrix.png skipped")
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.endswith("] matrix.png skipped\n")


def test_command_logging_is_undone_when_the_command_returns():
    """A CLI command run in-process (colbert-tap matrix quiets colbert) leaves the caller's logging as it was."""
    import logging

    from colbert.utils.logs import command_logging

    root, ours = logging.getLogger(), logging.getLogger("colbert")
    before = (root.level, list(root.handlers), ours.level)
    with command_logging(logging.WARNING):
        assert ours.getEffectiveLevel() == logging.WARNING and root.handlers
    assert (root.level, list(root.handlers), ours.level) == before

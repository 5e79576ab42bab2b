"""benchmarks/index_worker.py times stages exclusively: a timed call nested in another counts for its
own stage only, so the stage times of a run never count the same second twice."""

import importlib.util
import os
import time

import pytest

WORKER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "index_worker.py")


@pytest.fixture()
def worker(monkeypatch):
    monkeypatch.delenv("COLBERT_BENCH_STAGES_DIR", raising=False)  # import without installing wrappers
    spec = importlib.util.spec_from_file_location("index_worker_under_test", WORKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_nested_timed_call_is_exclusive(worker):
    inner = worker._timed("writes", lambda: time.sleep(0.05))

    def outer_body():
        time.sleep(0.05)
        inner()
        inner()

    outer = worker._timed("IVF", outer_body)
    outer()
    assert 0.09 <= worker._totals["writes"] < 0.2
    assert 0.04 <= worker._totals["IVF"] < 0.09  # the 0.1 s inside the two writes is not IVF's


def test_wrapping_twice_is_a_no_op(worker):
    class Owner:
        @staticmethod
        def f():
            time.sleep(0.02)

    worker._wrap(Owner, "f", "encode")
    first = Owner.f
    worker._wrap(Owner, "f", "encode")
    assert Owner.f is first
    Owner.f()
    assert 0.015 <= worker._totals["encode"] < 0.1  # counted once, not once per wrapper


def test_dump_writes_totals(worker, tmp_path, monkeypatch):
    monkeypatch.setenv("COLBERT_BENCH_STAGES_DIR", str(tmp_path))
    worker._timed("compression", lambda: time.sleep(0.01))()
    worker._dump()
    (f,) = tmp_path.iterdir()
    assert f.name == f"{os.getpid()}.json"
    import json

    assert json.loads(f.read_text())["compression"] >= 0.01

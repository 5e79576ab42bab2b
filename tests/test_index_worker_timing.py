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


def test_dump_writes_totals_and_rss_by_stage(worker, tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("COLBERT_BENCH_STAGES_DIR", str(tmp_path))
    worker._timed("compression", lambda: time.sleep(0.01))()
    worker._rss_peak["compression"] = 123.0
    worker._dump()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{os.getpid()}.json", f"{os.getpid()}.rss.json"]
    assert json.loads((tmp_path / f"{os.getpid()}.json").read_text())["compression"] >= 0.01
    assert json.loads((tmp_path / f"{os.getpid()}.rss.json").read_text()) == {"compression": 123.0}


def test_rss_is_attributed_to_the_stage_that_runs(worker):
    import threading

    stop = threading.Event()
    sampler = threading.Thread(target=worker._sample_rss, kwargs={"interval": 0.005, "stop": stop}, daemon=True)
    sampler.start()
    try:
        time.sleep(0.05)
        worker._timed("k-means", lambda: time.sleep(0.1))()
        time.sleep(0.05)
    finally:
        stop.set()
        sampler.join(1)
    assert set(worker._rss_peak) == {"other", "k-means"}
    assert all(mb > 1 for mb in worker._rss_peak.values())  # a Python process holds more than 1 MB
    assert worker._active == []  # the stage was left

"""benchmarks/search_latency.py --busy: the neighbour load really burns CPU and is really stopped."""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import search_latency  # noqa: E402


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_busy_spinners_use_cpu_and_stop():
    procs = search_latency.start_busy(1)
    try:
        assert len(procs) == 1
        time.sleep(0.3)  # interpreter start
        before = _cpu_ticks(procs[0].pid)
        time.sleep(0.5)
        assert _cpu_ticks(procs[0].pid) > before, "the spinner used no CPU"
    finally:
        search_latency.stop_busy(procs)
    assert all(p.poll() is not None for p in procs)


def test_no_busy_means_no_processes():
    assert search_latency.start_busy(0) == []

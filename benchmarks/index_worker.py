"""One timed indexing run for benchmarks/index_throughput.py: tests/parity/index_script.py, with the
known functions of the side under test (colbert-ai 0.2.22 or colbert-tap) wrapped to time the
stages encode, k-means, residual statistics, compression, IVF and writes from outside.

Times are exclusive (a timed call inside another timed call, e.g. torch.save inside IVF building,
counts for its own stage only) and per thread, so colbert-ai's saver thread, which compresses and
writes chunk i while the main thread encodes chunk i+1, is counted in full: on that side the stages
may sum to more than the wall time. colbert-ai indexes in a spawned child process; spawn re-imports
this file there (as __mp_main__), so the wrappers are installed in every process of the run and each
process writes its totals to COLBERT_BENCH_STAGES_DIR/<pid>.json at exit.

Usage: index_worker.py CHECKPOINT COLLECTION_TSV N ROOT CONFIG_NAME  (the arguments of index_script.py)
Prints index_script's JSON line plus "stages" (seconds) and "peak_rss_mb" (the largest resident set
of this process or any of its waited-for children). Each process also samples its resident set every
0.2 s and writes, to <pid>.rss.json, the largest it saw while each stage ran (the stage entered last
and not yet left, on any thread; "other" outside them): where a peak is, not only how high."""

import atexit
import functools
import json
import os
import resource
import sys
import threading
import time

STAGES = ("encode", "k-means", "residual statistics", "compression", "IVF", "writes")
_totals = {s: 0.0 for s in STAGES}
_local = threading.local()
_lock = threading.Lock()
_active = []  # stages entered and not yet left, on any thread, in the order entered
_rss_peak = {}  # stage (or "other") -> largest resident set (MB) sampled while it was the last entered


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _sample_rss(interval: float = 0.2, stop: threading.Event | None = None) -> None:
    while stop is None or not stop.is_set():
        with _lock:
            label = _active[-1] if _active else "other"
        try:
            mb = _rss_mb()
        except OSError:  # no /proc (not Linux): no per-stage figures
            return
        with _lock:
            _rss_peak[label] = max(_rss_peak.get(label, 0.0), mb)
        time.sleep(interval)


def _timed(stage, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        stack = getattr(_local, "stack", None)
        if stack is None:
            stack = _local.stack = []
        stack.append(0.0)  # time spent in timed calls nested in this one
        with _lock:
            _active.append(stage)
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - t0
            nested = stack.pop()
            with _lock:
                _totals[stage] += elapsed - nested
                del _active[len(_active) - 1 - _active[::-1].index(stage)]
            if stack:
                stack[-1] += elapsed
    wrapper.__bench_wrapped__ = True
    return wrapper


def _wrap(owner, name, stage):
    fn = getattr(owner, name)
    if not getattr(fn, "__bench_wrapped__", False):
        setattr(owner, name, _timed(stage, fn))


def _install():
    import torch
    import ujson

    _wrap(torch, "save", "writes")
    _wrap(ujson, "dump", "writes")
    import colbert.indexing.collection_encoder as enc
    import colbert.indexing.collection_indexer as ci

    _wrap(enc.CollectionEncoder, "encode_passages", "encode")
    if hasattr(ci, "index_collection"):  # colbert-tap: module-level stage functions
        from colbert.indexing.codecs.residual_codec import ResidualCodec

        for name, stage in (("train_kmeans", "k-means"), ("compute_residual_stats", "residual statistics"),
                            ("build_ivf", "IVF"), ("optimize_ivf", "IVF"), ("read_all_doclens", "IVF"),
                            ("safe_load", "IVF")):
            _wrap(ci, name, stage)
        # exact mode's encoder, where present, lives in its own module
        try:
            import colbert.indexing.exact_encoding as ex
        except ImportError:
            ex = None
        for attr in dir(ex) if ex else ():
            obj = getattr(ex, attr)
            if isinstance(obj, type) and hasattr(obj, "encode_passages") and obj is not enc.CollectionEncoder:
                _wrap(obj, "encode_passages", "encode")
    else:  # colbert-ai 0.2.22: methods of CollectionIndexer
        from colbert.indexing.codecs.residual import ResidualCodec

        for name, stage in (("_train_kmeans", "k-means"), ("_compute_avg_residual", "residual statistics"),
                            ("_build_ivf", "IVF")):
            _wrap(ci.CollectionIndexer, name, stage)
    _wrap(ResidualCodec, "compress", "compression")
    threading.Thread(target=_sample_rss, daemon=True, name="bench-rss").start()


def _dump():
    out_dir = os.environ.get("COLBERT_BENCH_STAGES_DIR")
    if out_dir and any(_totals.values()):
        with open(os.path.join(out_dir, f"{os.getpid()}.json"), "w") as f:
            json.dump(_totals, f)
        with _lock, open(os.path.join(out_dir, f"{os.getpid()}.rss.json"), "w") as f:
            json.dump(_rss_peak, f)


if os.environ.get("COLBERT_BENCH_STAGES_DIR"):
    _install()
    atexit.register(_dump)


def main():
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "parity"))
    import io
    from contextlib import redirect_stdout

    import index_script

    buf = io.StringIO()
    with redirect_stdout(buf):
        index_script.main()
    sys.stdout.write(buf.getvalue())
    out = json.loads(buf.getvalue().strip().splitlines()[-1])
    _dump()
    _totals.update({s: 0.0 for s in STAGES})  # written once; atexit must not add this process again
    rss_kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                 resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    out["peak_rss_mb"] = rss_kb / 1024
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""`colbert-tap matrix`: the same indexing job under several torch versions, compared pair by pair."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time


class _Ordered(argparse.Action):
    """--torch and --env append to one list, so runs keep the order of the command line."""

    def __call__(self, parser, namespace, values, option_string=None):
        order = list(getattr(namespace, "order", None) or [])
        if option_string == "--torch":
            order += [("torch", v.strip()) for v in values.split(",") if v.strip()]
        else:
            order.append(("env", values))
        namespace.order = order


def add_matrix_parser(sub) -> None:
    from colbert.cli import _add_config_flags

    p = sub.add_parser("matrix", help="index the same collection under several torch versions and compare them",
                       description="Builds one environment per torch version (or uses --env interpreters), runs "
                                   "the same indexing job in each with COLBERT_TAP=save, and compares each "
                                   "consecutive pair stage by stage. Writes DIR/matrix.md, matrix.json, matrix.png. "
                                   "Exit status 0: every run succeeded; 1: some failed; 2: bad usage.")
    p.add_argument("--torch", action=_Ordered, metavar="V[,V...]", help="torch versions (repeatable)")
    p.add_argument("--env", action=_Ordered, metavar="NAME=PYTHON",
                   help="an existing interpreter with the fork installed (repeatable, mixable with --torch)")
    p.add_argument("--fork-path", nargs="?", const="", metavar="DIR",
                   help="also run --env interpreters with PYTHONPATH=DIR (default: this fork's source root), for "
                        "environments that have the dependencies but not the fork")
    p.add_argument("--out", help="output folder (envs/, runs/, matrix.md, ...); required unless --emit-dockerfiles")
    p.add_argument("--collection", help="pid<TAB>passage TSV (default: the shipped Vaswani collection)")
    p.add_argument("--checkpoint", help="ColBERT checkpoint (default: make the MiniLM one in DIR/checkpoint)")
    p.add_argument("--limit", type=int, default=1000, help="index the first N passages (0 = all; default 1000)")
    p.add_argument("--script", help="run this indexing script unchanged in each environment instead of the "
                                    "built-in job (cwd runs/NAME, COLBERT_TAP=save:runs/NAME/tap, CKPT=--checkpoint)")
    p.add_argument("--with-upstream", action="store_true",
                   help="also run the job with colbert-ai 0.2.22 in each environment and report parity")
    p.add_argument("--search", metavar="QUERIES.tsv", help="also search: each version, its own and the first index")
    p.add_argument("--qrels", help="relevance judgements for --search (Recall@k, MRR@k)")
    p.add_argument("-k", type=int, default=10, help="top k searched and compared (default 10)")
    p.add_argument("--emit-dockerfiles", metavar="DIR", help="write one Dockerfile per --torch version and exit")
    p.add_argument("--prune", action="store_true", help="delete each environment once its runs are done")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (default 1)")
    p.add_argument("--index-url", help="passed to the installer")
    p.add_argument("--extra-index-url", action="append", default=[], help="passed to the installer (repeatable)")
    p.add_argument("--find-links", action="append", default=[], help="passed to the installer (repeatable)")
    p.add_argument("--installer", choices=["auto", "uv", "pip"], default="auto",
                   help="auto: uv when it is on PATH, else python -m venv + pip")
    p.add_argument("--python", default=sys.executable, help="base interpreter of the built environments")
    p.add_argument("--timeout", type=float, help="seconds allowed to each job or search (default: no limit)")
    p.add_argument("-v", "--verbose", action="store_true", help="log each step")
    _add_config_flags(p)
    p.set_defaults(func=cmd_matrix, order=None)


def _spec(args):
    from colbert.cli import _config_kwargs
    from colbert.matrix import envs, runner

    targets = runner.parse_targets([], [], order=args.order or [])
    if not args.out and not args.emit_dockerfiles:
        raise ValueError("--out DIR is required")
    if args.script and args.collection:
        raise ValueError("--script runs your own script, which chooses its collection: drop --collection")
    if args.script and not os.path.isfile(args.script):
        raise FileNotFoundError(f"--script {args.script}: no such file")
    if args.nranks != 1:
        raise ValueError("the matrix runs single-rank jobs: --nranks must be 1")
    if args.jobs < 1:
        raise ValueError("--jobs must be >= 1")
    if args.limit is not None and args.limit < 0:
        raise ValueError("--limit must be >= 0")
    collection = os.path.abspath(args.collection) if args.collection else runner.DEFAULT_COLLECTION
    if not os.path.isfile(collection):
        raise FileNotFoundError(f"--collection {collection}: no such file")
    for flag, path in (("--search", args.search), ("--qrels", args.qrels), ("--checkpoint", args.checkpoint)):
        if path and not os.path.exists(path):
            raise FileNotFoundError(f"{flag} {path}: no such file or folder")
    if args.qrels and not args.search:
        raise ValueError("--qrels needs --search QUERIES.tsv")
    if args.k < 1:
        raise ValueError("-k must be >= 1")
    installer = envs.Installer(base_python=args.python, use_uv={"auto": None, "uv": True, "pip": False}[args.installer],
                               index_url=args.index_url, extra_index_urls=args.extra_index_url,
                               find_links=args.find_links)
    job = runner.Job(collection=collection, limit=args.limit or None,
                     checkpoint=os.path.abspath(args.checkpoint) if args.checkpoint else None,
                     config=_config_kwargs(args), script=os.path.abspath(args.script) if args.script else None)
    search = runner.SearchSpec(os.path.abspath(args.search), os.path.abspath(args.qrels) if args.qrels else None,
                               args.k) if args.search else None
    fork_path = None
    if args.fork_path is not None:
        fork_path = os.path.abspath(args.fork_path) if args.fork_path else runner.FORK_ROOT
        if not os.path.isfile(os.path.join(fork_path, "colbert", "__init__.py")):
            raise FileNotFoundError(f"--fork-path {fork_path}: no colbert/__init__.py there")
    return runner.Spec(out=args.out or "", targets=targets, job=job, with_upstream=args.with_upstream, search=search,
                       prune=args.prune, jobs=args.jobs, installer=installer, timeout=args.timeout,
                       fork_path=fork_path)


def _docker_run_args(args) -> list[str]:
    from colbert.cli import _config_kwargs

    out = ["--limit", str(args.limit)]
    for k, v in _config_kwargs(args).items():
        out += ["--" + k.replace("_", "-"), str(v)]
    if args.with_upstream:
        out.append("--with-upstream")
    return out


class _Display:
    """One line per run: its phase and elapsed time (rich on a terminal, plain lines otherwise)."""

    def __init__(self, names: list[str]):
        self.lock = threading.Lock()
        self.start = {n: time.time() for n in names}
        self.live = sys.stderr.isatty()
        self.progress = None
        if self.live:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                     console=Console(stderr=True))
            self.tasks = {n: self.progress.add_task(f"{n}: waiting", total=None) for n in names}

    def __enter__(self):
        if self.progress:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress:
            self.progress.stop()

    def __call__(self, name: str, phase: str) -> None:
        with self.lock:
            if self.progress and name in self.tasks:
                self.progress.update(self.tasks[name], description=f"{name}: {phase}")
                if phase in ("done", "failed"):
                    self.progress.update(self.tasks[name], total=1, completed=1)
            elif not self.live:
                print(f"[matrix] {name}: {phase} ({time.time() - self.start.get(name, time.time()):.0f} s)",
                      file=sys.stderr, flush=True)


def cmd_matrix(args) -> int:
    from colbert.utils.logs import command_logging

    # colbert's own default (INFO) is for index.py's progress; the matrix shows warnings unless --verbose
    with command_logging(logging.INFO if args.verbose else logging.WARNING):
        return _cmd_matrix(args)


def _cmd_matrix(args) -> int:
    from colbert.matrix.docker import emit_dockerfiles
    from colbert.matrix.runner import Matrix

    spec = _spec(args)
    argv = getattr(args, "argv", None)
    spec.command = "colbert-tap " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.emit_dockerfiles:
        written = emit_dockerfiles(args.emit_dockerfiles, spec.targets, _docker_run_args(args),
                                   spec.installer.index_args())
        if not written:
            raise ValueError("--emit-dockerfiles writes one Dockerfile per --torch version; none given")
        for path in written:
            print(path)
        return 0
    with _Display([t.name for t in spec.targets]) as display:
        data = Matrix(spec, progress=display).run()
    out = os.path.abspath(args.out)
    for r in data["runs"]:
        status = "ok" if r["ok"] else f"FAILED: {r['error']} (log: {r['log']})"
        up = r.get("upstream") or {}
        if up.get("error"):
            status += f"; upstream FAILED: {up['error']}"
        elif r.get("parity_with_upstream") is not None:
            status += f"; parity with upstream: {'yes' if r['parity_with_upstream'] else 'no'}"
        print(f"{r['name']:20s} torch {r.get('torch') or '?':12s} {status}")
    for p in data["pairs"]:
        if p.get("error"):
            print(f"{p['a']} vs {p['b']}: {p['error']}")
        else:
            print(f"{p['a']} vs {p['b']}: default {p['default'][0]}/{p['default'][1]}, bnb {p['bnb'][0]}/"
                  f"{p['bnb'][1]}, first divergence {p['first_divergence'] or 'none'}")
    print(f"Wrote {os.path.join(out, 'matrix.md')}, matrix.json" +
          (", matrix.png" if os.path.exists(os.path.join(out, "matrix.png")) else ""))
    failed = [r for r in data["runs"] if not r["ok"] or (r.get("upstream") or {}).get("error")]
    failed_pairs = [p for p in data["pairs"] if p.get("error") and not p["error"].startswith("not compared")]
    return 1 if failed or failed_pairs else 0

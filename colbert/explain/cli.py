"""`colbert-tap explain A B`: the command line around colbert.explain.chain.explain."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from colbert.explain.render import FORMATS, print_table, render

DESCRIPTION = ("Explain why two indexing runs diverge, at the stage level: replay B with A's value of the first "
               "stage that differs (bit for bit) injected, compare again, and inject more until the final index "
               "artifacts match under the profile. Then, when the encoder is where values first move or a root "
               "stage, probe it in both installs: the first module whose own computation differs, the padded "
               "widths and row counts that change its bits, and the first aten op that differs on identical "
               "inputs. Exit code: 0 the chain ends converged, 1 it does not, 2 error (including: B cannot be "
               "replayed).")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from colbert.compare.tolerances import PROFILES

    parser.add_argument("a", metavar="A", help="reference run: a tap folder, or an index folder holding tap/")
    parser.add_argument("b", metavar="B", help="run to explain (replayed with A's artifacts injected)")
    parser.add_argument("--profile", "-p", default="default", choices=list(PROFILES),
                        help="tolerance profile that decides 'match' and convergence (default: default); origins "
                             "are always located with exact equality")
    parser.add_argument("--work", metavar="DIR",
                        help="folder for every replay's tap, index and log (default: explain-<A>-<B> next to B); "
                             "complete steps found there are reused")
    parser.add_argument("--format", "-f", choices=FORMATS, default="table", help="output format (default: table)")
    parser.add_argument("--output", "-o", metavar="FILE", help="write the output to FILE instead of stdout")
    parser.add_argument("--max-steps", type=int, default=8, metavar="N", help="at most N replays (default: 8)")
    parser.add_argument("--timeout", type=float, metavar="S", help="seconds before one replay is stopped")
    parser.add_argument("--no-modules", dest="modules", action="store_false", default=True,
                        help="stop at the stage level (no encoder probe and no function/op probe of other root stages)")
    parser.add_argument("--module-batches", type=int, default=None, metavar="N",
                        help="encode at most N of A's batches per side when probing the encoder (default: 8)")
    parser.add_argument("--plot", metavar="PNG", help="draw the per-module drift (natural run and fed A's inputs)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=True,
                        help="no progress display on stderr")
    return parser


class _Display:
    """Progress on stderr: a spinner per replay on a terminal, plain lines otherwise."""

    def __init__(self, enabled: bool):
        from rich.console import Console

        self.enabled = enabled
        self.console = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)
        self.progress = None
        self.task = None
        if enabled and self.console.is_terminal:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                     console=self.console, transient=True)
            self.progress.start()

    def __call__(self, event: str, info: dict) -> None:
        if not self.enabled:
            return
        if event == "compare":
            self._status(f"comparing {info['what']}")
        elif event == "replay":
            self._status(f"step {info['step']}: replaying B with A's {', '.join(info['injected'])} "
                         f"(an indexing run; {info['folder']})")
            if self.progress is None:
                self.console.print(f"[explain] step {info['step']}: replaying B with A's "
                                   f"{', '.join(info['injected'])} into {info['folder']}")
        elif event == "reused":
            self.console.print(f"[explain] step {info['step']}: reusing the complete replay in {info['folder']}")
        elif event == "step":
            left = ", ".join(info["differing"]) or "nothing"
            took = "reused" if info["reused"] else f"{info['seconds']:.1f} s"
            self.console.print(f"[explain] step {info['step']} ({took}): still differing: {left}")
        elif event == "modules":
            self._status(info["what"])
            if self.progress is None:
                self.console.print(f"[explain] {info['what']}")
        elif event == "failed":
            self.console.print(f"[explain] step {info['step']} failed: {info['error']}")

    def _status(self, text: str) -> None:
        if self.progress is None:
            return
        if self.task is None:
            self.task = self.progress.add_task(text, total=None)
        else:
            self.progress.update(self.task, description=text)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def run(args: argparse.Namespace) -> int:
    from colbert.explain.chain import ExplainError, explain

    if args.max_steps < 1:
        print("colbert-tap explain: error: --max-steps must be at least 1", file=sys.stderr)
        return 2
    if args.module_batches is not None and args.module_batches < 1:
        print(f"colbert-tap explain: error: --module-batches must be at least 1; got {args.module_batches}",
              file=sys.stderr)
        return 2
    display = _Display(args.progress)
    try:
        ex = explain(args.a, args.b, profile=args.profile, work=args.work, max_steps=args.max_steps,
                     timeout=args.timeout, progress=display, modules=args.modules,
                     module_batches=args.module_batches)
    except (ExplainError, OSError, ValueError) as e:
        display.close()
        print(f"colbert-tap explain: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # exit 1 means "not converged"; a crash must never read as that
        display.close()
        print(f"colbert-tap explain: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    display.close()
    if args.output:
        Path(args.output).write_text(render(ex, args.format), encoding="utf-8")
    elif args.format == "table":
        print_table(ex)
    else:
        sys.stdout.write(render(ex, args.format))
    if args.plot:
        from colbert.explain.render import plot_modules

        try:
            Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
            plot_modules(ex, args.plot)
        except (ValueError, OSError) as e:
            print(f"colbert-tap explain: error: --plot {args.plot}: {e}", file=sys.stderr)
            return 2
    if ex.error:
        print(f"colbert-tap explain: error: {ex.error}", file=sys.stderr)
    return ex.exit_code


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="colbert-tap explain", description=DESCRIPTION))
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return run(args)

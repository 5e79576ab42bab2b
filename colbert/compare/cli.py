"""`colbert-tap compare A B`: the command line around compare_runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from colbert.compare.numeric import DEFAULT_CHUNK_ELEMS
from colbert.compare.render import FORMATS, print_table, render
from colbert.compare.tolerances import PROFILE_NAMES, resolve_profiles

DESCRIPTION = ("Compare two runs (tap folders, index folders, or index folders holding tap/) stage by stage, "
               "in pipeline order. Exit code: 0 all match, 1 something differs, 2 error.")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("a", metavar="A", help="first run: a tap folder, an index folder, or an index folder with tap/")
    parser.add_argument("b", metavar="B", help="second run, same kinds as A")
    parser.add_argument("--profile", "-p", action="append", metavar="NAME",
                        help=f"tolerance profile for floats ({', '.join(PROFILE_NAMES)}); repeat or comma-separate "
                             "for extra columns; the first decides the verdict and exit code "
                             "(default: default,bnb)")
    parser.add_argument("--atol", type=float, help="absolute tolerance of the 'custom' profile")
    parser.add_argument("--rtol", type=float, help="relative tolerance of the 'custom' profile")
    parser.add_argument("--format", "-f", choices=FORMATS, default="table", help="output format (default: table)")
    parser.add_argument("--detail", action="store_true",
                        help="markdown: one row per element of a tuple or list artifact (default: one row per "
                             "artifact, saying how many of its elements match)")
    parser.add_argument("--output", "-o", metavar="FILE", help="write the output to FILE instead of stdout")
    parser.add_argument("--layers", action="store_true",
                        help="add a per-layer table of mean/max |a-b| over encoder_layers captures")
    parser.add_argument("--plot", metavar="PNG", help="draw the per-layer table to PNG (implies --layers)")
    parser.add_argument("--stages", metavar="NAMES",
                        help="only these stages (comma-separated names or globs from the stage registry)")
    parser.add_argument("--nbits", type=int, help="bits per residual dimension, when neither run records it")
    parser.add_argument("--chunk-elems", type=int, default=DEFAULT_CHUNK_ELEMS,
                        help=f"elements compared at a time; bounds memory (default: {DEFAULT_CHUNK_ELEMS})")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="always show a progress bar (default: on a terminal, for comparisons over 256 MiB)")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")
    return parser


def build_parser(prog: str = "colbert-tap compare") -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(prog=prog, description=DESCRIPTION))


def run(args: argparse.Namespace) -> int:
    """Entry point for a parser built elsewhere (the colbert-tap subcommand) with add_arguments."""
    from colbert.compare.engine import Options, compare_runs
    from colbert.compare.layers import plot_layers

    try:
        profiles = resolve_profiles(args.profile, args.atol, args.rtol)
        if args.chunk_elems <= 0:
            raise ValueError("--chunk-elems must be positive")
        opts = Options(profiles=profiles, chunk_elems=args.chunk_elems, nbits=args.nbits, stages=args.stages,
                       layers=bool(args.layers or args.plot), progress=args.progress)
        report = compare_runs(args.a, args.b, opts)
    except (OSError, ValueError, KeyError) as e:
        print(f"colbert-tap compare: error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    except Exception as e:  # exit 1 means "runs differ"; a crash must never read as that
        print(f"colbert-tap compare: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    if args.plot:
        if report.layers:
            try:
                Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
                plot_layers(report.layers, args.plot, f"{Path(args.a).name} vs {Path(args.b).name}")
            except Exception as e:  # the comparison itself is still worth printing
                print(f"colbert-tap compare: cannot draw {args.plot}: {e}", file=sys.stderr)
                return 2
        else:
            print("colbert-tap compare: no encoder layer captures to plot", file=sys.stderr)
    if args.output:
        from colbert.utils.io import atomic_write_text

        try:
            # parents are created, as `search --out` does
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(args.output, render(report, args.format, args.detail))
        except OSError as e:
            print(f"colbert-tap compare: error: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
            return 2
    elif args.format == "table":
        print_table(report)
    else:
        sys.stdout.write(render(report, args.format, args.detail))
    return report.exit_code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors, 0 on --help
        return int(e.code or 0)
    return run(args)

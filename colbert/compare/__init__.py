"""`colbert-tap compare`: stage-by-stage comparison of two indexing runs. See docs/compare.md."""

from colbert.compare.cli import add_arguments, main, run
from colbert.compare.engine import Options, compare_runs
from colbert.compare.report import Report, Row
from colbert.compare.tolerances import PROFILES, resolve_profiles

__all__ = ["add_arguments", "main", "run", "Options", "compare_runs", "Report", "Row", "PROFILES", "resolve_profiles"]

"""ArtifactTap: save or inject every intermediate indexing artifact (see docs/tap.md).

Indexing code calls `tap(stage, value, **ctx)`; with no tap bound that is one ContextVar read.
"""

from colbert.tap.core import ArtifactTap, active_tap, tap, tap_wants, use_tap
from colbert.tap.stages import STAGES, STAGE_NAMES, Stage, artifact_filename, get_stage
from colbert.tap.errors import (TapConfigError, TapError, TapLoadError, TapMismatchError, TapUnsafeError,
                                TapWriteError)
from colbert.tap.save import SaveTap
from colbert.tap.swap import SwapTap
from colbert.tap.composite import CompositeTap, FilterTap
from colbert.tap.env import tap_from_env
from colbert.tap.session import tap_session
from colbert.tap.manifest import load_manifest
from colbert.tap.validate import load_artifact

__all__ = ["ArtifactTap", "active_tap", "tap", "tap_wants", "use_tap", "STAGES", "STAGE_NAMES", "Stage",
           "artifact_filename", "get_stage", "TapError", "TapConfigError", "TapLoadError", "TapMismatchError",
           "TapUnsafeError", "TapWriteError", "SaveTap", "SwapTap", "CompositeTap", "FilterTap", "tap_from_env",
           "tap_session", "load_manifest", "load_artifact"]

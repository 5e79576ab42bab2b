"""Building the tap from COLBERT_TAP* environment variables (no code edits in the user's script)."""

from __future__ import annotations

import importlib
import os
import re
from typing import Any, Mapping

from colbert.tap.composite import CompositeTap, FilterTap
from colbert.tap.core import ArtifactTap
from colbert.tap.errors import TapConfigError, TapLoadError
from colbert.tap.save import SaveTap
from colbert.tap.select import LAYER_STAGE
from colbert.tap.stages import STAGE_NAMES, match_stages
from colbert.tap.swap import SwapTap
from colbert.utils.env import env_flag

# name -> one-line meaning; docs/tap.md lists these and a test keeps the two in step
ENV_VARS: dict[str, str] = {
    "COLBERT_TAP": "unset or `off`: no tap (nothing written, nothing changed). `save`, `save:/dir`, `swap:/dir`, "
                   "`package.module:ClassName`, or several of these joined by commas (`swap:/a,save:/b`).",
    "COLBERT_TAP_DIR": "folder for a bare `save` (default `<index_path>/tap/`).",
    "COLBERT_TAP_ONLY": "comma-separated stage names or globs (`embs*`): save/swap only these.",
    "COLBERT_TAP_SKIP": "comma-separated stage names or globs: never save/swap these (applied after ONLY).",
    "COLBERT_TAP_LAYERS": "N >= 0: also capture `encoder_layers` (each transformer layer's hidden state and the "
                          "projection output) for the first N encode batches of each encode call site.",
    "COLBERT_TAP_CAST": "`1`: a swapped tensor whose dtype differs from the live one is cast to the live dtype "
                        "instead of refused.",
    "COLBERT_TAP_QUIET": "`1`: the [colbert-tap] progress lines are logged at DEBUG instead of INFO, so the "
                         "default handler does not show them (errors are still raised).",
    "COLBERT_TAP_SWAP_ONLY": "comma-separated stage names or globs: swap only these, while `save:` still records "
                             "every stage ONLY/SKIP admit (\"inject one stage, save everything\").",
    "COLBERT_TAP_INDEX_PATH": "write the index to this folder instead of the one the script names (what "
                              "`colbert-tap replay` uses, so a replay never touches the original index).",
}

_USER_TAP = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env_flag(name, env=env, error=TapConfigError)


def tap_actions(env: Mapping[str, str] | None = None) -> list[tuple[str, str | None]]:
    """The parsed COLBERT_TAP actions; [] when it is unset or `off`."""
    env = os.environ if env is None else env
    return parse_actions(env.get("COLBERT_TAP", ""))


def default_save_folder(env: Mapping[str, str] | None = None) -> str | None:
    """The folder of a bare `save` from COLBERT_TAP_DIR; None: `<index_path>/tap/`."""
    env = os.environ if env is None else env
    return env.get("COLBERT_TAP_DIR", "").strip() or None


def parse_actions(spec: str) -> list[tuple[str, str | None]]:
    """`swap:/a,save:/b` -> [("swap", "/a"), ("save", "/b")]; ("user", "pkg.mod:Cls") for user taps."""
    out: list[tuple[str, str | None]] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item or item.lower() == "off":
            continue
        low = item.lower()
        if low == "save":
            out.append(("save", None))
        elif low.startswith("save:"):
            out.append(("save", _need_path(item[5:], "save")))
        elif low == "swap" or low.startswith("swap:"):
            out.append(("swap", _need_path(item[5:], "swap")))
        elif _USER_TAP.match(item):
            out.append(("user", item))
        else:
            raise TapConfigError(f"COLBERT_TAP: unrecognised action {item!r}; expected off, save, save:/dir, "
                                 "swap:/dir or package.module:ClassName, comma-separated (e.g. swap:/a,save:/b)")
    return out


def _need_path(path: str, action: str) -> str:
    path = path.strip()
    if not path:
        raise TapConfigError(f"COLBERT_TAP: {action} needs a folder, e.g. COLBERT_TAP={action}:/path/to/folder")
    return path


def stage_selection(env: Mapping[str, str]) -> tuple[set[str] | None, int]:
    """(stages, layers) from COLBERT_TAP_ONLY / _SKIP / _LAYERS. None: all stages.

    Asking for layers is explicit, so COLBERT_TAP_LAYERS=N captures encoder_layers even when
    COLBERT_TAP_ONLY does not name it; COLBERT_TAP_SKIP=encoder_layers still turns it off.
    """
    only, skip = env.get("COLBERT_TAP_ONLY", "").strip(), env.get("COLBERT_TAP_SKIP", "").strip()
    try:
        chosen = match_stages(only) if only else set(STAGE_NAMES)
        skipped = match_stages(skip) if skip else set()
    except ValueError as e:
        var = "COLBERT_TAP_ONLY" if only and _bad(only) else "COLBERT_TAP_SKIP"
        raise TapConfigError(f"{var}: {e}") from None
    layers_raw = env.get("COLBERT_TAP_LAYERS", "").strip()
    try:
        layers = int(layers_raw) if layers_raw else 0
    except ValueError:
        msg = f"COLBERT_TAP_LAYERS={layers_raw!r}: expected a whole number of batches (e.g. 2)"
        raise TapConfigError(msg) from None
    if layers < 0:
        raise TapConfigError(f"COLBERT_TAP_LAYERS={layers}: expected 0 or more")
    if layers > 0:
        chosen.add(LAYER_STAGE)
    chosen -= skipped
    if not only and not skip:
        return None, layers
    return chosen, layers


def _swap_selection(env: Mapping[str, str], stages: set[str] | None) -> set[str] | None:
    """What a swap may inject: COLBERT_TAP_SWAP_ONLY within what ONLY/SKIP admit."""
    raw = env.get("COLBERT_TAP_SWAP_ONLY", "").strip()
    if not raw:
        return stages
    try:
        chosen = match_stages(raw)
    except ValueError as e:
        raise TapConfigError(f"COLBERT_TAP_SWAP_ONLY: {e}") from None
    return chosen if stages is None else chosen & stages


def _bad(patterns: str) -> bool:
    try:
        match_stages(patterns)
        return False
    except ValueError:
        return True


def load_user_tap(spec: str) -> ArtifactTap:
    obj = _user_tap_object(spec)
    attr = spec.partition(":")[2]
    if isinstance(obj, type):
        try:
            obj = obj()
        except Exception as e:
            raise TapConfigError(f"COLBERT_TAP={spec}: {attr}() failed: {type(e).__name__}: {e} "
                                 "(a tap class named in COLBERT_TAP must construct without arguments)") from None
    if isinstance(obj, ArtifactTap):
        return obj
    if callable(getattr(obj, "on_artifact", None)):
        return _DuckTap(obj)
    raise TapConfigError(f"COLBERT_TAP={spec}: {attr} is not an ArtifactTap (subclass colbert.tap.ArtifactTap "
                         "and override on_artifact(stage, value, ctx))")


class _DuckTap(ArtifactTap):
    """Lets an object with only on_artifact (and optionally begin/wants/end) act as a tap."""

    def __init__(self, obj: Any):
        self.obj = obj

    def __repr__(self) -> str:
        return repr(self.obj)

    def begin(self, info: dict[str, Any]) -> None:
        getattr(self.obj, "begin", lambda i: None)(info)

    def wants(self, stage: str) -> bool:
        f = getattr(self.obj, "wants", None)
        return True if f is None else bool(f(stage))

    def on_artifact(self, stage: str, value: Any, ctx: dict[str, Any]) -> Any:
        return self.obj.on_artifact(stage, value, ctx)

    def end(self) -> None:
        getattr(self.obj, "end", lambda: None)()


def env_settings(env: Mapping[str, str] | None = None) -> dict[str, str]:
    env = os.environ if env is None else env
    return {k: env[k] for k in ENV_VARS if k in env}


def tap_from_env(env: Mapping[str, str] | None = None) -> ArtifactTap | None:
    """The tap COLBERT_TAP* asks for, or None when it is unset/off (then nothing else is read)."""
    env = os.environ if env is None else env
    actions = tap_actions(env)
    if not actions:
        return None
    stages, layers = stage_selection(env)
    verbose = not _flag(env, "COLBERT_TAP_QUIET")
    allow_cast = _flag(env, "COLBERT_TAP_CAST")
    swaps: list[ArtifactTap] = []
    users: list[ArtifactTap] = []
    saves: list[ArtifactTap] = []
    swap_stages = _swap_selection(env, stages)
    for action, arg in actions:
        if action == "swap":
            swaps.append(SwapTap(arg, stages=swap_stages, allow_cast=allow_cast, verbose=verbose))
        elif action == "save":
            folder = arg or default_save_folder(env)
            saves.append(SaveTap(folder, stages=stages, layers=layers, verbose=verbose))
        else:
            users.append(FilterTap(load_user_tap(arg), stages=stages, layers=layers))
    # swaps act first and savers last, whatever the order written, so a save records the value the
    # run actually used
    taps = swaps + users + saves
    return taps[0] if len(taps) == 1 else CompositeTap(*taps)


def check_env(env: Mapping[str, str] | None = None) -> None:
    """Raises TapConfigError for every COLBERT_TAP* setting that tap_from_env or the taps' begin()
    would refuse, without building a tap (no user class is constructed, nothing is written).

    Run it before an index is erased: a typo in `swap:/dir` must not cost the old index.
    """
    from colbert.tap.manifest import MANIFEST
    from colbert.tap.swap import check_swap_folder, stages_present

    env = os.environ if env is None else env
    actions = tap_actions(env)
    if not actions:
        return
    stages, _ = stage_selection(env)
    _flag(env, "COLBERT_TAP_QUIET")
    _flag(env, "COLBERT_TAP_CAST")
    _swap_selection(env, stages)
    for action, arg in actions:
        if action == "swap":
            try:
                folder = check_swap_folder(arg)
            except TapLoadError as e:
                raise TapConfigError(f"COLBERT_TAP=swap:{arg}: {e}") from None
            files = os.listdir(folder)
            # a hand-made folder of <stage>.pt files is valid without a manifest (docs/tap.md)
            if MANIFEST not in files and not any(f.startswith("manifest.rank") for f in files) \
                    and not stages_present(files):
                raise TapConfigError(f"COLBERT_TAP=swap:{arg}: folder {folder} holds neither a manifest.json nor "
                                     "any <stage>*.pt artifact; expected a folder written by COLBERT_TAP=save")
        elif action == "user":
            _user_tap_object(arg)  # importable; constructing it is left to the run
        # save folders are checked (and locked) by colbert.tap.session.index_run_guard


def _user_tap_object(spec: str) -> Any:
    """What `package.module:Name` names (the class itself, not an instance)."""
    mod_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as e:
        raise TapConfigError(f"COLBERT_TAP={spec}: cannot import module {mod_name!r}: {e}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TapConfigError(f"COLBERT_TAP={spec}: module {mod_name!r} has no attribute {attr!r}") from None
    return obj

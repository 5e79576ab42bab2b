"""What `colbert-tap explain` runs inside each install to go below the stage level.

Started as `python -m colbert.explain.probe COMMAND SPEC.json` in the interpreter of run A or run B
(each with its own torch), it encodes A's own tokenized batches with the run's checkpoint and writes
what it saw; the explaining process compares the two sides (colbert/explain/modules.py).

  digests  every module call of every batch, in completion order: name, class, sha256 of each tensor
           input and output. The first call whose output differs while its inputs match is a module
           whose own computation changed (its children, which complete first, all matched).
  detail   (A's side) for one module call: its inputs and output, the per-layer outputs of that batch,
           digests of the module on narrower/wider widths and fewer rows, and every aten op the module
           runs itself (ops of its child modules excluded), with inputs, strides and outputs.
  check    (B's side) reads A's detail, runs the same module, shapes and ops on A's inputs, and writes
           JSON: per-layer max |a-b|, each probed module fed A's inputs, the shapes that differ, the first
           op that differs.
  shapes   one batch re-encoded at other padded widths and row counts: each passage's own tokens
           against the batch as it ran, with a digest per shape for comparing installs.
  stage-record  (A's side) for a stage the encoder does not produce (postnorm_centroids, bucket_cutoffs,
           values, ivf ...): its registry `recompute` function run on A's saved input stages, with every
           aten op it executes (inputs and outputs).
  stage-check   (B's side) the same function on A's inputs, then each of A's ops replayed alone: does the
           function's output differ given identical inputs, and which op first differs.

Runs on every supported torch (1.13.1 on): hooks without kwargs, TorchDispatchMode, weights_only files.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any

import torch
from torch import nn

SWEEP_WIDTH = 12  # widths W-12 .. W+12 around the batch's padded width
_FLOAT_AS_INT = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def tensor_digest(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous()
    if t.dtype.is_floating_point or t.dtype.is_complex:
        size = t.element_size()
        t = t.view(_FLOAT_AS_INT[size]) if size in _FLOAT_AS_INT else t
    h = hashlib.sha256(f"{tuple(t.shape)}|{t.dtype}".encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()[:32]


def tensors_of(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in tensors_of(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors_of(v)]
    if hasattr(value, "to_tuple"):  # transformers ModelOutput
        return tensors_of(value.to_tuple())
    return []


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return tensor_digest(a) == tensor_digest(b)


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float | None:
    if a.shape != b.shape or not (a.dtype.is_floating_point and b.dtype.is_floating_point):
        return None
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def n_unequal(a: torch.Tensor, b: torch.Tensor) -> int | None:
    if a.shape != b.shape:
        return None
    if a.dtype.is_floating_point and a.dtype == b.dtype and a.element_size() in _FLOAT_AS_INT:
        kind = _FLOAT_AS_INT[a.element_size()]
        return int((a.contiguous().view(kind) != b.contiguous().view(kind)).sum())
    return int((a != b).sum())


# -- the encoder ------------------------------------------------------------------------------------
class DocEncoder(nn.Module):
    """ColBERT.doc as a module, so that its own ops (mask, normalize) have a name in the report: ""."""

    def __init__(self, colbert):
        super().__init__()
        self.colbert = colbert

    def forward(self, input_ids, attention_mask):
        return self.colbert.doc(input_ids, attention_mask)


def load_encoder(spec: dict) -> DocEncoder:
    from colbert.infra.config import ColBERTConfig
    from colbert.modeling.colbert import ColBERT

    torch.manual_seed(12345)  # a checkpoint without a projection draws it; both sides draw the same
    config = ColBERTConfig(checkpoint=spec["checkpoint"], **(spec.get("config") or {}))
    return DocEncoder(ColBERT(spec["checkpoint"], config)).eval()


def load_batches(spec: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from colbert.utils.torch_load import safe_load

    out = []
    for path in spec["batch_files"]:
        value = safe_load(path)
        batches = value[0] if isinstance(value, (tuple, list)) and len(value) == 2 else value
        out.extend((ids, mask) for ids, mask in batches)
    return out[: spec.get("max_batches") or None]


def _with_kwargs() -> bool:
    """torch >= 2.0 hooks can see keyword arguments (transformers passes attention masks that way)."""
    import inspect

    return "with_kwargs" in inspect.signature(nn.Module.register_forward_hook).parameters


def add_hook(module: nn.Module, fn):
    """fn(module, args, kwargs, output) as a forward hook; kwargs is {} where torch cannot show them."""
    if _with_kwargs():
        return module.register_forward_hook(fn, with_kwargs=True)
    return module.register_forward_hook(lambda m, args, output: fn(m, args, {}, output))


class CallRecorder:
    """Forward hooks on every module: one record per call, in completion order."""

    def __init__(self, root: nn.Module, keep: set[str] = frozenset()):
        self.calls: list[dict] = []
        self.kept: dict[str, torch.Tensor] = {}
        self.keep = keep
        self._count: dict[str, int] = {}
        self._handles = [add_hook(m, self._hook(name, m)) for name, m in root.named_modules()]

    def _hook(self, name: str, module: nn.Module):
        leaf = not any(True for _ in module.children())

        def hook(mod, inputs, kwargs, output):
            n = self._count.get(name, 0)
            self._count[name] = n + 1
            outs = tensors_of(output)
            self.calls.append({"name": name, "call": n, "cls": type(mod).__name__, "leaf": leaf,
                               "in": [tensor_digest(t) for t in tensors_of(inputs)],
                               "kw": {k: [tensor_digest(t) for t in tensors_of(v)] for k, v in kwargs.items()
                                      if tensors_of(v)} if kwargs else None,
                               "out": [tensor_digest(t) for t in outs],
                               "shapes": [list(t.shape) for t in tensors_of(inputs)]})
            if name in self.keep and outs:
                self.kept[f"{name}#{n}"] = outs[0].detach().clone()
        return hook

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def cmd_digests(spec: dict) -> dict:
    enc = load_encoder(spec)
    batches = load_batches(spec)
    out = []
    with torch.no_grad():
        for ids, mask in batches:
            rec = CallRecorder(enc)
            enc(ids, mask)
            rec.close()
            out.append(rec.calls)
    return {"torch": str(torch.__version__), "threads": torch.get_num_threads(), "batches": out,
            "widths": [int(ids.shape[1]) for ids, _ in batches], "rows": [int(ids.shape[0]) for ids, _ in batches]}


# -- one module, below: its inputs, shapes and ops -----------------------------------------------------
def find_call(enc: DocEncoder, batch, name: str, call: int) -> tuple[tuple, dict, Any]:
    """(positional inputs, keyword inputs, output) of the call-th call of module `name` encoding batch."""
    module = dict(enc.named_modules())[name]
    seen: list = []

    def copy(x):
        return x.detach().clone() if isinstance(x, torch.Tensor) else x

    def hook(mod, inputs, kwargs, output):
        seen.append((tuple(copy(x) for x in inputs), {k: copy(v) for k, v in kwargs.items()}, output))

    h = add_hook(module, hook)
    try:
        with torch.no_grad():
            enc(*batch)
    finally:
        h.remove()
    if len(seen) <= call:
        raise RuntimeError(f"module {name!r} was called {len(seen)} time(s); expected call #{call}")
    return seen[call]


def layer_names(enc: DocEncoder) -> list[str]:
    """The modules the maintainer compares layer by layer: embeddings, each transformer layer, the projection."""
    names = []
    for name, m in enc.named_modules():
        parts = name.split(".")
        if parts[-1] == "embeddings" or parts[-1] == "linear" and len(parts) == 2:
            names.append(name)
        elif len(parts) >= 2 and parts[-2] == "layer" and parts[-1].isdigit():
            names.append(name)
    return names + [""]


PROBED = {"embeddings", "attention", "intermediate", "output", "LayerNorm"}


def probed_names(enc: DocEncoder) -> list[str]:
    """Modules fed A's inputs one by one in B: embeddings; each layer's attention, intermediate and
    output sublayers; every LayerNorm; the projection; ColBERT.doc itself ("")."""
    return [name for name, _ in enc.named_modules()
            if name.split(".")[-1] in PROBED or name == "colbert.linear" or name == ""]


class InputRecorder:
    """Inputs (positional and keyword) and output of every call of the named modules, in completion order."""

    def __init__(self, enc: DocEncoder, names: list[str]):
        self.calls: list[dict] = []
        self._count: dict[str, int] = {}
        modules = dict(enc.named_modules())
        self._handles = [add_hook(modules[n], self._hook(n)) for n in names]

    def _hook(self, name: str):
        def hook(mod, inputs, kwargs, output):
            n = self._count.get(name, 0)
            self._count[name] = n + 1
            self.calls.append({"name": name, "call": n, "cls": type(mod).__name__, "inputs": pack(list(inputs)),
                               "kwargs": pack(dict(kwargs)), "output": pack(tensors_of(output))})
        return hook

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def shape_variants(x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """The input at other padded widths (cut, or extended with its own columns) and with fewer rows."""
    if x.dim() != 3:
        return []
    rows, width = x.shape[0], x.shape[1]
    wide = torch.cat([x, x], dim=1)
    out = [(f"width {w}", wide[:, :w].contiguous()) for w in range(max(1, width - SWEEP_WIDTH), width + SWEEP_WIDTH + 1)]
    r = 1
    while r < rows:
        out.append((f"rows {r}", x[:r].contiguous()))
        r *= 2
    return out


# aten op arguments, made storable in a weights_only file and rebuilt with their strides
def pack(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return {"__tensor__": v.detach().clone().contiguous(), "stride": list(v.stride())}
    if isinstance(v, (list, tuple)):
        return {"__seq__": [pack(x) for x in v], "tuple": isinstance(v, tuple)}
    if isinstance(v, dict):
        return {"__dict__": {str(k): pack(x) for k, x in v.items()}}
    if isinstance(v, torch.dtype):
        return {"__dtype__": str(v).replace("torch.", "")}
    if isinstance(v, torch.device):
        return {"__device__": str(v)}
    if isinstance(v, torch.memory_format):
        return {"__memory_format__": str(v).replace("torch.", "")}
    if isinstance(v, torch.layout):
        return {"__layout__": str(v).replace("torch.", "")}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return {"__unsupported__": type(v).__name__}


def unpack(v: Any) -> Any:
    if not isinstance(v, dict):
        return v
    if "__tensor__" in v:
        t, stride = v["__tensor__"], v["stride"]
        if t.numel() and 0 in stride:  # a broadcast (expanded) argument: rebuild it as an expand, not a copy
            small = t[tuple(slice(0, 1) if st == 0 else slice(None) for st in stride)].clone()
            return small.expand(t.shape)
        out = torch.empty_strided(t.shape, stride, dtype=t.dtype) if t.numel() else t.clone()
        return out.copy_(t) if t.numel() else out
    if "__seq__" in v:
        items = [unpack(x) for x in v["__seq__"]]
        return tuple(items) if v["tuple"] else items
    if "__dict__" in v:
        return {k: unpack(x) for k, x in v["__dict__"].items()}
    if "__dtype__" in v:
        return getattr(torch, v["__dtype__"])
    if "__device__" in v:
        return torch.device(v["__device__"])
    if "__memory_format__" in v:
        return getattr(torch, v["__memory_format__"])
    if "__layout__" in v:
        return getattr(torch, v["__layout__"])
    raise ValueError(f"an op argument of type {v.get('__unsupported__')} cannot be replayed")


def describe_arg(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        stride = "" if v.is_contiguous() else f" stride {tuple(v.stride())}"
        return f"{str(v.dtype).replace('torch.', '')}{list(v.shape)}{stride}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(describe_arg(x) for x in v) + "]"
    return repr(v)


def trace_own_ops(module: nn.Module, inputs: tuple, kwargs: dict | None = None) -> tuple[list[dict], Any]:
    """Every aten op `module` runs itself on `inputs` (not those of its child modules), with packed args."""
    from torch.utils._python_dispatch import TorchDispatchMode

    depth = [0]
    handles = []
    for child in module.children():
        handles.append(child.register_forward_pre_hook(lambda m, i: depth.__setitem__(0, depth[0] + 1)))
        handles.append(child.register_forward_hook(lambda m, i, o: depth.__setitem__(0, depth[0] - 1)))
    ops: list[dict] = []

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            if depth[0] == 0:
                ops.append({"op": str(func), "args": pack(list(args)), "kwargs": pack(dict(kwargs)),
                            "out": pack(tensors_of(out)), "shapes": describe_arg(list(args))})
            return out

    try:
        with torch.no_grad(), Recorder():
            output = module(*inputs, **(kwargs or {}))
    finally:
        for h in handles:
            h.remove()
    return ops, output


def resolve_op(name: str):
    parts = name.split(".")
    op = torch.ops
    for p in parts:
        op = getattr(op, p)
    return op


def cmd_detail(spec: dict) -> dict:
    enc = load_encoder(spec)
    batch = load_batches(spec)[spec["batch"]]
    name, call = spec["module"], spec["call"]
    inputs, kwargs, output = find_call(enc, batch, name, call)
    module = dict(enc.named_modules())[name]
    keep = set(layer_names(enc))
    rec = CallRecorder(enc, keep=keep)
    fed = InputRecorder(enc, probed_names(enc))
    with torch.no_grad():
        enc(*batch)
    rec.close()
    fed.close()
    variants = []
    tensor_inputs = [x for x in inputs if isinstance(x, torch.Tensor)]
    if len(inputs) == 1 and not kwargs and tensor_inputs and tensor_inputs[0].is_floating_point():
        with torch.no_grad():
            for label, x in shape_variants(tensor_inputs[0]):
                variants.append({"label": label, "shape": list(x.shape),
                                 "digest": [tensor_digest(t) for t in tensors_of(module(x))]})
    try:
        ops, _ = trace_own_ops(module, inputs, kwargs)
        ops_error = None
    except Exception as e:  # an op the dispatch mode cannot record on this torch: say so, go on
        ops, ops_error = [], f"{type(e).__name__}: {e}"
    return {"torch": str(torch.__version__), "module": name, "call": call, "cls": type(module).__name__,
            "inputs": pack(list(inputs)), "kwargs": pack(kwargs), "output": pack(tensors_of(output)), "layers": rec.kept,
            "variants": variants, "ops": ops, "ops_error": ops_error, "injections": fed.calls}


def accepted_kwargs(module: nn.Module, kwargs: dict) -> tuple[dict, list[str]]:
    """A's keyword inputs that B's module accepts; another transformers release may pass others
    (e.g. cache arguments, None here). Returns (kwargs, names dropped)."""
    import inspect

    params = inspect.signature(module.forward).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs, []
    kept = {k: v for k, v in kwargs.items() if k in params}
    return kept, sorted(k for k in kwargs if k not in params)


def cmd_check(spec: dict) -> dict:
    from colbert.utils.torch_load import safe_load

    a = safe_load(spec["detail"])
    enc = load_encoder(spec)
    batch = load_batches(spec)[spec["batch"]]
    module = dict(enc.named_modules())[a["module"]]
    a_out = unpack(a["output"])
    try:
        inputs = tuple(unpack(a["inputs"]))
        kwargs, _ = accepted_kwargs(module, unpack(a["kwargs"]))
        with torch.no_grad():
            own = tensors_of(module(*inputs, **kwargs))
        same_inputs = {"equal": all(bits_equal(x, y) for x, y in zip(own, a_out)) and len(own) == len(a_out),
                       "max_abs": max((max_abs(x, y) or 0.0) for x, y in zip(own, a_out)) if own else None,
                       "n_unequal": sum((n_unequal(x, y) or 0) for x, y in zip(own, a_out)),
                       "numel": sum(t.numel() for t in own), "shape": [list(t.shape) for t in own]}
    except Exception as e:  # an input that cannot be rebuilt here: reported, the other levels go on
        inputs, kwargs = (), {}
        same_inputs = {"equal": None, "error": f"{type(e).__name__}: {e}", "max_abs": None, "n_unequal": None,
                       "numel": None}
    rec = CallRecorder(enc, keep=set(a["layers"] and {k.split("#")[0] for k in a["layers"]}))
    with torch.no_grad():
        enc(*batch)
    rec.close()
    layers = []
    for key, t_a in a["layers"].items():
        t_b = rec.kept.get(key)
        layers.append({"module": key.split("#")[0], "call": int(key.split("#")[1]),
                       "equal": t_b is not None and bits_equal(t_a, t_b),
                       "max_abs": None if t_b is None else max_abs(t_a, t_b),
                       "mean_abs": None if t_b is None or t_a.shape != t_b.shape else float((t_a.double() - t_b.double()).abs().mean()),
                       "n_unequal": None if t_b is None else n_unequal(t_a, t_b), "numel": t_a.numel()})
    variants = []
    x0 = [x for x in inputs if isinstance(x, torch.Tensor)] if same_inputs["equal"] is not None else []
    if a["variants"] and x0:
        mine = {label: x for label, x in shape_variants(x0[0])}
        with torch.no_grad():
            for v in a["variants"]:
                d = [tensor_digest(t) for t in tensors_of(module(mine[v["label"]]))]
                variants.append({"label": v["label"], "shape": v["shape"], "equal": d == v["digest"]})
    injected = []
    modules_b = dict(enc.named_modules())
    for c in a.get("injections") or []:
        entry = {"module": c["name"], "call": c["call"], "cls": c["cls"]}
        try:
            module_b = modules_b[c["name"]]
            kwargs_b, dropped = accepted_kwargs(module_b, unpack(c["kwargs"]))
            if dropped:
                entry["dropped_kwargs"] = dropped
            with torch.no_grad():
                mine = tensors_of(module_b(*unpack(c["inputs"]), **kwargs_b))
            theirs = unpack(c["output"])
            first_b, first_a = (mine[0], theirs[0]) if mine and theirs else (None, None)
            entry.update(equal=len(mine) == len(theirs) and all(bits_equal(x, y) for x, y in zip(mine, theirs)),
                         max_abs=None if first_a is None else max_abs(first_a, first_b),
                         mean_abs=None if first_a is None or first_a.shape != first_b.shape
                         else float((first_a.double() - first_b.double()).abs().mean()),
                         n_unequal=None if first_a is None else n_unequal(first_a, first_b),
                         numel=None if first_a is None else first_a.numel())
        except Exception as e:  # e.g. keyword inputs an old torch's hooks did not see
            entry.update(equal=None, error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        injected.append(entry)
    ops = []
    for i, op in enumerate(a["ops"]):
        entry = {"index": i, "op": op["op"], "inputs": op["shapes"]}
        try:
            out = resolve_op(op["op"])(*unpack(op["args"]), **unpack(op["kwargs"]))
            mine, theirs = tensors_of(out), unpack(op["out"])
            entry.update(equal=len(mine) == len(theirs) and all(bits_equal(x, y) for x, y in zip(mine, theirs)),
                         max_abs=max((max_abs(x, y) or 0.0) for x, y in zip(mine, theirs)) if mine else None,
                         n_unequal=sum((n_unequal(x, y) or 0) for x, y in zip(mine, theirs)),
                         numel=sum(t.numel() for t in mine))
        except Exception as e:
            entry.update(equal=None, error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        ops.append(entry)
    try:
        own_ops, _ = trace_own_ops(module, inputs, kwargs) if same_inputs["equal"] is not None else ([], None)
        own_sequence = [o["op"] for o in own_ops] if same_inputs["equal"] is not None else None
    except Exception:  # B's own sequence is a comparison aid; the replayed ops above are the finding
        own_sequence = None
    return {"torch": str(torch.__version__), "module": a["module"], "call": a["call"], "cls": a["cls"],
            "torch_a": a["torch"], "same_inputs": same_inputs, "layers": layers, "variants": variants, "ops": ops,
            "injected": injected,
            "ops_error": a["ops_error"], "sequence_a": [o["op"] for o in a["ops"]], "sequence_b": own_sequence}


def encoder_variants(ids: torch.Tensor, mask: torch.Tensor, pad_id: int) -> list[tuple[str, int, int, tuple]]:
    """The batch at other padded widths (from its longest passage to W+8; padding added or dropped only)
    and with fewer rows: (label, rows, width, (ids, mask))."""
    rows, width = ids.shape
    longest = int(mask.sum(dim=1).max())
    out = []
    for w in range(longest, width + 9):
        if w <= width:
            v = (ids[:, :w].contiguous(), mask[:, :w].contiguous())
        else:
            extra = w - width
            v = (torch.cat([ids, torch.full((rows, extra), pad_id, dtype=ids.dtype)], dim=1),
                 torch.cat([mask, torch.zeros((rows, extra), dtype=mask.dtype)], dim=1))
        out.append((f"width {w}", rows, w, v))
    r = 1
    while r < rows:
        out.append((f"rows {r}", r, width, (ids[:r].contiguous(), mask[:r].contiguous())))
        r *= 2
    return out


def cmd_shapes(spec: dict) -> dict:
    """The root batch encoded at other shapes: each passage's own tokens against the batch as it ran."""
    enc = load_encoder(spec)
    ids, mask = load_batches(spec)[spec["batch"]]
    lengths = mask.sum(dim=1).tolist()
    with torch.no_grad():
        ref = enc(ids, mask)
    out = []
    for label, rows, width, (v_ids, v_mask) in encoder_variants(ids, mask, enc.colbert.pad_token):
        with torch.no_grad():
            d = enc(v_ids, v_mask)
        mine = torch.cat([d[i, :lengths[i]] for i in range(rows)])
        theirs = torch.cat([ref[i, :lengths[i]] for i in range(rows)])
        out.append({"label": label, "rows": rows, "width": width, "digest": tensor_digest(mine),
                    "max_abs": max_abs(mine, theirs), "n_unequal": n_unequal(mine, theirs), "numel": mine.numel()})
    return {"torch": str(torch.__version__), "batch": spec["batch"], "rows": int(ids.shape[0]),
            "width": int(ids.shape[1]), "variants": out}


# -- stages the encoder does not produce -------------------------------------------------------------
def trace_all_ops(fn, *args) -> tuple[list[dict], Any]:
    """Every aten op `fn(*args)` executes, with packed inputs and outputs."""
    from torch.utils._python_dispatch import TorchDispatchMode

    ops: list[dict] = []

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            ops.append({"op": str(func), "args": pack(list(args)), "kwargs": pack(dict(kwargs)),
                        "out": pack(tensors_of(out)), "shapes": describe_arg(list(args))})
            return out

    with torch.no_grad(), Recorder():
        result = fn(*args)
    return ops, result


def load_stage(tap: str, stage: str) -> Any:
    """The one artifact of a single-valued stage in tap folder `tap`, as its manifest lists it."""
    from colbert.tap.manifest import load_manifest
    from colbert.utils.torch_load import safe_load

    files = sorted(n for n, e in (load_manifest(tap).get("artifacts") or {}).items() if e.get("stage") == stage)
    if len(files) != 1:
        raise ValueError(f"{tap}: expected one saved {stage} artifact, found {len(files)}")
    return safe_load(os.path.join(tap, files[0]))


def recompute_call(spec: dict):
    """(function, its arguments) that recompute spec['stage'] from A's saved inputs (registry facts)."""
    import importlib
    import inspect

    from colbert.tap.stages import get_stage

    st = get_stage(spec["stage"])
    module, name = st.recompute.split(":")
    fn = getattr(importlib.import_module(module), name)
    args = [load_stage(spec["tap_a"], s) for s in st.recompute_from]
    if next(iter(inspect.signature(fn).parameters), None) == "config":
        from colbert.infra.config import ColBERTConfig

        config = ColBERTConfig()
        config.configure(ignore_unrecognized=True, **(spec.get("config") or {}))
        args.insert(0, config)
    return fn, args, st.recompute_element


def _pick(result: Any, element: int | None) -> list[torch.Tensor]:
    return tensors_of(result if element is None else result[element])


def _diff(mine: list[torch.Tensor], theirs: list[torch.Tensor]) -> dict:
    return {"equal": len(mine) == len(theirs) and all(bits_equal(x, y) for x, y in zip(mine, theirs)),
            # None for integer outputs (max_abs is None there): the count of differing elements tells
            "max_abs": max(floats) if (floats := [m for x, y in zip(mine, theirs)
                                                  if (m := max_abs(x, y)) is not None]) else None,
            "n_unequal": sum((n_unequal(x, y) or 0) for x, y in zip(mine, theirs)),
            "numel": sum(t.numel() for t in mine)}


def cmd_stage_record(spec: dict) -> dict:
    fn, args, element = recompute_call(spec)
    ops, result = trace_all_ops(fn, *args)
    return {"torch": str(torch.__version__), "stage": spec["stage"], "function": get_function_name(fn),
            "output": pack(_pick(result, element)), "ops": ops}


def get_function_name(fn) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def cmd_stage_check(spec: dict) -> dict:
    from colbert.utils.torch_load import safe_load

    a = safe_load(spec["record"])
    fn, args, element = recompute_call(spec)
    own_ops, result = trace_all_ops(fn, *args)
    same_inputs = _diff(_pick(result, element), unpack(a["output"]))
    ops = []
    for i, op in enumerate(a["ops"]):
        entry = {"index": i, "op": op["op"], "inputs": op["shapes"]}
        try:
            out = resolve_op(op["op"])(*unpack(op["args"]), **unpack(op["kwargs"]))
            entry.update(_diff(tensors_of(out), unpack(op["out"])))
        except Exception as e:  # an op this torch cannot replay: reported, the others go on
            entry.update(equal=None, error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        ops.append(entry)
    seq_a, seq_b = [o["op"] for o in a["ops"]], [o["op"] for o in own_ops]
    split = next((i for i, (x, y) in enumerate(zip(seq_a, seq_b)) if x != y), None)
    if split is None and len(seq_a) != len(seq_b):
        split = min(len(seq_a), len(seq_b))
    return {"torch": str(torch.__version__), "torch_a": a["torch"], "stage": a["stage"], "function": a["function"],
            "same_inputs": same_inputs, "ops": ops, "sequence_a": seq_a, "sequence_b": seq_b,
            "sequence_split": split}


COMMANDS = {"digests": cmd_digests, "detail": cmd_detail, "check": cmd_check, "shapes": cmd_shapes,
            "stage-record": cmd_stage_record, "stage-check": cmd_stage_check}
BINARY_OUTPUT = ("detail", "stage-record")  # torch.save'd (tensors inside); the others are JSON


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in COMMANDS:
        print(f"usage: python -m colbert.explain.probe {'|'.join(COMMANDS)} SPEC.json", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    result = COMMANDS[argv[0]](spec)
    out = spec["out"]
    tmp = out + ".tmp"
    if argv[0] in BINARY_OUTPUT:
        torch.save(result, tmp)
    else:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(result, f)
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

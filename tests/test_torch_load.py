"""safe_load: the one torch.load of the package, on every supported torch (1.13.1 on)."""

import os
import pickle

import pytest
import torch

from colbert.tap.kinds import to_saveable
from colbert.tap.validate import load_artifact
from colbert.tap.errors import TapUnsafeError
from colbert.utils import torch_load
from colbert.utils.torch_load import load_restricted, safe_load


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_restricted_loader_reads_hand_saved_sets_and_tensors(tmp_path):
    value = {"pids": {3, 1, 2}, "frozen": frozenset({7}), "t": torch.arange(5, dtype=torch.int16),
             "nested": ([1.5, None, "x"], (torch.zeros(2, 3, dtype=torch.float16),))}
    path = tmp_path / "hand_saved.pt"
    torch.save(value, path)
    got = load_restricted(path)
    assert got["pids"] == {1, 2, 3} and type(got["pids"]) is set
    assert got["frozen"] == frozenset({7})
    assert torch.equal(got["t"], value["t"]) and got["t"].dtype == torch.int16
    assert got["nested"][0] == [1.5, None, "x"]
    assert got["nested"][1][0].dtype == torch.float16 and got["nested"][1][0].shape == (2, 3)


def test_restricted_loader_refuses_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": _Evil()}, path)
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system|not allowed"):
        load_restricted(path)


def test_safe_load_falls_back_only_for_a_weights_only_refusal(tmp_path, monkeypatch):
    """What torch < 2.7 does with a set: weights_only refuses it; safe_load then reads it anyway."""
    path = tmp_path / "set.pt"
    torch.save({5, 6}, path)
    real = torch.load
    calls = []

    def old_torch_load(f, *args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        if kwargs.get("weights_only") and os.path.basename(f) in ("set.pt", "evil.pt"):
            raise pickle.UnpicklingError("Weights only load failed. Unsupported class builtins.set")
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch_load.torch, "load", old_torch_load)
    assert safe_load(path) == {5, 6}
    assert calls == [True, False]
    # A refusal the restricted loader agrees with is re-raised as torch's own error.
    evil = tmp_path / "evil.pt"
    monkeypatch.setattr(torch_load.torch, "load", real)
    torch.save(_Evil(), evil)
    monkeypatch.setattr(torch_load.torch, "load", old_torch_load)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        safe_load(evil)
    # A file that is no torch file keeps torch's own error.
    monkeypatch.setattr(torch_load.torch, "load", real)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(Exception) as real_error:
        real(bad, weights_only=True)
    with pytest.raises(type(real_error.value)):
        safe_load(bad)


def test_mmap_is_asked_for_only_where_torch_has_it(tmp_path, monkeypatch):
    path = tmp_path / "t.pt"
    torch.save(torch.ones(3), path)
    seen = []
    real = torch.load

    def spy(f, *args, **kwargs):
        seen.append("mmap" in kwargs)
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch_load.torch, "load", spy)
    monkeypatch.setattr(torch_load, "torch_load_supports_mmap", lambda: False)
    assert torch.equal(safe_load(path, mmap=True), torch.ones(3))
    monkeypatch.setattr(torch_load, "torch_load_supports_mmap", lambda: True)
    assert torch.equal(safe_load(path, mmap=True), torch.ones(3))
    assert seen == [False, True]


def test_tap_stores_sets_as_sorted_lists_and_refuses_code(tmp_path):
    assert to_saveable({9, 1, 4}, "sample_pids") == [1, 4, 9]
    evil = tmp_path / "evil.pt"
    torch.save({"x": _Evil()}, evil)
    with pytest.raises(TapUnsafeError, match="evil.pt"):
        load_artifact(str(evil), "sample_pids")

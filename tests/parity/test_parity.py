"""Bit-for-bit parity with colbert-ai 0.2.22: the same 500 Vaswani passages, the same checkpoint
(made by our make-checkpoint), indexed by colbert-ai in its own venv and by us with the same pins."""

import json
import os

import pytest

from index_diff import diff_indexes
from venvs import REPO, ensure_torch_env, ensure_venv, run_in

pytestmark = [pytest.mark.parity, pytest.mark.slow]

HERE = os.path.dirname(os.path.abspath(__file__))
TSV = os.path.join(REPO, "colbert", "data", "vaswani", "collection.tsv")
N = 500


# torch 2.13.0 with colbert-ai's own pins (transformers 4.57.6), and upstream's own torch pin 1.13.1
# with the pin set of colbert/matrix/pins.json (transformers 4.38.2, numpy 1.26.4).
TORCHES = ["2.13.0", "1.13.1"]


@pytest.fixture(scope="module", params=TORCHES)
def pythons(request):
    """(torch version, oracle python, its PYTHONPATH or None, our python)."""
    if request.param == "2.13.0":
        return request.param, ensure_venv("oracle"), None, ensure_venv("ours-tf457")
    python, upstream = ensure_torch_env(request.param)
    return request.param, python, upstream, python


@pytest.mark.parametrize("which", ["A", "B"])
def test_index_is_bit_identical_to_colbert_ai(which, pythons, colbert_checkpoint, tmp_path):
    torch_version, oracle_py, upstream_path, ours_py = pythons
    script = os.path.join(HERE, "index_script.py")
    out = {}
    for side, python, ours in (("oracle", oracle_py, False), ("ours", ours_py, True)):
        root = tmp_path / side
        root.mkdir()
        stdout = run_in(python, script, colbert_checkpoint, TSV, str(N), str(root), which, ours=ours, cwd=str(root),
                        upstream_path=upstream_path)
        result = json.loads(stdout.strip().splitlines()[-1])
        out[side] = result["index_path"]
        # each side really ran the package it stands for, under the torch asked for
        assert result["torch"].split("+")[0] == torch_version
        from_repo = os.path.realpath(result["colbert"]) == os.path.realpath(os.path.join(REPO, "colbert", "__init__.py"))
        assert from_repo == ours, result["colbert"]
    a, b = out["ours"], out["oracle"]
    names = sorted(os.listdir(a))
    assert any(n.endswith(".codes.pt") for n in names) and "ivf.pid.pt" in names and "metadata.json" in names
    assert sorted(os.listdir(b)) == names
    problems = diff_indexes(a, b)
    assert problems == [], "\n".join(problems)
    # The diff really compares something: a perturbed copy must be caught.
    import shutil

    import torch

    broken = tmp_path / "broken"
    shutil.copytree(a, broken)
    codes = torch.load(broken / "0.codes.pt", weights_only=True)
    codes[0] += 1
    torch.save(codes, broken / "0.codes.pt")
    assert diff_indexes(str(broken), b) == ["0.codes.pt: tensors differ"]

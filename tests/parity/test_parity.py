"""Bit-for-bit parity with colbert-ai 0.2.22: the same 500 Vaswani passages, the same checkpoint
(made by our make-checkpoint), indexed by colbert-ai in its own venv and by us with the same pins."""

import json
import os

import pytest

from index_diff import diff_indexes
from venvs import REPO, ensure_venv, run_in

pytestmark = [pytest.mark.parity, pytest.mark.slow]

HERE = os.path.dirname(os.path.abspath(__file__))
TSV = os.path.join(REPO, "colbert", "data", "vaswani", "collection.tsv")
N = 500


@pytest.fixture(scope="module")
def pythons():
    return ensure_venv("oracle"), ensure_venv("ours-tf457")


@pytest.mark.parametrize("which", ["A", "B"])
def test_index_is_bit_identical_to_colbert_ai(which, pythons, colbert_checkpoint, tmp_path):
    oracle_py, ours_py = pythons
    script = os.path.join(HERE, "index_script.py")
    out = {}
    for side, python, ours in (("oracle", oracle_py, False), ("ours", ours_py, True)):
        root = tmp_path / side
        root.mkdir()
        stdout = run_in(python, script, colbert_checkpoint, TSV, str(N), str(root), which, ours=ours, cwd=str(root))
        out[side] = json.loads(stdout.strip().splitlines()[-1])["index_path"]
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

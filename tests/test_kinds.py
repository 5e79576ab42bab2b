"""colbert/tap/kinds.py: one description of each artifact kind, and the residual bit layout defined once."""

import collections
import io

import pytest
import torch

from colbert.compare import semantic
from colbert.compare.loading import leaf_dtype, leaf_kind
from colbert.indexing.codecs import residual_bits
from colbert.indexing.codecs.residual_codec import ResidualCodec
from colbert.infra import ColBERTConfig
from colbert.search import reference
from colbert.tap.kinds import (accepts, content_sha256, describe, from_saved, kind_of, numeric_leaves, summarize,
                               to_saveable)
from colbert.utils.torch_load import safe_load

# One value of each kind a stage can hold, and the content_sha256 the tap wrote for it before the
# kinds moved here: a manifest's hashes must not change with the refactor (cross-torch parity relies on them).
VALUES = {
    "tensor": (torch.arange(6, dtype=torch.int32).view(2, 3),
               "1f2f775298fda52c58a935c1ca61f6c6b38e1b10c445754fad5ea56c9be10a7f"),
    "tuple": ((torch.tensor([1.5, -2.0]), torch.zeros(0, dtype=torch.int64)),
              "ce9ed0bebabd757c8e4bfbd50ef20f94243c79b68e00addd8cdd9fa27a0f6857"),
    "int": (7, "2cd74590c61f4536211f70d4125f257780e6ca1b45ad91b9c54d2a67f38a9d29"),
    "float": (0.25, "a1cd131c8c5afe182a020414802d920fabb3832adce748dc4bc9de0c5cabb9fb"),
    "list": ([3, 1, 2], "a346214224f7e302c61894e008df1caf7d0c9d10b6ec1f922266405c99030346"),
    "set": ({9, 1, 4}, "16bb154d1e796a8908c866b2bd79fc5c76005747603d0a7b31b0daabdf5e1e64"),
    "dict": ({"b": 2, "a": [1.0]}, "a3c983f79a7fd75ac8fb0dd8283ef5cac675f496454420e804209463111bcee0"),
}


def saved_and_loaded(value):
    buf = io.BytesIO()
    torch.save(to_saveable(value, "stage"), buf)
    buf.seek(0)
    return safe_load(buf)


@pytest.mark.parametrize("kind", sorted(VALUES))
def test_each_kind_hashes_as_before_and_comes_back_as_itself(kind):
    value, sha = VALUES[kind]
    assert kind_of(value) == kind
    assert content_sha256(value) == sha
    loaded = saved_and_loaded(value)
    if kind == "set":
        # stored as a sorted list, so that torch < 2.7 can read it under weights_only
        assert loaded == [1, 4, 9] and content_sha256(loaded) == content_sha256([1, 4, 9])
    assert accepts(kind, loaded)
    back = from_saved(kind, loaded)
    assert type(back) is type(value)
    assert content_sha256(back) == sha


def test_kind_of_edges():
    Pair = collections.namedtuple("Pair", "a b")
    assert [kind_of(v) for v in (True, 1, 1.0, "s", None, frozenset(), Pair(1, 2), object())] == [
        "bool", "int", "float", "str", "none", "set", "tuple", "other"]
    # a bool is not an int to the registry, a one-element tensor is a number
    assert not accepts("int", True) and accepts("int", torch.tensor([3])) and not accepts("int", torch.tensor(0.5))
    assert accepts("float", 2) and accepts("float", torch.tensor(0.5)) and not accepts("float", False)
    assert from_saved("int", torch.tensor([3])) == 3 and from_saved("float", 2) == 2.0
    assert not accepts("tensor", [1]) and not accepts("list", (1,)) and accepts("tuple", [1])


def test_descriptions_agree_across_tap_and_compare():
    value, _ = VALUES["tuple"]
    assert describe(value) == "tuple(tensor float32 (2,), tensor int64 (0,))"
    assert summarize(value) == {"kind": "tuple", "dtype": None, "shape": [2], "elements": [
        {"kind": "tensor", "dtype": "float32", "shape": [2]}, {"kind": "tensor", "dtype": "int64", "shape": [0]}]}
    assert summarize(True)["kind"] == "bool" and summarize(3) == {"kind": "int", "dtype": None, "shape": [], "value": 3}
    # bools and empty tensors carry no number a bound could constrain
    two, ones, half = numeric_leaves([True, 2, (torch.zeros(0), torch.ones(2)), {"a": 0.5}])
    assert two == 2 and torch.equal(ones, torch.ones(2)) and half == 0.5
    # compare counts numpy-style numbers too, but a bool stays a bool
    assert [leaf_kind(v, False) for v in (True, 3, 0.5, {1}, [1])] == ["bool", "int", "float", "set", "list"]
    assert leaf_dtype([1, 2]) == "int" and leaf_dtype([1, 0.5]) == "mixed" and leaf_dtype(False) == "bool"


@pytest.mark.parametrize("nbits", [1, 2, 4, 8])
def test_codec_reference_and_compare_share_one_bit_layout(nbits):
    dim = 64
    g = torch.Generator().manual_seed(nbits)
    cutoffs = torch.linspace(-0.1, 0.1, 2 ** nbits - 1)
    weights = torch.linspace(-0.12, 0.12, 2 ** nbits)
    centroids = torch.nn.functional.normalize(torch.randn(8, dim, generator=g), dim=-1)
    codec = ResidualCodec(ColBERTConfig(dim=dim, nbits=nbits), centroids, torch.tensor(0.05), cutoffs, weights)
    residuals = torch.randn(20, dim, generator=g) * 0.1
    buckets = torch.bucketize(residuals, cutoffs)
    packed = codec.binarize(residuals)
    assert torch.equal(packed, reference.pack_buckets(buckets, nbits))
    assert torch.equal(reference.unpack_buckets(packed, nbits), buckets)
    assert torch.equal(semantic.unpack_buckets(packed, nbits, torch.int32), buckets)
    assert torch.equal(codec.decompress_residuals(packed), weights[buckets])
    # one flipped bit is one changed bucket, whichever side unpacks it
    flipped = packed.clone()
    flipped[3, 1] ^= 1
    assert int((residual_bits.unpack_buckets(flipped, nbits) != buckets).sum()) == 1

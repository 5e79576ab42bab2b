"""The GPU paths of indexing and search against their CPU / pure-torch
definitions, with upstream's (colbert-ai 0.2.22) GPU semantics:

  indexing: fp16 encoding under autocast; fp16 centroids and residual
  statistics from the fp16-rounded centroids; compression of fp16 batches
  with the bits packed on the GPU (packbits kernel, numpy's bit order);
  decompression as one fp16 rounding of centroid + bucket weight;
  search: fp16 centroid scores, fp16 decompressed embeddings (the
  decompress_rows CUDA kernel), no floor on per-token maxima, topk pruning.

Every kernel in csrc/ is held to colbert/search/reference.py: the CPU ones in
tests/test_extensions.py, the CUDA ones there and here; the first test below
checks that no binding is left without a test.  Everything else here needs a
CUDA device and skips cleanly without one (no compiler is needed to skip).
"""

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from colbert.search import extensions, reference

ROOT = Path(__file__).resolve().parent.parent
HAVE_CUDA = torch.cuda.is_available()
cuda = pytest.mark.skipif(not HAVE_CUDA, reason="needs a CUDA device")


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------
# Runs everywhere: every compiled kernel has a reference test.


def bindings(name):
    text = (ROOT / "csrc" / name).read_text()
    return re.findall(r'm\.def\("(\w+)"', text)


def test_every_kernel_has_a_reference_test():
    tests = (ROOT / "tests" / "test_extensions.py").read_text() + Path(__file__).read_text()
    cpu, gpu = bindings("cpu_bindings.cpp"), bindings("cuda_bindings.cpp")
    assert set(gpu) == {"decompress_rows", "packbits"} and cpu, (cpu, gpu)
    for name in cpu:  # the `native` fixture is the compiled CPU module
        assert re.search(rf"(native|impl)\.{name}\(", tests), f"CPU kernel {name} has no test"
        assert hasattr(reference, name), f"CPU kernel {name} has no pure-torch reference"
    for name in gpu:  # `module` is the compiled CUDA module in the CUDA tests
        assert re.search(rf"module\.{name}\(", tests), f"CUDA kernel {name} has no test"
        assert hasattr(reference, name), f"CUDA kernel {name} has no pure-torch reference"


def test_kmeans_precision_branches():
    """Centroids are normalised in float32, then kept in float16 for a GPU index and float32 for a
    CPU one (upstream's _train_kmeans); the statistics use that same tensor."""
    from colbert.indexing.kmeans import train_kmeans

    sample = torch.randn(400, 32, generator=gen(1)).half()
    for use_gpu, dtype in ((True, torch.float16), (False, torch.float32)):
        post, codec = train_kmeans(sample, 8, 3, backend="torch", use_gpu=use_gpu)
        assert post.dtype == torch.float32 and codec.dtype == dtype
        torch.testing.assert_close(post.norm(dim=-1), torch.ones(8), rtol=0, atol=1e-6)
        assert torch.equal(codec, post.to(dtype))


# ---------------------------------------------------------------------------
# CUDA kernels


@pytest.fixture(scope="module")
def module():
    if not HAVE_CUDA:
        pytest.skip("needs a CUDA device")
    m = extensions._module("cuda")
    assert m is not None, f"compiled CUDA extension unavailable: {extensions._modules['cuda'][1]}"
    return m


def codec_case(nbits, dim, nrows, ncentroids=64, seed=0, dtype=torch.float16):
    g = gen(seed)
    buckets = torch.randint(0, 2 ** nbits, (nrows, dim), generator=g)
    codes = torch.randint(0, ncentroids, (nrows,), generator=g).int()
    centroids = F.normalize(torch.randn(ncentroids, dim, generator=g), dim=-1).to(dtype)
    weights = (torch.randn(2 ** nbits, generator=g) * 0.05).sort().values.to(dtype)
    return buckets, codes, reference.pack_buckets(buckets, nbits), centroids, weights


@cuda
def test_cuda_status_names_the_compiled_module(module):
    status = extensions.extension_status()["cuda"]
    assert status["backend"] in ("aot", "jit"), status
    if status["backend"] == "aot":  # what setup.py built for, e.g. "8.9" or "7.5_8.0_8.6_8.9_9.0+PTX"
        assert module.CUDA_ARCHS, "an ahead-of-time CUDA module records its architectures"


@cuda
@pytest.mark.parametrize("nbits", [1, 2, 4, 8])
def test_cuda_decompress_rows_large_and_strided(module, nbits):
    dim = 128
    buckets, codes, residuals, centroids, weights = codec_case(nbits, dim, 150_001, seed=nbits)
    expected = reference.decompress_rows(codes, residuals, centroids, weights, nbits)
    got = module.decompress_rows(codes.cuda(), residuals.cuda(), centroids.cuda(), weights.cuda(), nbits)
    assert got.dtype == torch.float16 and torch.equal(got.cpu(), expected)
    # Non-contiguous views (every other row), as a gather of an index's rows may hand over.
    c2, r2 = codes.cuda()[::2], residuals.cuda()[::2]
    got2 = module.decompress_rows(c2, r2, centroids.cuda(), weights.cuda(), nbits)
    assert torch.equal(got2.cpu(), expected[::2])
    # float32 centroids give the float32 sum
    exp32 = reference.decompress_rows(codes, residuals, centroids.float(), weights.float(), nbits)
    got32 = module.decompress_rows(codes.cuda(), residuals.cuda(), centroids.float().cuda(),
                                   weights.float().cuda(), nbits)
    assert got32.dtype == torch.float32 and torch.equal(got32.cpu(), exp32)


@cuda
def test_cuda_decompress_rows_on_a_second_stream_and_device_guard(module):
    _, codes, residuals, centroids, weights = codec_case(2, 96, 5000, seed=3)
    expected = reference.decompress_rows(codes, residuals, centroids, weights, 2)
    args = [t.cuda() for t in (codes, residuals, centroids, weights)]
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        got = module.decompress_rows(*args, 2)
    stream.synchronize()
    assert torch.equal(got.cpu(), expected)


@cuda
def test_cuda_packbits_shapes_and_public_dispatch(module):
    bits = torch.randint(0, 2, (1000, 96, 2), generator=gen(4)).to(torch.uint8)
    expected = reference.packbits(bits.flatten())
    assert torch.equal(module.packbits(bits.cuda()).cpu(), expected)  # any shape, flattened
    assert torch.equal(module.packbits(bits.cuda().transpose(0, 1)).cpu(),
                       reference.packbits(bits.transpose(0, 1).flatten()))  # non-contiguous
    assert torch.equal(extensions.packbits(bits.flatten().cuda()).cpu(), expected)
    nonbinary = bits * 3  # any nonzero byte counts as 1, as in the reference
    assert torch.equal(module.packbits(nonbinary.cuda()).cpu(), reference.packbits(nonbinary.flatten()))


# ---------------------------------------------------------------------------
# Indexing on the GPU


class _Config:
    def __init__(self, dim, nbits, gpus):
        self.dim, self.nbits, self.total_visible_gpus = dim, nbits, gpus


def codecs(nbits, dim=128, k=64, seed=5):
    """The same codec on the GPU (fp16) and on the CPU (float32), from fp16 centroids."""
    from colbert.indexing.codecs.residual_codec import ResidualCodec

    g = gen(seed)
    centroids = F.normalize(torch.randn(k, dim, generator=g), dim=-1).half()
    cutoffs = torch.linspace(-0.06, 0.06, 2 ** nbits - 1)
    weights = torch.linspace(-0.08, 0.08, 2 ** nbits)
    gpu = ResidualCodec(_Config(dim, nbits, 1), centroids, torch.tensor(0.03), cutoffs, weights)
    cpu = ResidualCodec(_Config(dim, nbits, 0), centroids, torch.tensor(0.03), cutoffs, weights)
    return gpu, cpu


def fp16_embs(n, dim=128, seed=6):
    return F.normalize(torch.randn(n, dim, generator=gen(seed)), dim=-1).half()


@cuda
@pytest.mark.parametrize("nbits", [1, 2, 4, 8])
def test_gpu_binarize_packs_on_the_gpu_like_the_cpu(nbits, monkeypatch):
    gpu, cpu = codecs(nbits)
    residuals = (torch.randn(3000, 128, generator=gen(7)) * 0.05).half()
    calls = []
    real = extensions.packbits
    monkeypatch.setattr(extensions, "packbits", lambda bits: calls.append(bits.device) or real(bits))
    got = gpu.binarize(residuals.cuda())
    assert calls and calls[0].type == "cuda", "the GPU branch must pack with the CUDA packbits kernel"
    assert got.is_cuda and torch.equal(got.cpu(), cpu.binarize(residuals))


@cuda
@pytest.mark.parametrize("nbits", [2, 4])
def test_gpu_compress_is_fp16_nearest_centroid_then_residual_bits(nbits):
    gpu, cpu = codecs(nbits)
    embs = fp16_embs(20_000)
    out = gpu.compress(embs)
    assert out.codes.device.type == "cpu" and out.residuals.device.type == "cpu"
    # upstream's GPU compress: fp16 scores on the GPU, argmax, fp16 residual
    centroids, batch = gpu.centroids, embs.cuda()
    codes = (centroids @ batch.T).max(dim=0).indices
    assert torch.equal(out.codes.long(), codes.cpu())
    residual = (batch - centroids[codes]).cpu()
    assert torch.equal(out.residuals, cpu.binarize(residual))
    # the float32 CPU argmax picks the same centroid for all but near-ties
    agree = (out.codes == cpu.compress(embs).codes).float().mean().item()
    assert agree >= 0.98, agree


@cuda
@pytest.mark.parametrize("nbits", [1, 2, 4, 8])
def test_gpu_codec_decompress_equals_the_cuda_kernel(nbits, module):
    from colbert.indexing.codecs.residual_codec import ResidualEmbeddings

    gpu, cpu = codecs(nbits)
    compressed = cpu.compress(fp16_embs(5000, seed=8))
    D = gpu.decompress(compressed)
    assert D.is_cuda and D.dtype == torch.float16
    raw = module.decompress_rows(compressed.codes.cuda(), compressed.residuals.cuda(), gpu.centroids,
                                 gpu.bucket_weights, nbits)
    assert torch.equal(D, F.normalize(raw, dim=-1))
    # and the float32 CPU decompression to fp16 precision
    torch.testing.assert_close(D.float().cpu(), cpu.decompress(ResidualEmbeddings(compressed.codes,
                                                                                  compressed.residuals)),
                               rtol=0, atol=2e-3)


@cuda
def test_gpu_residual_stats_from_fp16_centroids():
    from colbert.indexing.codecs.residual_stats import compute_residual_stats

    centroids = F.normalize(torch.randn(64, 128, generator=gen(9)), dim=-1).half()
    heldout = fp16_embs(4000, seed=10)
    got = compute_residual_stats(_Config(128, 2, 1), centroids, heldout)
    ref = compute_residual_stats(_Config(128, 2, 0), centroids.float(), heldout)
    for g, r in zip(got, ref):
        g = torch.as_tensor(g).float().cpu()
        torch.testing.assert_close(g, torch.as_tensor(r).float(), rtol=0, atol=2e-3)


# ---------------------------------------------------------------------------
# Encoding and search on the GPU (a real checkpoint and a 120-passage index)


@cuda
def test_gpu_encoding_is_fp16_autocast_of_the_cpu_encoder(colbert_checkpoint, small_passages):
    from colbert.modeling.checkpoint import Checkpoint

    gpu = Checkpoint(colbert_checkpoint, verbose=0)
    assert gpu.use_gpu and gpu.device.type == "cuda"
    cpu = Checkpoint(colbert_checkpoint, verbose=0)
    cpu.use_gpu = False
    cpu.cpu()
    passages = small_passages[:40]
    D_gpu, lens_gpu = gpu.docFromText(passages, bsize=16, keep_dims="flatten")[:2]
    D_cpu, lens_cpu = cpu.docFromText(passages, bsize=16, keep_dims="flatten")[:2]
    assert lens_gpu == lens_cpu
    assert D_gpu.dtype == torch.float16 and D_cpu.dtype == torch.float32
    cos = (D_gpu.float() * D_cpu).sum(-1)
    assert cos.min().item() >= 0.99, cos.min().item()
    Q_gpu = gpu.queryFromText(["design of band pass filters"])
    Q_cpu = cpu.queryFromText(["design of band pass filters"])
    assert Q_gpu.is_cuda
    assert (Q_gpu.float().cpu() * Q_cpu).sum(-1).min().item() >= 0.99


@pytest.fixture(scope="module")
def gpu_searcher(small_index, colbert_checkpoint):
    if not HAVE_CUDA:
        pytest.skip("needs a CUDA device")
    from colbert import Searcher

    searcher = Searcher(index=small_index[0], checkpoint=colbert_checkpoint, verbose=0)
    assert searcher.use_gpu and searcher.ranker.use_gpu
    return searcher


QUERIES = ["measurement of dielectric constant of liquids", "design of band pass filters",
           "microwave waveguide radiation", "electron beam tubes and their noise",
           "transistor amplifier circuits", "antenna arrays"]


@cuda
def test_gpu_gather_rows_equals_segmented_lookup(gpu_searcher):
    from colbert.search.strided_tensor import gather_rows

    index = gpu_searcher.ranker.index
    pids = torch.randperm(index.num_passages, generator=gen(11))[:50].int()
    ref = reference.segmented_lookup(index.codes, index.offsets, index.doclens, pids)
    got = gather_rows(index.codes.cuda(), index.offsets.cuda(), index.doclens.cuda(), pids.cuda())
    assert torch.equal(got.cpu(), ref)
    ivf = index.ivf
    cells = torch.arange(min(10, len(ivf)))
    ref_rows, ref_lens = ivf.lookup(cells)
    from colbert.search.strided_tensor import StridedTensor

    gpu_ivf = StridedTensor(ivf.tensor.cpu(), ivf.lengths.cpu(), use_gpu=True)
    rows, lens = gpu_ivf.lookup(cells)
    assert torch.equal(rows.cpu(), ref_rows.cpu()) and torch.equal(lens.cpu(), ref_lens.cpu())


@cuda
def test_gpu_search_is_the_gpu_algorithm_run_on_cuda(gpu_searcher):
    """The GPU search on CUDA against the same algorithm on CPU tensors (pure torch): stage by
    stage, with fp16 centroid scores and the decompress_rows kernel on one side only."""
    from colbert.search.index_scorer import IndexScorer
    from colbert.search.strided_tensor import gather_rows

    ranker = gpu_searcher.ranker
    algo_cpu = IndexScorer(ranker.index, use_gpu=True, device="cpu")
    gpu_searcher.search(QUERIES[0], k=10)  # fixes the PLAID settings
    config = gpu_searcher.config
    overlaps = []
    for text in QUERIES:
        Q = gpu_searcher.encode(text)
        pids, S = ranker.retrieve(config, Q, {})
        assert S.is_cuda and S.dtype == torch.float16
        pids_c, S_c = algo_cpu.retrieve(config, Q.cpu(), {})
        torch.testing.assert_close(S.float().cpu(), S_c.float(), rtol=0, atol=2e-3)
        # decompression of the same pids: the CUDA kernel vs the pure-torch reference, bit-equal
        # before normalising (a float16 norm may round differently on the two devices)
        some = pids_c[:64]
        rows_g = [gather_rows(t, ranker.offsets, ranker.doclens, some.cuda()) for t in (ranker.codes, ranker.residuals)]
        rows_c = [gather_rows(t, algo_cpu.offsets, algo_cpu.doclens, some) for t in (algo_cpu.codes, algo_cpu.residuals)]
        raw = extensions.decompress_rows(*rows_g, ranker.centroids, ranker.bucket_weights, ranker.nbits)
        assert raw.is_cuda and raw.dtype == torch.float16
        assert torch.equal(raw.cpu(), reference.decompress_rows(*rows_c, algo_cpu.centroids, algo_cpu.bucket_weights,
                                                                algo_cpu.nbits))
        torch.testing.assert_close(ranker.decompress(some.cuda()).float().cpu(),
                                   algo_cpu.decompress(some).float(), rtol=0, atol=1e-3)
        got, scores = ranker.rank(config, Q)
        ref, ref_scores = algo_cpu.rank(config, Q.cpu())
        assert scores == sorted(scores, reverse=True) and len(set(got)) == len(got)
        overlaps.append(len(set(got[:10]) & set(ref[:10])) / 10)
        ref_of = dict(zip(ref, ref_scores))
        for pid, s in zip(got, scores):
            if pid in ref_of:
                assert abs(s - ref_of[pid]) <= 2e-3 * abs(s) + 1e-2, (pid, s, ref_of[pid])
    assert sum(overlaps) / len(overlaps) >= 0.9, overlaps


@cuda
def test_gpu_search_agrees_with_the_cpu_path(gpu_searcher, small_index):
    from colbert.search.index_loader import load_index
    from colbert.search.index_scorer import IndexScorer

    cpu_ranker = IndexScorer(load_index(small_index[0], use_gpu=False), use_gpu=False)
    assert cpu_ranker.centroids.device.type == "cpu"
    gpu_searcher.search(QUERIES[0], k=10)
    overlaps = []
    for text in QUERIES:
        Q = gpu_searcher.encode(text)
        gpu_pids, _ = gpu_searcher.ranker.rank(gpu_searcher.config, Q)
        cpu_pids, _ = cpu_ranker.rank(gpu_searcher.config, Q.cpu().float())
        overlaps.append(len(set(gpu_pids[:10]) & set(cpu_pids[:10])) / 10)
    assert sum(overlaps) / len(overlaps) >= 0.8, overlaps

import pytest
import torch

from colbert.indexing.kmeans import resolve_backend, train_kmeans
from colbert.infra import ColBERTConfig


def blobs(n=600, dim=16, k=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, dim, generator=g) * 5
    return (centers[torch.arange(n) % k] + torch.randn(n, dim, generator=g) * 0.1).half()


@pytest.mark.parametrize("backend", ["faiss", "torch", "fastkmeans"])
def test_backends_are_deterministic_and_leave_global_rngs_alone(backend):
    if backend == "fastkmeans":
        pytest.importorskip("fastkmeans")
    x = blobs()
    torch.manual_seed(7)
    state = torch.get_rng_state()
    a, a_codec = train_kmeans(x, 8, 10, backend)
    assert torch.equal(state, torch.get_rng_state())
    b, _ = train_kmeans(x, 8, 10, backend)
    assert torch.equal(a, b) and a.shape == (8, 16) and a_codec.dtype == torch.float32
    assert torch.allclose(a.norm(dim=-1), torch.ones(8), atol=1e-5)
    # well-separated blobs: every point's nearest centroid is its own blob's
    assign = (x.float() @ a.T).argmax(dim=1)
    assert len(set(assign.tolist())) == 8


def test_backend_selection(monkeypatch):
    monkeypatch.delenv("COLBERT_KMEANS", raising=False)
    assert resolve_backend(ColBERTConfig()) == "faiss"
    monkeypatch.setenv("COLBERT_KMEANS", "torch")
    assert resolve_backend(ColBERTConfig()) == "torch"
    assert resolve_backend(ColBERTConfig(kmeans_backend="fastkmeans")) == "fastkmeans"
    with pytest.raises(ValueError, match="expected one of faiss, fastkmeans, torch"):
        resolve_backend(ColBERTConfig(kmeans_backend="sklearn"))


def test_too_few_points():
    with pytest.raises(ValueError, match="10 training embeddings for 16 centroids"):
        train_kmeans(blobs(n=10), 16, 2, "torch")

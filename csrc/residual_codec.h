// The argument checks the CPU (decompress_residuals.cpp) and CUDA
// (decompress_residuals.cu) decompressors share: what an nbits-bit residual
// codec's tensors must look like whatever device or float type they have.
// Only ATen, so that both g++ and nvcc can include it.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace colbert_tap {

// Each residual row packs dim * nbits bits, first bit most significant, and
// the codes give one centroid per row; the dtype and device checks stay with
// each caller because the CPU kernel reads float32 and the CUDA one float16 too.
inline void check_residual_layout(const at::Tensor& codes, const at::Tensor& residuals,
                                  const at::Tensor& centroids,
                                  const at::Tensor& bucket_weights, int64_t nbits,
                                  const char* what) {
  TORCH_CHECK(nbits == 1 || nbits == 2 || nbits == 4 || nbits == 8, what,
              ": nbits must be 1, 2, 4 or 8, got ", nbits);
  TORCH_CHECK(codes.dim() == 1 && (codes.scalar_type() == at::kInt ||
                                   codes.scalar_type() == at::kLong),
              what, ": codes must be a 1-D int32 or int64 tensor, got ", codes.dim(), "-D ",
              codes.scalar_type());
  TORCH_CHECK(centroids.dim() == 2, what, ": centroids must be 2-D [centroids, dim], got ",
              centroids.dim(), "-D");
  TORCH_CHECK(bucket_weights.dim() == 1, what, ": bucket_weights must be 1-D, got ",
              bucket_weights.dim(), "-D");
  TORCH_CHECK(bucket_weights.size(0) == (int64_t{1} << nbits), what, ": bucket_weights has ",
              bucket_weights.size(0), " entries; nbits=", nbits, " needs ", (int64_t{1} << nbits));
  TORCH_CHECK(residuals.dim() == 2 && residuals.scalar_type() == at::kByte, what,
              ": residuals must be a 2-D uint8 tensor, got ", residuals.dim(), "-D ",
              residuals.scalar_type());
  const int64_t dim = centroids.size(1);
  TORCH_CHECK(dim % 8 == 0, what, ": dim must be a multiple of 8, got ", dim);
  TORCH_CHECK(residuals.size(1) * 8 == dim * nbits, what, ": residual rows have ",
              residuals.size(1), " bytes; dim=", dim, " at nbits=", nbits, " needs ",
              dim * nbits / 8);
  // The index pads codes/residuals with extra rows; only equal counts matter.
  TORCH_CHECK(codes.size(0) == residuals.size(0), what, ": ", codes.size(0),
              " codes but ", residuals.size(0), " residual rows");
}

}  // namespace colbert_tap

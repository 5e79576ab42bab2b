// GPU decompression of residual-compressed rows (colbert-tap, upstream's bit layout).
// Output keeps the centroids' dtype; for fp16 each element is one rounding of
// weight + centroid, which is what torch's own fp16 add gives, so
// colbert/search/reference.py:decompress_rows run on fp16 inputs is the spec.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdint>

#include "residual_codec.h"

namespace colbert_tap {
namespace {

// One thread per output element: rows are short (dim <= a few hundred), so a
// block per row would leave most of each block idle at small dims.
template <typename scalar_t, typename code_t>
__global__ void decompress_rows_kernel(const code_t* __restrict__ codes,
                                       const uint8_t* __restrict__ residuals,
                                       const scalar_t* __restrict__ centroids,
                                       const scalar_t* __restrict__ weights, int64_t nrows,
                                       int dim, int nbits, int packed_dim,
                                       scalar_t* __restrict__ out) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= nrows * dim) return;
  const int64_t row = idx / dim;
  const int d = static_cast<int>(idx - row * dim);
  const uint8_t* packed = residuals + row * packed_dim;
  // Bit t of a row is bit (7 - t % 8) of byte t / 8; dimension d owns bits
  // d*nbits .. d*nbits+nbits-1, the first of them being the least significant.
  int bucket = 0;
  for (int j = 0; j < nbits; ++j) {
    const int t = d * nbits + j;
    const int bit = (packed[t >> 3] >> (7 - (t & 7))) & 1;
    bucket |= bit << j;
  }
  const int64_t code = static_cast<int64_t>(codes[row]);
  const float sum = static_cast<float>(weights[bucket]) +
                    static_cast<float>(centroids[code * dim + d]);
  out[idx] = static_cast<scalar_t>(sum);
}

// One launch per (float type, code type) pair the dispatch below selects.
template <typename scalar_t, typename code_t>
void launch(int64_t blocks, int threads, cudaStream_t stream, const at::Tensor& codes,
            const at::Tensor& residuals, const at::Tensor& centroids, const at::Tensor& weights,
            int64_t nbits, at::Tensor& out) {
  decompress_rows_kernel<scalar_t, code_t><<<static_cast<unsigned int>(blocks), threads, 0, stream>>>(
      codes.data_ptr<code_t>(), residuals.data_ptr<uint8_t>(), centroids.data_ptr<scalar_t>(),
      weights.data_ptr<scalar_t>(), codes.size(0), static_cast<int>(centroids.size(1)),
      static_cast<int>(nbits), static_cast<int>(residuals.size(1)), out.data_ptr<scalar_t>());
}

}  // namespace

at::Tensor decompress_rows_cuda(const at::Tensor& codes_in, const at::Tensor& residuals_in,
                                const at::Tensor& centroids_in, const at::Tensor& weights_in,
                                int64_t nbits) {
  const char* what = "decompress_rows_cuda";
  TORCH_CHECK(codes_in.is_cuda() && residuals_in.is_cuda() && centroids_in.is_cuda() &&
                  weights_in.is_cuda(),
              what, ": all tensors must be CUDA tensors");
  TORCH_CHECK(codes_in.device() == residuals_in.device() &&
                  codes_in.device() == centroids_in.device() &&
                  codes_in.device() == weights_in.device(),
              what, ": all tensors must be on the same device");
  check_residual_layout(codes_in, residuals_in, centroids_in, weights_in, nbits, what);
  TORCH_CHECK(centroids_in.scalar_type() == at::kHalf || centroids_in.scalar_type() == at::kFloat,
              what, ": centroids must be float16 or float32, got ", centroids_in.scalar_type());
  TORCH_CHECK(weights_in.scalar_type() == centroids_in.scalar_type(), what,
              ": bucket_weights must have the centroids' dtype ", centroids_in.scalar_type(),
              ", got ", weights_in.scalar_type());
  const int64_t dim = centroids_in.size(1);

  const c10::cuda::CUDAGuard guard(codes_in.device());
  const auto codes = codes_in.contiguous();
  const auto residuals = residuals_in.contiguous();
  const auto centroids = centroids_in.contiguous();
  const auto weights = weights_in.contiguous();
  const int64_t nrows = codes.size(0);
  auto out = at::empty({nrows, dim}, centroids.options());
  if (nrows == 0) return out;

  // An out-of-range gather inside the kernel would poison the CUDA context for
  // the whole process; one reduction and a sync are the price of an exception.
  const auto mm = at::aminmax(codes);
  const int64_t lo = std::get<0>(mm).item<int64_t>();
  const int64_t hi = std::get<1>(mm).item<int64_t>();
  TORCH_CHECK(lo >= 0 && hi < centroids.size(0), what, ": codes span [", lo, ", ", hi,
              "] but there are ", centroids.size(0), " centroids");

  const int threads = 256;
  const int64_t blocks = (nrows * dim + threads - 1) / threads;
  TORCH_CHECK(blocks <= 0x7fffffffLL, what, ": too many rows for one launch");
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(centroids.scalar_type(), "decompress_rows_cuda", [&] {
    if (codes.scalar_type() == at::kInt) {
      launch<scalar_t, int32_t>(blocks, threads, stream, codes, residuals, centroids, weights, nbits, out);
    } else {
      launch<scalar_t, int64_t>(blocks, threads, stream, codes, residuals, centroids, weights, nbits, out);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace colbert_tap

// GPU bit packing for residual compression (upstream's compress step): eight
// consecutive 0/1 bytes become one byte, the first of them in the most
// significant position (numpy.packbits' default order).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdint>

namespace colbert_tap {
namespace {

// One thread per output byte.  Unlike a warp-ballot kernel this needs only a
// multiple of 8 input bits, not 32.
__global__ void packbits_kernel(const uint8_t* __restrict__ bits, int64_t nbytes,
                                uint8_t* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= nbytes) return;
  const uint8_t* b = bits + i * 8;
  unsigned int v = 0;
  for (int k = 0; k < 8; ++k) v = (v << 1) | (b[k] != 0 ? 1u : 0u);
  out[i] = static_cast<uint8_t>(v);
}

}  // namespace

at::Tensor packbits_cuda(const at::Tensor& bits_in) {
  const char* what = "packbits_cuda";
  TORCH_CHECK(bits_in.is_cuda(), what, ": bits must be a CUDA tensor, got ", bits_in.device());
  TORCH_CHECK(bits_in.scalar_type() == at::kByte || bits_in.scalar_type() == at::kBool, what,
              ": bits must be uint8 or bool, got ", bits_in.scalar_type());
  TORCH_CHECK(bits_in.numel() % 8 == 0, what, ": the number of bits (", bits_in.numel(),
              ") must be a multiple of 8");
  const c10::cuda::CUDAGuard guard(bits_in.device());
  // bool and uint8 share a one-byte 0/1 representation.
  const auto bits = bits_in.reshape({-1}).contiguous().view(at::kByte);
  const int64_t nbytes = bits.numel() / 8;
  auto out = at::empty({nbytes}, bits.options());
  if (nbytes == 0) return out;
  const int threads = 256;
  const int64_t blocks = (nbytes + threads - 1) / threads;
  TORCH_CHECK(blocks <= 0x7fffffffLL, what, ": too many bits for one launch");
  packbits_kernel<<<static_cast<unsigned int>(blocks), threads, 0,
                    c10::cuda::getCurrentCUDAStream()>>>(bits.data_ptr<uint8_t>(), nbytes,
                                                        out.data_ptr<uint8_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace colbert_tap

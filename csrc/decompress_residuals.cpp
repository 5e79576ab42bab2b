#include "colbert_tap.h"
#include "residual_codec.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <atomic>

namespace colbert_tap {
namespace {

// For every possible byte, the bucket indices of the 8/nbits dimensions it
// holds.  Bits are read from the most significant end of the byte, and within
// one dimension the first bit read is the least significant bit of its bucket
// index (the compressor emits LSB first and packs MSB first).
using ByteTable = std::array<std::array<uint8_t, 8>, 256>;

ByteTable make_byte_table(int64_t nbits) {
  ByteTable table{};
  const int per_byte = static_cast<int>(8 / nbits);
  for (int b = 0; b < 256; ++b) {
    for (int g = 0; g < per_byte; ++g) {
      int bucket = 0;
      for (int j = 0; j < nbits; ++j) {
        const int bit_pos = g * static_cast<int>(nbits) + j;  // 0 = most significant bit
        const int bit = (b >> (7 - bit_pos)) & 1;
        bucket |= bit << j;
      }
      table[b][g] = static_cast<uint8_t>(bucket);
    }
  }
  return table;
}

// For every possible byte, the bucket weights of the dimensions it holds: one
// lookup per byte instead of a bucket lookup and a weight lookup per dimension.
using WeightTable = std::array<std::array<float, 8>, 256>;

struct Codec {
  const float* centroids;
  const float* weights;
  int64_t ncentroids;
  int64_t dim;
  int64_t packed_dim;
  int64_t per_byte;
  ByteTable table;
  WeightTable byte_weights;
};

// The checked, contiguous inputs of one decompression call; the Codec points
// into these tensors, so they live as long as it does.
struct Inputs {
  at::Tensor codes, residuals, centroids, weights;
  Codec codec;
};

Inputs check_inputs(const torch::Tensor& codes_in, const torch::Tensor& residuals_in,
                    const torch::Tensor& centroids_in, const torch::Tensor& bucket_weights_in,
                    int64_t nbits, const char* what) {
  check_cpu(codes_in, what, "codes");
  check_cpu(residuals_in, what, "residuals");
  check_cpu(centroids_in, what, "centroids");
  check_cpu(bucket_weights_in, what, "bucket_weights");
  check_residual_layout(codes_in, residuals_in, centroids_in, bucket_weights_in, nbits, what);
  TORCH_CHECK(centroids_in.scalar_type() == torch::kFloat, what,
              ": centroids must be float32, got ", centroids_in.scalar_type());
  TORCH_CHECK(bucket_weights_in.scalar_type() == torch::kFloat, what,
              ": bucket_weights must be float32, got ", bucket_weights_in.scalar_type());
  Inputs in{codes_in.contiguous(), residuals_in.contiguous(), centroids_in.contiguous(),
            bucket_weights_in.contiguous(), Codec{}};
  Codec& c = in.codec;
  c.centroids = in.centroids.data_ptr<float>();
  c.weights = in.weights.data_ptr<float>();
  c.ncentroids = in.centroids.size(0);
  c.dim = in.centroids.size(1);
  c.packed_dim = in.residuals.size(1);
  c.per_byte = 8 / nbits;
  c.table = make_byte_table(nbits);
  for (int b = 0; b < 256; ++b) {
    c.byte_weights[b].fill(0.0f);
    for (int64_t g = 0; g < c.per_byte; ++g) c.byte_weights[b][g] = c.weights[c.table[b][g]];
  }
  return in;
}

// PER_BYTE (dimensions per packed byte: 8 / nbits) as a constant lets the
// compiler unroll the inner loop; the sum is the same single float addition.
template <int PER_BYTE>
inline bool decode_row(const Codec& c, int64_t code, const uint8_t* packed, float* out) {
  if (code < 0 || code >= c.ncentroids) return false;
  const float* cen = c.centroids + code * c.dim;
  for (int64_t k = 0; k < c.packed_dim; ++k) {
    const float* w = c.byte_weights[packed[k]].data();
    const int64_t d0 = k * PER_BYTE;
    for (int g = 0; g < PER_BYTE; ++g) out[d0 + g] = cen[d0 + g] + w[g];
  }
  return true;
}

template <int PER_BYTE, typename code_t>
void decode_ranges_as(const Codec& c, const code_t* codes, const uint8_t* res,
                      const std::vector<int64_t>& src_start, const std::vector<int64_t>& count,
                      const std::vector<int64_t>& dst_start, float* out) {
  std::atomic<bool> bad_code{false};
  at::parallel_for(0, static_cast<int64_t>(src_start.size()), 4, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t r = 0; r < count[i]; ++r) {
        const int64_t row = src_start[i] + r;
        if (!decode_row<PER_BYTE>(c, static_cast<int64_t>(codes[row]), res + row * c.packed_dim,
                                  out + (dst_start[i] + r) * c.dim)) {
          bad_code.store(true, std::memory_order_relaxed);
        }
      }
    }
  });
  TORCH_CHECK(!bad_code.load(), "decompress: a code is outside [0, ", c.ncentroids, ")");
}

template <typename code_t>
void decode_ranges(const Codec& c, const code_t* codes, const uint8_t* res,
                   const std::vector<int64_t>& src_start, const std::vector<int64_t>& count,
                   const std::vector<int64_t>& dst_start, float* out) {
  switch (c.per_byte) {  // nbits 1, 2, 4, 8 (check_residual_layout)
    case 8: return decode_ranges_as<8>(c, codes, res, src_start, count, dst_start, out);
    case 4: return decode_ranges_as<4>(c, codes, res, src_start, count, dst_start, out);
    case 2: return decode_ranges_as<2>(c, codes, res, src_start, count, dst_start, out);
    default: return decode_ranges_as<1>(c, codes, res, src_start, count, dst_start, out);
  }
}

torch::Tensor decode(const Codec& c, const torch::Tensor& codes, const torch::Tensor& residuals,
                     const std::vector<int64_t>& src_start, const std::vector<int64_t>& count,
                     const std::vector<int64_t>& dst_start, int64_t total) {
  auto out = torch::empty({total, c.dim}, torch::kFloat);
  if (total == 0) return out;
  const uint8_t* res = residuals.data_ptr<uint8_t>();
  if (codes.scalar_type() == torch::kInt) {
    decode_ranges(c, codes.data_ptr<int32_t>(), res, src_start, count, dst_start,
                  out.data_ptr<float>());
  } else {
    decode_ranges(c, codes.data_ptr<int64_t>(), res, src_start, count, dst_start,
                  out.data_ptr<float>());
  }
  return out;
}

}  // namespace

torch::Tensor decompress_rows(const torch::Tensor& codes_in, const torch::Tensor& residuals_in,
                              const torch::Tensor& centroids_in,
                              const torch::Tensor& bucket_weights_in, int64_t nbits) {
  const char* what = "decompress_rows";
  const Inputs in = check_inputs(codes_in, residuals_in, centroids_in, bucket_weights_in, nbits, what);
  const int64_t n = in.codes.size(0);
  // Blocks of rows so the parallel loop has units of useful size.
  const int64_t block = 256;
  std::vector<int64_t> start, count;
  for (int64_t s = 0; s < n; s += block) {
    start.push_back(s);
    count.push_back(std::min(block, n - s));
  }
  return decode(in.codec, in.codes, in.residuals, start, count, start, n);
}

torch::Tensor decompress_residuals(const torch::Tensor& pids_in, const torch::Tensor& doclens_in,
                                   const torch::Tensor& offsets_in, const torch::Tensor& codes_in,
                                   const torch::Tensor& residuals_in,
                                   const torch::Tensor& centroids_in,
                                   const torch::Tensor& bucket_weights_in, int64_t nbits) {
  const char* what = "decompress_residuals";
  const auto pids = ids_as_long(pids_in, what, "pids");
  check_cpu(doclens_in, what, "doclens");
  check_cpu(offsets_in, what, "offsets");
  TORCH_CHECK(doclens_in.dim() == 1 && doclens_in.scalar_type() == torch::kLong, what,
              ": doclens must be a 1-D int64 tensor, got ", doclens_in.dim(), "-D ",
              doclens_in.scalar_type());
  const int64_t ndocs_total = doclens_in.size(0);
  check_offsets(offsets_in, ndocs_total, what);
  const Inputs in = check_inputs(codes_in, residuals_in, centroids_in, bucket_weights_in, nbits, what);
  const auto doclens = doclens_in.contiguous();
  const auto offsets = offsets_in.contiguous();
  const int64_t nrows = in.codes.size(0);
  const int64_t* off = offsets.data_ptr<int64_t>();
  const int64_t* len = doclens.data_ptr<int64_t>();

  const int64_t npids = pids.size(0);
  const int64_t* pid = pids.data_ptr<int64_t>();
  std::vector<int64_t> src_start(npids), count(npids), dst_start(npids);
  int64_t total = 0;
  for (int64_t i = 0; i < npids; ++i) {
    const int64_t p = pid[i];
    TORCH_CHECK(p >= 0 && p < ndocs_total, what, ": pids[", i, "] = ", p, " is outside [0, ",
                ndocs_total, ")");
    TORCH_CHECK(len[p] >= 0 && off[p] >= 0 && off[p] <= nrows && len[p] <= nrows - off[p], what,
                ": document ", p, " = rows [", off[p], ", ", off[p] + len[p],
                ") is outside the ", nrows, " stored embeddings");
    src_start[i] = off[p];
    count[i] = len[p];
    dst_start[i] = total;
    total += len[p];
  }
  return decode(in.codec, in.codes, in.residuals, src_start, count, dst_start, total);
}

}  // namespace colbert_tap

#include "colbert_tap.h"

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

struct Codec {
  const float* centroids;
  const float* weights;
  int64_t ncentroids;
  int64_t dim;
  int64_t packed_dim;
  int64_t per_byte;
  ByteTable table;
};

Codec check_codec(const torch::Tensor& residuals, const torch::Tensor& centroids,
                  const torch::Tensor& bucket_weights, int64_t nbits, const char* what) {
  check_cpu(residuals, what, "residuals");
  check_cpu(centroids, what, "centroids");
  check_cpu(bucket_weights, what, "bucket_weights");
  TORCH_CHECK(nbits == 1 || nbits == 2 || nbits == 4 || nbits == 8, what,
              ": nbits must be 1, 2, 4 or 8, got ", nbits);
  TORCH_CHECK(centroids.dim() == 2 && centroids.scalar_type() == torch::kFloat, what,
              ": centroids must be a 2-D float32 tensor [centroids, dim], got ", centroids.dim(),
              "-D ", centroids.scalar_type());
  TORCH_CHECK(bucket_weights.dim() == 1 && bucket_weights.scalar_type() == torch::kFloat, what,
              ": bucket_weights must be a 1-D float32 tensor, got ", bucket_weights.dim(), "-D ",
              bucket_weights.scalar_type());
  TORCH_CHECK(bucket_weights.size(0) == (int64_t{1} << nbits), what, ": bucket_weights has ",
              bucket_weights.size(0), " entries; nbits=", nbits, " needs ", (int64_t{1} << nbits));
  TORCH_CHECK(residuals.dim() == 2 && residuals.scalar_type() == torch::kByte, what,
              ": residuals must be a 2-D uint8 tensor, got ", residuals.dim(), "-D ",
              residuals.scalar_type());
  const int64_t dim = centroids.size(1);
  TORCH_CHECK(dim % 8 == 0, what, ": dim must be a multiple of 8, got ", dim);
  TORCH_CHECK(residuals.size(1) * 8 == dim * nbits, what, ": residual rows have ",
              residuals.size(1), " bytes; dim=", dim, " at nbits=", nbits, " needs ",
              dim * nbits / 8);
  Codec c;
  c.centroids = centroids.data_ptr<float>();
  c.weights = bucket_weights.data_ptr<float>();
  c.ncentroids = centroids.size(0);
  c.dim = dim;
  c.packed_dim = residuals.size(1);
  c.per_byte = 8 / nbits;
  c.table = make_byte_table(nbits);
  return c;
}

inline bool decode_row(const Codec& c, int64_t code, const uint8_t* packed, float* out) {
  if (code < 0 || code >= c.ncentroids) return false;
  const float* cen = c.centroids + code * c.dim;
  for (int64_t k = 0; k < c.packed_dim; ++k) {
    const auto& buckets = c.table[packed[k]];
    const int64_t d0 = k * c.per_byte;
    for (int64_t g = 0; g < c.per_byte; ++g) {
      out[d0 + g] = cen[d0 + g] + c.weights[buckets[g]];
    }
  }
  return true;
}

template <typename code_t>
void decode_ranges(const Codec& c, const code_t* codes, const uint8_t* res,
                   const std::vector<int64_t>& src_start, const std::vector<int64_t>& count,
                   const std::vector<int64_t>& dst_start, float* out) {
  std::atomic<bool> bad_code{false};
  at::parallel_for(0, static_cast<int64_t>(src_start.size()), 4, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t r = 0; r < count[i]; ++r) {
        const int64_t row = src_start[i] + r;
        if (!decode_row(c, static_cast<int64_t>(codes[row]), res + row * c.packed_dim,
                        out + (dst_start[i] + r) * c.dim)) {
          bad_code.store(true, std::memory_order_relaxed);
        }
      }
    }
  });
  TORCH_CHECK(!bad_code.load(), "decompress: a code is outside [0, ", c.ncentroids, ")");
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

void check_codes(const torch::Tensor& codes, const char* what) {
  check_cpu(codes, what, "codes");
  TORCH_CHECK(codes.dim() == 1, what, ": codes must be 1-D, got ", codes.dim(), "-D");
  TORCH_CHECK(codes.scalar_type() == torch::kInt || codes.scalar_type() == torch::kLong, what,
              ": codes must be int32 or int64, got ", codes.scalar_type());
}

}  // namespace

torch::Tensor decompress_rows(const torch::Tensor& codes_in, const torch::Tensor& residuals_in,
                              const torch::Tensor& centroids_in,
                              const torch::Tensor& bucket_weights_in, int64_t nbits) {
  const char* what = "decompress_rows";
  check_codes(codes_in, what);
  const auto residuals = residuals_in.contiguous();
  const auto centroids = centroids_in.contiguous();
  const auto weights = bucket_weights_in.contiguous();
  const Codec c = check_codec(residuals, centroids, weights, nbits, what);
  TORCH_CHECK(codes_in.size(0) == residuals.size(0), what, ": ", codes_in.size(0),
              " codes but ", residuals.size(0), " residual rows");
  const auto codes = codes_in.contiguous();
  const int64_t n = codes.size(0);
  // Blocks of rows so the parallel loop has units of useful size.
  const int64_t block = 256;
  std::vector<int64_t> start, count;
  for (int64_t s = 0; s < n; s += block) {
    start.push_back(s);
    count.push_back(std::min(block, n - s));
  }
  return decode(c, codes, residuals, start, count, start, n);
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
  check_codes(codes_in, what);
  const auto residuals = residuals_in.contiguous();
  const auto centroids = centroids_in.contiguous();
  const auto weights = bucket_weights_in.contiguous();
  const Codec c = check_codec(residuals, centroids, weights, nbits, what);
  // The index pads codes/residuals with extra rows; only equal counts matter.
  TORCH_CHECK(codes_in.size(0) == residuals.size(0), what, ": ", codes_in.size(0),
              " codes but ", residuals.size(0), " residual rows");
  const auto codes = codes_in.contiguous();
  const auto doclens = doclens_in.contiguous();
  const auto offsets = offsets_in.contiguous();
  const int64_t nrows = codes.size(0);
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
  return decode(c, codes, residuals, src_start, count, dst_start, total);
}

}  // namespace colbert_tap

// Declarations shared by the CPU extension sources and their binding file.
// Semantics and argument conventions are documented in colbert/search/extensions.py;
// colbert/search/reference.py holds the pure-torch definitions these must match.
#pragma once

#include <torch/extension.h>

#include <cstdint>
#include <vector>

namespace colbert_tap {

// Start row of each segment.  Callers may pass either n starts or the n+1
// boundaries of a cumulative sum; the trailing end entry is not needed because
// the lengths tensor already gives each segment's extent.
inline void check_offsets(const torch::Tensor& offsets, int64_t n, const char* what) {
  TORCH_CHECK(offsets.dim() == 1, what, ": offsets must be 1-D, got ", offsets.dim(), "-D");
  TORCH_CHECK(offsets.scalar_type() == torch::kLong, what, ": offsets must be int64, got ",
              offsets.scalar_type());
  TORCH_CHECK(offsets.size(0) == n || offsets.size(0) == n + 1, what, ": offsets has ",
              offsets.size(0), " entries; expected ", n, " or ", n + 1);
}

inline void check_cpu(const torch::Tensor& t, const char* what, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), what, ": ", name, " must be a CPU tensor, got ", t.device());
}

// Ids may be int32 (what the index stores) or int64 (what torch ops produce);
// other dtypes are a caller bug, not something to convert silently.
inline torch::Tensor ids_as_long(const torch::Tensor& ids, const char* what, const char* name) {
  check_cpu(ids, what, name);
  TORCH_CHECK(ids.dim() == 1, what, ": ", name, " must be 1-D, got ", ids.dim(), "-D");
  TORCH_CHECK(ids.scalar_type() == torch::kInt || ids.scalar_type() == torch::kLong, what, ": ",
              name, " must be int32 or int64, got ", ids.scalar_type());
  return ids.to(torch::kLong).contiguous();
}

torch::Tensor segmented_maxsim(const torch::Tensor& scores, const torch::Tensor& lengths);

torch::Tensor column_argmax(const torch::Tensor& scores);

torch::Tensor segmented_lookup(const torch::Tensor& packed, const torch::Tensor& offsets,
                               const torch::Tensor& lengths, const torch::Tensor& ids);

torch::Tensor filter_pids(const torch::Tensor& pids, const torch::Tensor& centroid_scores,
                          const torch::Tensor& codes, const torch::Tensor& doclens,
                          const torch::Tensor& offsets, const torch::Tensor& keep,
                          int64_t ndocs);

torch::Tensor decompress_rows(const torch::Tensor& codes, const torch::Tensor& residuals,
                              const torch::Tensor& centroids, const torch::Tensor& bucket_weights,
                              int64_t nbits);

torch::Tensor decompress_residuals(const torch::Tensor& pids, const torch::Tensor& doclens,
                                   const torch::Tensor& offsets, const torch::Tensor& codes,
                                   const torch::Tensor& residuals, const torch::Tensor& centroids,
                                   const torch::Tensor& bucket_weights, int64_t nbits);

}  // namespace colbert_tap

#include "colbert_tap.h"

#include <ATen/Parallel.h>

#include <cstring>

namespace colbert_tap {

torch::Tensor segmented_lookup(const torch::Tensor& packed_in, const torch::Tensor& offsets_in,
                               const torch::Tensor& lengths_in, const torch::Tensor& ids_in) {
  const char* what = "segmented_lookup";
  check_cpu(packed_in, what, "packed");
  check_cpu(offsets_in, what, "offsets");
  check_cpu(lengths_in, what, "lengths");
  TORCH_CHECK(packed_in.dim() >= 1, what, ": packed must have at least one dimension");
  TORCH_CHECK(lengths_in.dim() == 1, what, ": lengths must be 1-D, got ", lengths_in.dim(), "-D");
  TORCH_CHECK(lengths_in.scalar_type() == torch::kLong, what, ": lengths must be int64, got ",
              lengths_in.scalar_type());
  const int64_t nseg = lengths_in.size(0);
  check_offsets(offsets_in, nseg, what);
  const auto ids = ids_as_long(ids_in, what, "ids");

  // Rows are copied as raw bytes, so any dtype works; contiguity is what makes
  // a row range one memcpy.
  const auto packed = packed_in.contiguous();
  const auto offsets = offsets_in.contiguous();
  const auto lengths = lengths_in.contiguous();
  const int64_t nrows = packed.size(0);
  const int64_t row_bytes = nrows == 0 ? 0 : packed.nbytes() / nrows;
  const int64_t nids = ids.size(0);
  const int64_t* id = ids.data_ptr<int64_t>();
  const int64_t* off = offsets.data_ptr<int64_t>();
  const int64_t* len = lengths.data_ptr<int64_t>();

  std::vector<int64_t> dst_start(nids);
  int64_t total = 0;
  for (int64_t i = 0; i < nids; ++i) {
    const int64_t s = id[i];
    TORCH_CHECK(s >= 0 && s < nseg, what, ": ids[", i, "] = ", s, " is outside [0, ", nseg, ")");
    TORCH_CHECK(len[s] >= 0, what, ": lengths[", s, "] = ", len[s], " is negative");
    TORCH_CHECK(off[s] >= 0 && off[s] <= nrows && len[s] <= nrows - off[s], what, ": segment ", s, " = rows [",
                off[s], ", ", off[s] + len[s], ") is outside packed's ", nrows, " rows");
    dst_start[i] = total;
    total += len[s];
  }

  auto sizes = packed.sizes().vec();
  sizes[0] = total;
  auto out = torch::empty(sizes, packed.options());
  if (total == 0 || row_bytes == 0) return out;

  const char* src = static_cast<const char*>(packed.data_ptr());
  char* dst = static_cast<char*>(out.data_ptr());
  at::parallel_for(0, nids, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t s = id[i];
      std::memcpy(dst + dst_start[i] * row_bytes, src + off[s] * row_bytes, len[s] * row_bytes);
    }
  });
  return out;
}

}  // namespace colbert_tap

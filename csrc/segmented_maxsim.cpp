#include "colbert_tap.h"

#include <ATen/Parallel.h>

#include <algorithm>

namespace colbert_tap {

torch::Tensor segmented_maxsim(const torch::Tensor& scores_in, const torch::Tensor& lengths_in) {
  const char* what = "segmented_maxsim";
  check_cpu(scores_in, what, "scores");
  check_cpu(lengths_in, what, "lengths");
  TORCH_CHECK(scores_in.dim() == 2, what, ": scores must be 2-D [rows, query_tokens], got ",
              scores_in.dim(), "-D");
  TORCH_CHECK(scores_in.scalar_type() == torch::kFloat, what, ": scores must be float32, got ",
              scores_in.scalar_type());
  TORCH_CHECK(lengths_in.dim() == 1, what, ": lengths must be 1-D, got ", lengths_in.dim(), "-D");
  TORCH_CHECK(lengths_in.scalar_type() == torch::kLong, what, ": lengths must be int64, got ",
              lengths_in.scalar_type());

  const auto scores = scores_in.contiguous();
  const auto lengths = lengths_in.contiguous();
  const int64_t total_rows = scores.size(0);
  const int64_t nq = scores.size(1);
  const int64_t ndocs = lengths.size(0);
  const int64_t* len = lengths.data_ptr<int64_t>();

  // Validated up front so the parallel region below cannot read out of bounds.
  std::vector<int64_t> starts(ndocs);
  int64_t acc = 0;
  for (int64_t i = 0; i < ndocs; ++i) {
    TORCH_CHECK(len[i] >= 0, what, ": lengths[", i, "] = ", len[i], " is negative");
    starts[i] = acc;
    acc += len[i];
    TORCH_CHECK(acc <= total_rows, what, ": lengths sum past the ", total_rows, " score rows");
  }
  TORCH_CHECK(acc == total_rows, what, ": lengths sum to ", acc, " but scores has ", total_rows,
              " rows");

  auto maxima = torch::empty({ndocs, nq}, scores.options());
  float* dst = maxima.data_ptr<float>();
  const float* src = scores.data_ptr<float>();

  // Small grain: a document is cheap, but documents vary in length a lot.
  const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(1, nq));
  at::parallel_for(0, ndocs, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      // Starting at 0 reproduces upstream's CPU behaviour: a query token whose
      // similarities are all negative contributes 0, not its largest negative.
      float* __restrict__ best = dst + i * nq;
      std::fill(best, best + nq, 0.0f);
      const float* __restrict__ row = src + starts[i] * nq;
      for (int64_t r = 0; r < len[i]; ++r, row += nq) {
        // Branch-free (a select per lane) so the compiler vectorises it; a NaN wins and stays, as
        // in torch's amax, so the search's finite-score check still sees it.
        for (int64_t t = 0; t < nq; ++t) {
          const float v = row[t];
          const float b = best[t];
          best[t] = (v > b || v != v) ? v : b;
        }
      }
    }
  });
  // The sum over query tokens is torch's own reduction of the [ndocs, nq]
  // maxima, as upstream's kernel ends: a hand-written loop adds in another
  // order and lands a few ULPs away from the scores colbert-ai returns.
  return maxima.sum(1);
}

}  // namespace colbert_tap

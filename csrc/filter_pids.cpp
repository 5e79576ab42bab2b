#include "colbert_tap.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>

namespace colbert_tap {
namespace {

// The per-token maximum starts here rather than at -inf so that a document
// none of whose centroids survive the keep mask still gets a finite score.
constexpr float kEmptyMax = -9999.0f;

struct Candidate {
  int64_t pid;
  float score;
};

// NaN would break the strict weak ordering std::partial_sort relies on (and
// that is undefined behaviour, not just a wrong answer), so it ranks lowest.
inline float rank_key(float s) {
  return std::isnan(s) ? -std::numeric_limits<float>::infinity() : s;
}

// Best first; equal scores put the larger pid first.  A total order on
// distinct pids, so the result does not depend on how many threads scored.
inline bool better(const Candidate& a, const Candidate& b) {
  const float ka = rank_key(a.score), kb = rank_key(b.score);
  if (ka != kb) return ka > kb;
  return a.pid > b.pid;
}

template <typename code_t>
void score_docs(std::vector<Candidate>& cands, const code_t* codes, const int64_t* off,
                const int64_t* len, const float* S, const bool* keep, int64_t ncentroids,
                int64_t nq, std::atomic<bool>& bad_code) {
  at::parallel_for(0, static_cast<int64_t>(cands.size()), 16, [&](int64_t begin, int64_t end) {
    std::vector<float> best(nq);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t pid = cands[i].pid;
      std::fill(best.begin(), best.end(), kEmptyMax);
      const code_t* c = codes + off[pid];
      for (int64_t j = 0; j < len[pid]; ++j) {
        const int64_t code = static_cast<int64_t>(c[j]);
        if (code < 0 || code >= ncentroids) {
          bad_code.store(true, std::memory_order_relaxed);
          continue;
        }
        if (keep != nullptr && !keep[code]) continue;
        const float* row = S + code * nq;
        // An unconditional store, so that the compiler vectorises the loop (a conditional one
        // it cannot, without masked stores); the same comparison, so the same maxima.
        float* b = best.data();
        for (int64_t t = 0; t < nq; ++t) {
          b[t] = row[t] > b[t] ? row[t] : b[t];
        }
      }
      float sum = 0.0f;
      for (int64_t t = 0; t < nq; ++t) sum += best[t];
      cands[i].score = sum;
    }
  });
}

template <typename code_t>
std::vector<Candidate> two_pass(std::vector<Candidate> cands, const code_t* codes,
                                const int64_t* off, const int64_t* len, const float* S,
                                const bool* keep, int64_t ncentroids, int64_t nq, int64_t ndocs) {
  std::atomic<bool> bad_code{false};

  // Pass A: only centroids that clear the threshold count.
  score_docs(cands, codes, off, len, S, keep, ncentroids, nq, bad_code);
  TORCH_CHECK(!bad_code.load(), "filter_pids: a code of a candidate document is outside [0, ",
              ncentroids, ")");
  const size_t keep_a = std::min<size_t>(static_cast<size_t>(ndocs), cands.size());
  std::partial_sort(cands.begin(), cands.begin() + keep_a, cands.end(), better);
  cands.resize(keep_a);

  // Pass B: survivors rescored with every centroid.
  score_docs(cands, codes, off, len, S, static_cast<const bool*>(nullptr), ncentroids, nq,
             bad_code);
  const size_t keep_b = std::min<size_t>(static_cast<size_t>(ndocs / 4), cands.size());
  std::partial_sort(cands.begin(), cands.begin() + keep_b, cands.end(), better);
  cands.resize(keep_b);
  return cands;
}

}  // namespace

torch::Tensor filter_pids(const torch::Tensor& pids_in, const torch::Tensor& centroid_scores_in,
                          const torch::Tensor& codes_in, const torch::Tensor& doclens_in,
                          const torch::Tensor& offsets_in, const torch::Tensor& keep_in,
                          int64_t ndocs) {
  const char* what = "filter_pids";
  const auto pids = ids_as_long(pids_in, what, "pids");
  check_cpu(centroid_scores_in, what, "centroid_scores");
  check_cpu(codes_in, what, "codes");
  check_cpu(doclens_in, what, "doclens");
  check_cpu(offsets_in, what, "offsets");
  check_cpu(keep_in, what, "keep");
  TORCH_CHECK(centroid_scores_in.dim() == 2, what,
              ": centroid_scores must be 2-D [centroids, query_tokens], got ",
              centroid_scores_in.dim(), "-D");
  TORCH_CHECK(centroid_scores_in.scalar_type() == torch::kFloat, what,
              ": centroid_scores must be float32, got ", centroid_scores_in.scalar_type());
  TORCH_CHECK(codes_in.dim() == 1, what, ": codes must be 1-D, got ", codes_in.dim(), "-D");
  TORCH_CHECK(codes_in.scalar_type() == torch::kInt || codes_in.scalar_type() == torch::kLong,
              what, ": codes must be int32 or int64, got ", codes_in.scalar_type());
  TORCH_CHECK(doclens_in.dim() == 1 && doclens_in.scalar_type() == torch::kLong, what,
              ": doclens must be a 1-D int64 tensor, got ", doclens_in.dim(), "-D ",
              doclens_in.scalar_type());
  const int64_t ndocs_total = doclens_in.size(0);
  check_offsets(offsets_in, ndocs_total, what);
  const int64_t ncentroids = centroid_scores_in.size(0);
  TORCH_CHECK(keep_in.dim() == 1 && keep_in.scalar_type() == torch::kBool, what,
              ": keep must be a 1-D bool tensor, got ", keep_in.dim(), "-D ",
              keep_in.scalar_type());
  TORCH_CHECK(keep_in.size(0) == ncentroids, what, ": keep has ", keep_in.size(0),
              " entries but centroid_scores has ", ncentroids, " rows");
  TORCH_CHECK(ndocs >= 0, what, ": ndocs must be >= 0, got ", ndocs);

  const auto S = centroid_scores_in.contiguous();
  const auto codes = codes_in.contiguous();
  const auto doclens = doclens_in.contiguous();
  const auto offsets = offsets_in.contiguous();
  const auto keep = keep_in.contiguous();
  const int64_t nq = S.size(1);
  const int64_t ncodes = codes.size(0);
  const int64_t* off = offsets.data_ptr<int64_t>();
  const int64_t* len = doclens.data_ptr<int64_t>();

  const int64_t npids = pids.size(0);
  const int64_t* pid = pids.data_ptr<int64_t>();
  std::vector<Candidate> cands(npids);
  for (int64_t i = 0; i < npids; ++i) {
    const int64_t p = pid[i];
    TORCH_CHECK(p >= 0 && p < ndocs_total, what, ": pids[", i, "] = ", p, " is outside [0, ",
                ndocs_total, ")");
    // Returned as int32, like the index's pids.
    TORCH_CHECK(p <= std::numeric_limits<int32_t>::max(), what, ": pid ", p, " exceeds int32");
    TORCH_CHECK(len[p] >= 0 && off[p] >= 0 && off[p] <= ncodes && len[p] <= ncodes - off[p],
                what, ": document ", p, " = codes [", off[p], ", ", off[p] + len[p],
                ") is outside the ", ncodes, " codes");
    cands[i] = Candidate{p, 0.0f};
  }

  std::vector<Candidate> kept;
  if (codes.scalar_type() == torch::kInt) {
    kept = two_pass(std::move(cands), codes.data_ptr<int32_t>(), off, len, S.data_ptr<float>(),
                    keep.data_ptr<bool>(), ncentroids, nq, ndocs);
  } else {
    kept = two_pass(std::move(cands), codes.data_ptr<int64_t>(), off, len, S.data_ptr<float>(),
                    keep.data_ptr<bool>(), ncentroids, nq, ndocs);
  }

  auto out = torch::empty({static_cast<int64_t>(kept.size())}, torch::kInt);
  int32_t* dst = out.data_ptr<int32_t>();
  for (size_t i = 0; i < kept.size(); ++i) dst[i] = static_cast<int32_t>(kept[i].pid);
  return out;
}

}  // namespace colbert_tap

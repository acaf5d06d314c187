// Threading model. The cache that calls these kernels is owned by one engine thread, and so are
// its page pool and block tables; nothing here takes a lock. Parallelism is inside a kernel only:
// decode attention splits its (sequence, KV head) pairs over ATen's intra-op thread pool (OpenMP
// in this build) with at::parallel_for and a grain of 1, because one pair is already a long loop
// over the sequence's tokens and the pairs' lengths differ widely, so small chunks balance best.
// A pair reads only page memory, which no one writes during the call, writes only its own G
// output rows, and keeps its scores and accumulators in scratch private to the calling thread, so
// pairs never share a written byte. The in-place gather splits over KV heads, whose rows within a
// page are disjoint. Writes and reads of appended tokens are memcpy-bound and stay on the caller's
// thread. When called from inside another parallel region, at::parallel_for runs inline.
#include "kvcache/cpu_ops.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace vlc::kvcache {
namespace {

// Offsets, in floats, within storage [num_pages, 2, kv_heads, B, head_dim].
struct PageLayout {
  int64_t kv_heads, page_tokens, head_dim;
  int64_t row() const { return head_dim; }
  int64_t head() const { return page_tokens * head_dim; }
  int64_t half() const { return kv_heads * head(); }  // from a page's K to its V
  int64_t page() const { return 2 * half(); }
  // Row of token offset `off` of head `h` in `page`: its K; add half() for its V.
  int64_t KeyRow(int32_t page_id, int64_t h, int64_t off) const {
    return page_id * page() + h * head() + off * row();
  }
};

PageLayout CheckStorage(const at::Tensor& storage) {
  TORCH_CHECK(storage.dim() == 5 && storage.size(1) == 2,
              "KV storage must be [num_pages, 2, kv_heads, page_tokens, head_dim], got ",
              storage.sizes());
  TORCH_CHECK(storage.scalar_type() == at::kFloat, "KV storage must be float32");
  TORCH_CHECK(storage.is_contiguous(), "KV storage must be contiguous");
  return {storage.size(2), storage.size(3), storage.size(4)};
}

// Calls fn(page_id, offset_in_page, index_from_first, count) for each run of tokens
// [first, end) that lies in one page, so the inner loops see plain contiguous rows.
template <typename Fn>
void ForEachPageRun(const int32_t* pages, int64_t page_tokens, int64_t first, int64_t end,
                    Fn&& fn) {
  for (int64_t t = first; t < end;) {
    const int64_t off = t % page_tokens;
    const int64_t count = std::min(page_tokens - off, end - t);
    fn(pages[t / page_tokens], off, t - first, count);
    t += count;
  }
}

inline float Dot(const float* a, const float* b, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

inline void Axpy(float alpha, const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// A run of `count` consecutive K rows of one page against the group's queries, and the same for
// V rows into the group's accumulators: decode attention's inner loops, compiled for AVX-512,
// AVX2 and the baseline and chosen by the CPU at load time (the project builds for baseline
// x86-64, where these loops run 4 floats wide).
__attribute__((target_clones("avx512f", "avx2,fma", "default"))) void ScoreRun(
    const float* q, int64_t group, const float* k, int64_t count, int64_t d, float scale,
    float* scores, int64_t stride) {
  for (int64_t j = 0; j < count; ++j, k += d) {
    for (int64_t g = 0; g < group; ++g) scores[g * stride + j] = Dot(q + g * d, k, d) * scale;
  }
}

__attribute__((target_clones("avx512f", "avx2,fma", "default"))) void AccumulateRun(
    const float* weights, int64_t group, const float* v, int64_t count, int64_t d,
    int64_t stride, float* acc) {
  for (int64_t j = 0; j < count; ++j, v += d) {
    for (int64_t g = 0; g < group; ++g) Axpy(weights[g * stride + j], v, acc + g * d, d);
  }
}

// Checks k or v [kv_heads, t, head_dim] against the layout and returns it contiguous float32.
at::Tensor TokensArg(const at::Tensor& x, const PageLayout& layout, const char* name) {
  TORCH_CHECK(x.dim() == 3 && x.size(0) == layout.kv_heads && x.size(2) == layout.head_dim, name,
              " must be [", layout.kv_heads, ", tokens, ", layout.head_dim, "], got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat, name, " must be float32");
  return x.contiguous();
}

// `x` as a contiguous float32 tensor of `sizes`, reusing it when it already is one.
void EnsureOutput(at::Tensor& x, at::IntArrayRef sizes) {
  if (!x.defined() || x.sizes() != sizes || x.scalar_type() != at::kFloat || !x.is_contiguous()) {
    x = at::empty(sizes, at::TensorOptions().dtype(at::kFloat));
  }
}

}  // namespace

void PagedDecodeAttention(const at::Tensor& storage, const std::vector<PagedSeqView>& seqs,
                          const at::Tensor& q, double scale, int64_t window, at::Tensor& out) {
  const PageLayout layout = CheckStorage(storage);
  const int64_t batch = static_cast<int64_t>(seqs.size());
  const int64_t kv_heads = layout.kv_heads, d = layout.head_dim, b_tokens = layout.page_tokens;
  TORCH_CHECK(q.dim() == 3 && q.size(0) == batch && q.size(2) == d && q.size(1) > 0 &&
                  q.size(1) % kv_heads == 0,
              "q must be [", batch, ", a multiple of ", kv_heads, ", ", d, "], got ", q.sizes());
  TORCH_CHECK(q.scalar_type() == at::kFloat, "q must be float32");
  const at::Tensor qc = q.contiguous();
  const int64_t heads = qc.size(1), group = heads / kv_heads;
  EnsureOutput(out, qc.sizes());

  const float* base = storage.data_ptr<float>();
  const float* q_data = qc.data_ptr<float>();
  float* out_data = out.data_ptr<float>();
  const float fscale = static_cast<float>(scale);

  at::parallel_for(0, batch * kv_heads, 1, [&](int64_t begin, int64_t end) {
    // Scratch of this thread, reused across its pairs: scores [group][n], accumulators [group][d].
    std::vector<float> scores;
    std::vector<float> acc(group * d);
    std::vector<float> inv(group);  // 1 / softmax denominator per query head
    for (int64_t pair = begin; pair < end; ++pair) {
      const int64_t b = pair / kv_heads, h = pair % kv_heads;
      const PagedSeqView& seq = seqs[b];
      const int64_t first = window > 0 ? std::max<int64_t>(0, seq.length - window) : 0;
      const int64_t n = seq.length - first;
      // Query heads h*group .. h*group + group - 1 share KV head h (GQA).
      const float* qh = q_data + (b * heads + h * group) * d;
      float* oh = out_data + (b * heads + h * group) * d;
      if (n <= 0) {
        std::fill(oh, oh + group * d, 0.f);  // nothing to attend to
        continue;
      }
      scores.resize(group * n);

      // Scores, one K row at a time for all the group's queries, so each row is loaded once.
      ForEachPageRun(seq.pages, b_tokens, first, seq.length,
                     [&](int32_t page, int64_t off, int64_t i0, int64_t count) {
                       ScoreRun(qh, group, base + layout.KeyRow(page, h, off), count, d, fscale,
                                scores.data() + i0, n);
                     });

      // Stable softmax per query head: subtract the max before exp; normalise at the end.
      for (int64_t g = 0; g < group; ++g) {
        float* s = scores.data() + g * n;
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t i = 0; i < n; ++i) m = std::max(m, s[i]);
        float sum = 0.f;
        for (int64_t i = 0; i < n; ++i) {
          s[i] = std::exp(s[i] - m);
          sum += s[i];
        }
        inv[g] = 1.f / sum;
      }

      // Weighted sum of V, again one row for the whole group.
      std::fill(acc.begin(), acc.end(), 0.f);
      ForEachPageRun(seq.pages, b_tokens, first, seq.length,
                     [&](int32_t page, int64_t off, int64_t i0, int64_t count) {
                       AccumulateRun(scores.data() + i0, group,
                                     base + layout.KeyRow(page, h, off) + layout.half(), count, d,
                                     n, acc.data());
                     });
      for (int64_t g = 0; g < group; ++g) {
        const float* a = acc.data() + g * d;
        float* o = oh + g * d;
#pragma omp simd
        for (int64_t i = 0; i < d; ++i) o[i] = a[i] * inv[g];
      }
    }
  });
}

void PagedWrite(at::Tensor& storage, const int32_t* pages, int64_t start, const at::Tensor& k,
                const at::Tensor& v) {
  const PageLayout layout = CheckStorage(storage);
  const at::Tensor kc = TokensArg(k, layout, "k");
  const at::Tensor vc = TokensArg(v, layout, "v");
  TORCH_CHECK(kc.sizes() == vc.sizes(), "k ", kc.sizes(), " and v ", vc.sizes(), " differ");
  const int64_t t = kc.size(1), d = layout.head_dim;
  float* base = storage.data_ptr<float>();
  const float* k_data = kc.data_ptr<float>();
  const float* v_data = vc.data_ptr<float>();
  for (int64_t h = 0; h < layout.kv_heads; ++h) {
    ForEachPageRun(pages, layout.page_tokens, start, start + t,
                   [&](int32_t page, int64_t off, int64_t i0, int64_t count) {
                     float* dst = base + layout.KeyRow(page, h, off);
                     const int64_t src = (h * t + i0) * d;
                     const size_t bytes = count * d * sizeof(float);
                     std::memcpy(dst, k_data + src, bytes);
                     std::memcpy(dst + layout.half(), v_data + src, bytes);
                   });
  }
}

void PagedRead(const at::Tensor& storage, const int32_t* pages, int64_t length, at::Tensor& k,
               at::Tensor& v) {
  const PageLayout layout = CheckStorage(storage);
  const int64_t d = layout.head_dim;
  EnsureOutput(k, {layout.kv_heads, length, d});
  EnsureOutput(v, {layout.kv_heads, length, d});
  const float* base = storage.data_ptr<float>();
  float* k_data = k.data_ptr<float>();
  float* v_data = v.data_ptr<float>();
  for (int64_t h = 0; h < layout.kv_heads; ++h) {
    ForEachPageRun(pages, layout.page_tokens, 0, length,
                   [&](int32_t page, int64_t off, int64_t i0, int64_t count) {
                     const float* src = base + layout.KeyRow(page, h, off);
                     const int64_t dst = (h * length + i0) * d;
                     const size_t bytes = count * d * sizeof(float);
                     std::memcpy(k_data + dst, src, bytes);
                     std::memcpy(v_data + dst, src + layout.half(), bytes);
                   });
  }
}

void PagedGatherInPlace(at::Tensor& storage, const int32_t* pages, const at::Tensor& positions) {
  const PageLayout layout = CheckStorage(storage);
  TORCH_CHECK(positions.dim() == 2 && positions.size(0) == layout.kv_heads, "positions must be [",
              layout.kv_heads, ", keep], got ", positions.sizes());
  const at::Tensor pos = positions.to(at::kLong).contiguous();
  const int64_t keep = pos.size(1), b_tokens = layout.page_tokens;
  const int64_t* p = pos.data_ptr<int64_t>();
  // Strictly ascending from >= 0 gives src = positions[h][i] >= i. Token j is written only at
  // step j and read only at the step i <= j whose source it is, so every read precedes the write
  // over it and a single forward pass is safe in place.
  for (int64_t h = 0; h < layout.kv_heads; ++h) {
    for (int64_t i = 0; i < keep; ++i) {
      const int64_t src = p[h * keep + i];
      TORCH_CHECK(src >= 0 && (i == 0 || src > p[h * keep + i - 1]), "positions of head ", h,
                  " must be non-negative and strictly ascending");
    }
  }
  float* base = storage.data_ptr<float>();
  const size_t bytes = layout.head_dim * sizeof(float);
  at::parallel_for(0, layout.kv_heads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t h = begin; h < end; ++h) {
      for (int64_t i = 0; i < keep; ++i) {
        const int64_t src = p[h * keep + i];
        if (src == i) continue;  // tokens before the first eviction stay where they are
        float* to = base + layout.KeyRow(pages[i / b_tokens], h, i % b_tokens);
        const float* from = base + layout.KeyRow(pages[src / b_tokens], h, src % b_tokens);
        std::memcpy(to, from, bytes);
        std::memcpy(to + layout.half(), from + layout.half(), bytes);
      }
    }
  });
}

}  // namespace vlc::kvcache

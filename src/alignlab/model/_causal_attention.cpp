// Fused causal attention for run_with_cache on x86-64 CPUs with AVX2 and FMA.
//
// Why it exists: when the attention pattern is cached it must be materialised, so PyTorch's fused
// scaled_dot_product_attention cannot be used, and the three unfused ops (baddbmm, softmax, bmm)
// each make a pass over [b, h, p, p] whose GEMMs have K or N = d_head (MKL runs them at a third
// of its peak) and whose exp also runs over the masked half. This computes each (batch, head) in
// one pass over the causal triangle only. Built on first use by alignlab/model/_native.py.
//
// Numerics: q is scaled before the product and exp is SLEEF's 1-ulp expf (the one ATen's own
// softmax calls), so scores match the PyTorch path bit for bit on tested shapes and the pattern
// and z to a few float32 ulps (tests/test_native_attention.py).
#include <immintrin.h>
#include <sleef.h>
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

constexpr float NEG_INF = -std::numeric_limits<float>::infinity();
constexpr int MAX_D_HEAD = 64;  // pick() has variants up to 8 AVX registers per row of v
constexpr int MAX_ROWS = 4;     // the largest R in pick(); Scratch::buf holds that many rows

inline float hmax(__m256 x) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

inline float hsum(__m256 x) {
  alignas(32) float l[8];
  _mm256_store_ps(l, x);
  float s = 0.f;
  for (int i = 0; i < 8; ++i) s += l[i];
  return s;
}

struct Scratch {
  std::vector<float> kT, vp, buf;
  Scratch(int64_t p, int64_t dh, int64_t dh8) : kT(dh * ((p + 7) & ~7) + 8), vp(p * dh8 + 8), buf(MAX_ROWS * ((p + 7) & ~7) + 8) {}
};

// One (batch, head). q, k, v: [p, dh]; S, P: [p, p]; z rows zs floats apart. R query rows are
// processed together so every load of k and v feeds R FMAs.
template <int V, int R>
void one_head(const float* q, const float* k, const float* v, const uint8_t* keep, float* S,
              float* P, float* z, int64_t zs, int64_t p, int64_t dh, float scale, Scratch& sc) {
  const int64_t pp = (p + 7) & ~int64_t(7);
  float* kT = sc.kT.data();
  float* vp = sc.vp.data();
  float* buf = sc.buf.data();  // R rows of pp
  for (int64_t d = 0; d < dh; ++d) {
    float* row = kT + d * pp;
    for (int64_t j = 0; j < p; ++j) row[j] = k[j * dh + d];
    for (int64_t j = p; j < pp; ++j) row[j] = 0.f;
  }
  for (int64_t j = 0; j < p; ++j) {
    float* row = vp + j * 8 * V;
    std::memcpy(row, v + j * dh, dh * sizeof(float));
    for (int64_t d = dh; d < 8 * V; ++d) row[d] = 0.f;
  }
  const __m256 zero = _mm256_setzero_ps();
  static_assert(R <= MAX_ROWS && 8 * V <= MAX_D_HEAD, "scratch sizes");
  alignas(32) float qs[R][MAX_D_HEAD];
  for (int64_t i0 = 0; i0 < p; i0 += R) {
    const int r_n = static_cast<int>(std::min<int64_t>(R, p - i0));
    const int64_t n_last = i0 + r_n, nb = (n_last + 7) & ~int64_t(7);
    for (int r = 0; r < R; ++r)
      for (int64_t d = 0; d < dh; ++d) qs[r][d] = r < r_n ? q[(i0 + r) * dh + d] * scale : 0.f;
    for (int64_t j = 0; j < nb; j += 8) {
      __m256 acc[R];
      for (int r = 0; r < R; ++r) acc[r] = zero;
      for (int64_t d = 0; d < dh; ++d) {
        const __m256 kv = _mm256_loadu_ps(kT + d * pp + j);
        for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(&qs[r][d]), kv, acc[r]);
      }
      for (int r = 0; r < R; ++r) _mm256_storeu_ps(buf + r * pp + j, acc[r]);
    }
    for (int r = 0; r < r_n; ++r) {
      const int64_t i = i0 + r, n = i + 1;
      float* b = buf + r * pp;
      if (keep != nullptr)
        for (int64_t j = 0; j < i; ++j)
          if (!keep[j]) b[j] = NEG_INF;
      for (int64_t j = n; j < nb; ++j) b[j] = NEG_INF;
      float* srow = S + i * p;
      std::memcpy(srow, b, n * sizeof(float));
      std::fill(srow + n, srow + p, NEG_INF);
      __m256 mx = _mm256_set1_ps(NEG_INF);
      for (int64_t j = 0; j < nb; j += 8) mx = _mm256_max_ps(mx, _mm256_loadu_ps(b + j));
      const __m256 mv = _mm256_set1_ps(hmax(mx));
      __m256 sv = zero;
      for (int64_t j = 0; j < nb; j += 8) {
        const __m256 e = Sleef_expf8_u10avx2(_mm256_sub_ps(_mm256_loadu_ps(b + j), mv));
        _mm256_storeu_ps(b + j, e);
        sv = _mm256_add_ps(sv, e);
      }
      const __m256 inv = _mm256_set1_ps(1.f / hsum(sv));
      for (int64_t j = 0; j < nb; j += 8) _mm256_storeu_ps(b + j, _mm256_mul_ps(_mm256_loadu_ps(b + j), inv));
      float* prow = P + i * p;
      std::memcpy(prow, b, n * sizeof(float));
      std::fill(prow + n, prow + p, 0.f);
    }
    for (int r = r_n; r < R; ++r) std::fill(buf + r * pp, buf + r * pp + nb, 0.f);
    __m256 za[R][V];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < V; ++c) za[r][c] = zero;
    for (int64_t j = 0; j < n_last; ++j) {
      const float* vj = vp + j * 8 * V;
      for (int c = 0; c < V; ++c) {
        const __m256 vv = _mm256_loadu_ps(vj + 8 * c);
        for (int r = 0; r < R; ++r) za[r][c] = _mm256_fmadd_ps(_mm256_broadcast_ss(buf + r * pp + j), vv, za[r][c]);
      }
    }
    for (int r = 0; r < r_n; ++r) {
      alignas(32) float zrow[8 * V];
      for (int c = 0; c < V; ++c) _mm256_store_ps(zrow + 8 * c, za[r][c]);
      std::memcpy(z + (i0 + r) * zs, zrow, dh * sizeof(float));
    }
  }
}

using HeadFn = void (*)(const float*, const float*, const float*, const uint8_t*, float*, float*,
                        float*, int64_t, int64_t, int64_t, float, Scratch&);

HeadFn pick(int64_t v) {
  switch (v) {
    case 1: return one_head<1, 4>;
    case 2: return one_head<2, 4>;
    case 3: return one_head<3, 3>;
    case 4: return one_head<4, 2>;
    case 5: return one_head<5, 2>;
    case 6: return one_head<6, 2>;
    case 7: return one_head<7, 1>;
    case 8: return one_head<8, 1>;
    default: return nullptr;
  }
}

}  // namespace

// q, k, v: [b, h, p, dh] contiguous; keep: [b, p] (1 = real token) or null; S, P: [b, h, p, p];
// z: [b, p, h, dh]. Query i sees keys j <= i that are real, and always itself (as
// Transformer.forward's mask does, so a padding row is not all -inf). Returns 0, or 1 if
// dh > 64.
extern "C" int alignlab_causal_attention(const float* q, const float* k, const float* v,
                                         const uint8_t* keep, float* S, float* P, float* z,
                                         int64_t b, int64_t h, int64_t p, int64_t dh, float scale,
                                         int64_t n_threads) {
  const HeadFn fn = pick((dh + 7) / 8);
  if (fn == nullptr) return 1;
  const int64_t n = b * h;
  auto work = [&](int64_t lo, int64_t hi) {
    Scratch sc(p, dh, 8 * ((dh + 7) / 8));
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t bi = t / h, hh = t % h;
      fn(q + t * p * dh, k + t * p * dh, v + t * p * dh, keep ? keep + bi * p : nullptr,
         S + t * p * p, P + t * p * p, z + (bi * p * h + hh) * dh, h * dh, p, dh, scale, sc);
    }
  };
  n_threads = std::max<int64_t>(1, std::min(n_threads, n));
#ifdef _OPENMP
  // Torch's own OpenMP pool (the library resolves torch's libgomp): a private std::thread pool
  // fought torch's spinning workers for the cores and was slower than the PyTorch ops at two
  // threads, where this is faster (benchmarks/RESULTS.md, interp_throughput session 4).
#pragma omp parallel num_threads(static_cast<int>(n_threads))
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t chunk = (n + nt - 1) / nt;
    work(std::min(n, t * chunk), std::min(n, (t + 1) * chunk));
  }
#else
  work(0, n);
#endif
  return 0;
}

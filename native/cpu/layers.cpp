// Row-wise and elementwise layers: RMSNorm, RoPE, SwiGLU, embedding, residual.
// Every parallel loop splits rows (or channels, or elements) into chunks of a fixed size, so
// each output element is computed by the same sequence of operations for any thread count.
// SwiGLU's loops (with a vectorised exp) are in layers_vec_impl.h, one copy per SIMD path;
// this file holds the baseline copy and picks one at run time (the paths may differ in the
// last bit, e.g. through FMA; each is deterministic).
#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>
#include <cstring>
#include <vector>

#include "../kernels.h"
#define WST_VEC_BYTES 16  // the baseline copy: SSE2 on x86-64, NEON on arm64
#include "layers_vec_impl.h"
#include "threadpool.h"

namespace wst {
namespace detail {
const SwigluLoops& swiglu_loops_generic() { return kLoops; }
}  // namespace detail

namespace {

const detail::SwigluLoops& swiglu_loops() {
  static const detail::SwigluLoops* table = [] {
#ifdef WST_HAVE_X86_SIMD
    const char* isa = cpu_isa();
    if (std::strcmp(isa, "avx512") == 0) return &detail::swiglu_loops_avx512();
    if (std::strcmp(isa, "avx2") == 0) return &detail::swiglu_loops_avx2();
#endif
    return &detail::swiglu_loops_generic();
  }();
  return *table;
}

constexpr size_t kRowGrain = 16;           // rows per task for the row-wise layers
constexpr size_t kNormChunk = 64;          // rows per partial dweight in rmsnorm_backward
constexpr size_t kColBlock = 64;           // channels per task for column-parallel passes
constexpr size_t kElemGrain = size_t(1) << 15;  // elements per task for elementwise ops

// Rows per task for rows of C elements: about 16k elements, between 1 and kRowGrain rows.
// Depends on C alone, never on the thread count.
inline size_t row_grain(int C) {
  size_t per = (size_t)(C > 0 ? C : 1);
  size_t g = (size_t(1) << 14) / per;
  return g < 1 ? 1 : (g > kRowGrain ? kRowGrain : g);
}

// Σ x[i]*y[i] in double, with four independent accumulators (fixed order, so deterministic).
inline double dot_f64(const float* x, const float* y, int n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += (double)x[i] * y[i];
    s1 += (double)x[i + 1] * y[i + 1];
    s2 += (double)x[i + 2] * y[i + 2];
    s3 += (double)x[i + 3] * y[i + 3];
  }
  for (; i < n; i++) s0 += (double)x[i] * y[i];
  return (s0 + s1) + (s2 + s3);
}

}  // namespace

// ---------------------------------------------------------------------------------------
// RMSNorm. inp (N,C), weight (C) -> out (N,C), rstd (N)
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                     float eps) {
  parallel_chunks((size_t)N, row_grain(C), [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; r++) {
      const float* x = inp + r * C;
      float* y = out + r * C;
      double ms = dot_f64(x, x, C) / (C > 0 ? C : 1);
      float s = (float)(1.0 / std::sqrt(ms + (double)eps));
      for (int i = 0; i < C; i++) y[i] = (x[i] * s) * weight[i];
      if (rstd) rstd[r] = s;
    }
  });
}

// Forward: out[i] = inp[i] * s * w[i], s = (mean(inp^2) + eps)^-1/2, so ds/dinp[i] = -s^3 inp[i] / C
//   dinp[i] = s * w[i] * dout[i] - s^3 / C * inp[i] * Σ_j dout[j] w[j] inp[j]
//   dweight[i] += Σ_rows dout[i] * inp[i] * s
// dweight is summed per fixed chunk of kNormChunk rows into scratch, then the chunk partials
// are added to dweight in chunk order (column-parallel).
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int N, int C) {
  if (N <= 0 || C <= 0) return;
  size_t n_chunks = ((size_t)N + kNormChunk - 1) / kNormChunk;
  std::vector<float> partial(n_chunks * (size_t)C);
  parallel_for((int)n_chunks, [&](int c) {
    size_t r0 = (size_t)c * kNormChunk, r1 = r0 + kNormChunk < (size_t)N ? r0 + kNormChunk : N;
    float* dw = partial.data() + (size_t)c * C;
    std::memset(dw, 0, sizeof(float) * C);
    for (size_t r = r0; r < r1; r++) {
      const float* x = inp + r * C;
      const float* dy = dout + r * C;
      float* dx = dinp + r * C;
      float s = rstd[r];
      double proj = 0;  // Σ_j dout[j] w[j] inp[j]
      {
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        int i = 0;
        for (; i + 4 <= C; i += 4) {
          s0 += (double)(dy[i] * weight[i]) * x[i];
          s1 += (double)(dy[i + 1] * weight[i + 1]) * x[i + 1];
          s2 += (double)(dy[i + 2] * weight[i + 2]) * x[i + 2];
          s3 += (double)(dy[i + 3] * weight[i + 3]) * x[i + 3];
        }
        for (; i < C; i++) s0 += (double)(dy[i] * weight[i]) * x[i];
        proj = (s0 + s1) + (s2 + s3);
      }
      float k = (float)((double)s * s * s * proj / C);
      for (int i = 0; i < C; i++) {  // dw before dx: dinp may alias dout
        float d = dy[i];
        dw[i] += d * (x[i] * s);
        dx[i] = s * weight[i] * d - k * x[i];
      }
    }
  });
  parallel_chunks((size_t)C, kColBlock, [&](size_t c0, size_t c1) {
    for (size_t i = c0; i < c1; i++) {
      double acc = 0;
      for (size_t c = 0; c < n_chunks; c++) acc += partial[c * C + i];
      dweight[i] += (float)acc;
    }
  });
}

// ---------------------------------------------------------------------------------------
// RoPE, computed the way Hugging Face does in float32:
//   inv_freq[i] = 1 / theta^(float(2i)/D)      (float32)
//   angle = float(pos) * inv_freq[i]           (float32)
//   cos, sin of that float32 angle (evaluated in double, rounded once to float).
namespace {

std::vector<float> rope_inv_freq(int D, float theta) {
  int half = D / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; i++) {
    float e = (float)(2 * i) / (float)D;
    float p = (float)std::pow((double)theta, (double)e);
    inv[i] = 1.0f / p;
  }
  return inv;
}

// Rotates the H heads of token t: y1 = x1 cos - x2 sin, y2 = x2 cos + x1 sin (sin scaled by sign).
inline void rope_rotate(float* out, const float* inp, size_t t, int H, int D, const float* cs,
                        const float* sn, float sign) {
  const int half = D / 2;
  for (int h = 0; h < H; h++) {
    const float* x = inp + ((size_t)t * H + h) * D;
    float* y = out + ((size_t)t * H + h) * D;
    for (int i = 0; i < half; i++) {
      float x1 = x[i], x2 = x[i + half], sv = sign * sn[i];
      y[i] = x1 * cs[i] - x2 * sv;
      y[i + half] = x2 * cs[i] + x1 * sv;
    }
  }
}

// cos / sin of pos * inv_freq[i] for positions [0, n), per (D, theta): computed once (the same
// float values the per-call loop computed), grown on demand, shared by every call and thread.
struct RopeTable {
  int D;
  float theta;
  int n;  // positions held
  std::vector<float> cs, sn;  // (n, D/2)
};

std::shared_ptr<const RopeTable> rope_table(int D, float theta, int max_pos) {
  static std::mutex mu;
  static std::vector<std::shared_ptr<const RopeTable>> tables;
  std::lock_guard<std::mutex> lk(mu);
  for (auto& t : tables)
    if (t->D == D && t->theta == theta && t->n > max_pos) return t;
  const int half = D / 2;
  auto t = std::make_shared<RopeTable>();
  t->D = D;
  t->theta = theta;
  // Grown geometrically, so that a decode walking past the table's end rebuilds it O(log n) times.
  int n = 1024;
  while (n <= max_pos) n *= 2;
  t->n = n;
  t->cs.resize((size_t)t->n * half);
  t->sn.resize((size_t)t->n * half);
  const std::vector<float> inv = rope_inv_freq(D, theta);
  for (int p = 0; p < t->n; p++)
    for (int i = 0; i < half; i++) {
      double a = (double)((float)p * inv[i]);
      t->cs[(size_t)p * half + i] = (float)std::cos(a);
      t->sn[(size_t)p * half + i] = (float)std::sin(a);
    }
  tables.erase(std::remove_if(tables.begin(), tables.end(),
                              [&](const std::shared_ptr<const RopeTable>& o) { return o->D == D && o->theta == theta; }),
               tables.end());
  tables.push_back(t);
  return t;
}

// sign = +1: forward rotation by +angle; sign = -1: the inverse (transpose) rotation.
void rope_apply(float* out, const float* inp, const int32_t* positions, int N, int H, int D,
                float theta, float sign) {
  if (N <= 0 || H <= 0 || D <= 0) return;
  int half = D / 2;
  int max_pos = 0;
  for (int t = 0; t < N; t++) max_pos = std::max(max_pos, positions[t]);
  if (max_pos >= (1 << 16) || *std::min_element(positions, positions + N) < 0) {
    // Out of the table's range (negative or huge positions): compute per call, as before.
    std::vector<float> inv = rope_inv_freq(D, theta);
    parallel_chunks((size_t)N, row_grain(H * D), [&](size_t t0, size_t t1) {
      std::vector<float> cs((size_t)half), sn((size_t)half);
      for (size_t t = t0; t < t1; t++) {
        float pos = (float)positions[t];
        for (int i = 0; i < half; i++) {
          double a = (double)(pos * inv[i]);
          cs[i] = (float)std::cos(a);
          sn[i] = sign * (float)std::sin(a);
        }
        rope_rotate(out, inp, t, H, D, cs.data(), sn.data(), 1.0f);
      }
    });
    return;
  }
  const auto table = rope_table(D, theta, max_pos);
  parallel_chunks((size_t)N, row_grain(H * D), [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; t++) {
      const size_t p = (size_t)positions[t] * half;
      rope_rotate(out, inp, t, H, D, table->cs.data() + p, table->sn.data() + p, sign);
    }
  });
}

}  // namespace

// inp (N,H,D), positions (N) -> out (N,H,D)
void rope_forward(float* out, const float* inp, const int32_t* positions, int N, int H, int D,
                  float theta) {
  rope_apply(out, inp, positions, N, H, D, theta, 1.0f);
}

// Forward: out1 = x1 cos - x2 sin, out2 = x2 cos + x1 sin (an orthogonal rotation), so
//   dx1 = d1 cos + d2 sin, dx2 = d2 cos - d1 sin: the same rotation with sin negated.
void rope_backward(float* dinp, const float* dout, const int32_t* positions, int N, int H, int D,
                   float theta) {
  rope_apply(dinp, dout, positions, N, H, D, theta, -1.0f);
}

// ---------------------------------------------------------------------------------------
// SwiGLU. gate, up (N,C) -> out (N,C) = silu(gate) * up, silu(g) = g / (1 + exp(-g))
void swiglu_forward(float* out, const float* gate, const float* up, int N, int C) {
  size_t n = (size_t)(N > 0 ? N : 0) * (size_t)(C > 0 ? C : 0);
  const auto& loops = swiglu_loops();
  parallel_chunks(n, kElemGrain, [&](size_t b, size_t e) {
    loops.forward(out + b, gate + b, up + b, e - b);
  });
}

// Forward: out = g * sig(g) * u, sig(g) = 1 / (1 + exp(-g))
//   dup = dout * g * sig(g)
//   dgate = dout * u * sig(g) * (1 + g * (1 - sig(g)))
void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate,
                     const float* up, int N, int C) {
  size_t n = (size_t)(N > 0 ? N : 0) * (size_t)(C > 0 ? C : 0);
  const auto& loops = swiglu_loops();
  parallel_chunks(n, kElemGrain, [&](size_t b, size_t e) {
    loops.backward(dgate + b, dup + b, dout + b, gate + b, up + b, e - b);
  });
}

// ---------------------------------------------------------------------------------------
// Embedding. ids (N), table (V,C) -> out (N,C)
void embedding_forward(float* out, const int32_t* ids, const float* table, int N, int V, int C) {
  if (C <= 0) return;
  parallel_chunks((size_t)(N > 0 ? N : 0), row_grain(C), [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; r++)
      std::memcpy(out + r * C, table + (size_t)ids[r] * C, sizeof(float) * C);
  });
}

// Forward: out[n, :] = table[ids[n], :]
//   dtable[ids[n], :] += dout[n, :], for n in increasing order
// Column blocks run in parallel; inside one block the tokens go in order, so repeated ids
// accumulate exactly as the serial loop would.
void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int N, int V, int C) {
  if (N <= 0 || C <= 0) return;
  parallel_chunks((size_t)C, kColBlock, [&](size_t c0, size_t c1) {
    for (int n = 0; n < N; n++) {
      float* dst = dtable + (size_t)ids[n] * C;
      const float* src = dout + (size_t)n * C;
      for (size_t i = c0; i < c1; i++) dst[i] += src[i];
    }
  });
}

// ---------------------------------------------------------------------------------------
// Residual. a, b (n) -> out (n) = a + b
void residual_forward(float* out, const float* a, const float* b, size_t n) {
  parallel_chunks(n, kElemGrain, [&](size_t s, size_t e) {
    for (size_t i = s; i < e; i++) out[i] = a[i] + b[i];
  });
}

// Forward: out = a + b
//   da += dout, db += dout
void residual_backward(float* da, float* db, const float* dout, size_t n) {
  parallel_chunks(n, kElemGrain, [&](size_t s, size_t e) {
    for (size_t i = s; i < e; i++) {
      float d = dout[i];
      da[i] += d;
      db[i] += d;
    }
  });
}

}  // namespace wst

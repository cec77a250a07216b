// Expression blend shapes for CPU: out[n] = sum_k code[n,k] * trilerp(B_k, x[n]) for a dense grid B of C channels
// of F features, stored vertex-major (V, C*F) so a corner's C*F values are one contiguous row (one or two cache
// lines) instead of C scattered gathers. Same vertex indexing and interpolation as a dense level of hashgrid.cpp
// (vertex (i,j,l) at row i + side*(j + side*l), side = r+1). Per point: s = sum_c w_c * row_c (C*F floats), then
// out[f] = sum_k code[k] * s[k*F+f]. Backward: grad_code[k] = sum_f g[f] * s[k*F+f]; the table gradient
// row_c += w_c * code[k] * g[f] goes to per-thread tables (thread 0 writes the result) reduced at the end, so it
// is race-free and deterministic for a given thread count.
#include <torch/extension.h>
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

// corner rows idx[8] and trilinear weights w[8] of point p at resolution r (p clamped to [0,1])
static inline void corners(const float* p, int64_t r, int64_t* idx, float* w) {
  int64_t i0[3];
  float f[3];
  for (int d = 0; d < 3; ++d) {
    const float q = std::fmin(std::fmax(p[d], 0.f), 1.f) * (float)r;
    int64_t i = (int64_t)q;  // q >= 0: truncation is floor
    if (i >= r) i = r - 1;
    i0[d] = i;
    f[d] = q - (float)i;
  }
  const int64_t side = r + 1;
  for (int c = 0; c < 8; ++c) {
    const int cx = c & 1, cy = (c >> 1) & 1, cz = (c >> 2) & 1;
    w[c] = (cx ? f[0] : 1.f - f[0]) * (cy ? f[1] : 1.f - f[1]) * (cz ? f[2] : 1.f - f[2]);
    idx[c] = (i0[0] + cx) + side * ((i0[1] + cy) + side * (i0[2] + cz));
  }
}

constexpr int64_t PB = 16;  // points per block whose corner rows are prefetched together (random rows: latency-bound)

static inline void prefetch_row(const float* row, int64_t n) {
  for (int64_t j = 0; j < n; j += 16) __builtin_prefetch(row + j);
}

// s[j] = sum_c w[c] * table[idx[c], j] for j < CF. CFT: CF known at compile time (0: runtime ``cf``), which
// lets the compiler unroll and vectorise the row loops.
template <int CFT>
static inline void interpolate(const float* __restrict__ table, const int64_t* idx, const float* w, int64_t cf,
                               float* __restrict__ s) {
  const int64_t CF = CFT ? CFT : cf;
  for (int64_t j = 0; j < CF; ++j) s[j] = 0.f;
  for (int c = 0; c < 8; ++c) {
    const float* __restrict__ row = table + idx[c] * CF;
    const float wc = w[c];
    for (int64_t j = 0; j < CF; ++j) s[j] += wc * row[j];
  }
}

constexpr int64_t MAX_CF = 512, MAX_F = 8;  // a blend table: C*F <= 512 columns, F <= 8 features

static void check(const torch::Tensor& x, const torch::Tensor& table, const torch::Tensor& code, int64_t r,
                  int64_t F) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == 3 && x.scalar_type() == torch::kFloat32 && x.is_contiguous(),
              "blend: x must be (N,3) contiguous float32");
  TORCH_CHECK(r >= 1 && table.dim() == 2 && table.size(0) == (r + 1) * (r + 1) * (r + 1) &&
                  table.scalar_type() == torch::kFloat32 && table.is_contiguous(),
              "blend: table must be ((r+1)^3, C*F) contiguous float32");
  TORCH_CHECK(code.dim() == 2 && code.scalar_type() == torch::kFloat32 && code.is_contiguous() &&
                  (code.size(0) == 1 || code.size(0) == x.size(0)) && F >= 1 && code.size(1) * F == table.size(1) &&
                  table.size(1) <= MAX_CF && F <= MAX_F,
              "blend: code must be (1,C) or (N,C) contiguous float32 with C*F <= 512 table columns, F <= 8");
}

// CT, FT: C and F known at compile time (0: the runtime c, f).
template <int CT, int FT>
static void forward_impl(const float* __restrict__ xp, const float* __restrict__ tp, const float* __restrict__ cp,
                         float* __restrict__ op, int64_t N, int64_t c, int64_t f_, bool per_row, int64_t r,
                         int64_t threads) {
  const int64_t C = CT ? CT : c, F = FT ? FT : f_, CF = C * F;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t n0 = 0; n0 < N; n0 += PB) {
    const int64_t nb = std::min<int64_t>(PB, N - n0);
    int64_t idx[PB][8];
    float w[PB][8];
    alignas(64) float s[MAX_CF];
    for (int64_t i = 0; i < nb; ++i) {  // every corner row of the block requested before any is read
      corners(xp + 3 * (n0 + i), r, idx[i], w[i]);
      for (int c = 0; c < 8; ++c) prefetch_row(tp + idx[i][c] * CF, CF);
    }
    for (int64_t i = 0; i < nb; ++i) {
      const int64_t n = n0 + i;
      interpolate<CT * FT>(tp, idx[i], w[i], CF, s);
      const float* cn = cp + (per_row ? n * C : 0);
      float acc[MAX_F] = {};
      for (int64_t k = 0; k < C; ++k)
        for (int64_t f = 0; f < F; ++f) acc[f] += cn[k] * s[k * F + f];
      for (int64_t f = 0; f < F; ++f) op[n * F + f] = acc[f];
    }
  }
}

torch::Tensor blend_forward(torch::Tensor x, torch::Tensor table, torch::Tensor code, int64_t r, int64_t F,
                            int64_t threads) {
  check(x, table, code, r, F);
  const int64_t N = x.size(0), C = code.size(1), CF = C * F;
  const bool per_row = code.size(0) == N && N > 1;
  auto out = torch::zeros({N, F}, x.options());
  const float *xp = x.data_ptr<float>(), *tp = table.data_ptr<float>(), *cp = code.data_ptr<float>();
  float* op = out.data_ptr<float>();
  if (C == 16 && F == 2) forward_impl<16, 2>(xp, tp, cp, op, N, C, F, per_row, r, threads);
  else if (C == 8 && F == 2) forward_impl<8, 2>(xp, tp, cp, op, N, C, F, per_row, r, threads);
  else forward_impl<0, 0>(xp, tp, cp, op, N, C, F, per_row, r, threads);
  return out;
}

// One thread's share of the backward: code gradients (per row into gcp, or summed into gc_shared) and table
// gradients into gt (this thread's table).
template <int CT, int FT>
static void backward_rows(const float* __restrict__ gp, const float* __restrict__ xp, const float* __restrict__ tp,
                          const float* __restrict__ cp, float* __restrict__ gt, float* __restrict__ gcp,
                          float* __restrict__ gc_shared, int64_t c, int64_t f_, bool per_row, int64_t r,
                          int64_t n_begin, int64_t n_end) {
  const int64_t C = CT ? CT : c, F = FT ? FT : f_, CF = C * F;
  alignas(64) float s[MAX_CF];
  alignas(64) float u[MAX_CF];
  for (int64_t n0 = n_begin; n0 < n_end; n0 += PB) {
    const int64_t nb = std::min<int64_t>(PB, n_end - n0);
    int64_t idx[PB][8];
    float w[PB][8];
    for (int64_t i = 0; i < nb; ++i) {
      corners(xp + 3 * (n0 + i), r, idx[i], w[i]);
      for (int c = 0; c < 8; ++c) {
        prefetch_row(tp + idx[i][c] * CF, CF);
        prefetch_row(gt + idx[i][c] * CF, CF);
      }
    }
    for (int64_t i = 0; i < nb; ++i) {
      const int64_t n = n0 + i;
      interpolate<CT * FT>(tp, idx[i], w[i], CF, s);
      const float* g = gp + n * F;
      const float* cn = cp + (per_row ? n * C : 0);
      float* gc = per_row ? gcp + n * C : gc_shared;
      for (int64_t k = 0; k < C; ++k) {
        float a = 0.f;
        for (int64_t f = 0; f < F; ++f) {
          a += g[f] * s[k * F + f];
          u[k * F + f] = cn[k] * g[f];
        }
        gc[k] += a;
      }
      for (int c = 0; c < 8; ++c) {
        float* __restrict__ row = gt + idx[i][c] * CF;
        const float wc = w[i][c];
        for (int64_t j = 0; j < CF; ++j) row[j] += wc * u[j];
      }
    }
  }
}

std::vector<torch::Tensor> blend_backward(torch::Tensor grad, torch::Tensor x, torch::Tensor table,
                                          torch::Tensor code, int64_t r, int64_t F, int64_t threads) {
  check(x, table, code, r, F);
  const int64_t N = x.size(0), C = code.size(1), CF = C * F, V = table.size(0);
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == N && grad.size(1) == F && grad.is_contiguous() &&
                  grad.scalar_type() == torch::kFloat32,
              "blend backward: grad must be (N,F) contiguous float32");
  const bool per_row = code.size(0) == N && N > 1;
  auto g_table = torch::zeros_like(table);
  auto g_code = torch::zeros_like(code);
  const float *gp = grad.data_ptr<float>(), *xp = x.data_ptr<float>(), *tp = table.data_ptr<float>(),
              *cp = code.data_ptr<float>();
  const int nt = (int)std::max<int64_t>(1, std::min<int64_t>(threads, N / 1024 + 1));
  std::vector<std::vector<float>> tables(nt - 1);
  std::vector<std::vector<float>> codes(nt, std::vector<float>(C, 0.f));
  const int64_t per = (N + nt - 1) / nt;
#pragma omp parallel for schedule(static, 1) num_threads(nt)
  for (int t = 0; t < nt; ++t) {  // thread t takes rows [t*per, (t+1)*per) and table t (0: the result)
    float* gt = g_table.data_ptr<float>();
    if (t > 0) {
      tables[t - 1].assign(V * CF, 0.f);
      gt = tables[t - 1].data();
    }
    const int64_t b = std::min<int64_t>(N, t * per), e = std::min<int64_t>(N, b + per);
    float* gcp = g_code.data_ptr<float>();
    float* gcs = codes[t].data();
    if (C == 16 && F == 2) backward_rows<16, 2>(gp, xp, tp, cp, gt, gcp, gcs, C, F, per_row, r, b, e);
    else if (C == 8 && F == 2) backward_rows<8, 2>(gp, xp, tp, cp, gt, gcp, gcs, C, F, per_row, r, b, e);
    else backward_rows<0, 0>(gp, xp, tp, cp, gt, gcp, gcs, C, F, per_row, r, b, e);
  }
  float* gt = g_table.data_ptr<float>();
  for (int t = 1; t < nt; ++t) {
    const float* src = tables[t - 1].data();
    for (int64_t i = 0; i < V * CF; ++i) gt[i] += src[i];
  }
  if (!per_row) {
    float* gc = g_code.data_ptr<float>();
    for (int t = 0; t < nt; ++t)
      for (int64_t k = 0; k < C; ++k) gc[k] += codes[t][k];
  }
  return {g_table, g_code};
}

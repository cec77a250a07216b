// Multiresolution hash grid (Instant-NGP style) for CPU: trilinear interpolation of per-level feature tables.
// Forward is parallel over points; backward is parallel over levels, so no two threads write the same table
// row and no atomics are needed. Table sizes must be powers of two (hash = xor of prime products & (T-1)),
// which makes uint32 wrap-around equal to the int64 arithmetic of the pure-torch fallback.
#include <torch/extension.h>
#include <cstdint>
#include <cmath>
#ifdef _OPENMP
#include <omp.h>
#endif

static inline int64_t vertex_index(int64_t x, int64_t y, int64_t z, int64_t side, bool dense, int64_t mask) {
  if (dense) return x + side * (y + side * z);
  uint32_t h = (uint32_t)x ^ ((uint32_t)y * 2654435761u) ^ ((uint32_t)z * 805459861u);
  return (int64_t)(h & (uint32_t)mask);
}

// x (N,3) in [0,1]; table (L,T,F) with F <= 8; res (L) int64 -> out (N,L,F); threads = torch's thread count
torch::Tensor hashgrid_forward(torch::Tensor x, torch::Tensor table, torch::Tensor res, int64_t threads) {
  const int64_t N = x.size(0), L = table.size(0), T = table.size(1), F = table.size(2);
  auto out = torch::empty({N, L, F}, table.options());
  const float* xp = x.data_ptr<float>();
  const float* tp = table.data_ptr<float>();
  const int64_t* rp = res.data_ptr<int64_t>();
  float* op = out.data_ptr<float>();
  // blocks of points, levels inside a block: one level's table stays in cache while a block is encoded
  const int64_t B = 2048;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t b0 = 0; b0 < N; b0 += B) {
    const int64_t b1 = b0 + B < N ? b0 + B : N;
    for (int64_t l = 0; l < L; ++l) {
      const int64_t r = rp[l], side = r + 1;
      const bool dense = side * side * side <= T;
      const float* tl = tp + l * T * F;
      for (int64_t n = b0; n < b1; ++n) {
        int64_t i0[3];
        float w[3];
        for (int d = 0; d < 3; ++d) {
          float p = fminf(fmaxf(xp[n * 3 + d], 0.f), 1.f) * (float)r;
          int64_t i = (int64_t)floorf(p);
          if (i >= r) i = r - 1;
          i0[d] = i;
          w[d] = p - (float)i;
        }
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int c = 0; c < 8; ++c) {
          const int cx = c & 1, cy = (c >> 1) & 1, cz = (c >> 2) & 1;
          const float wc = (cx ? w[0] : 1.f - w[0]) * (cy ? w[1] : 1.f - w[1]) * (cz ? w[2] : 1.f - w[2]);
          const int64_t idx = vertex_index(i0[0] + cx, i0[1] + cy, i0[2] + cz, side, dense, T - 1);
          for (int64_t f = 0; f < F; ++f) acc[f] += wc * tl[idx * F + f];
        }
        for (int64_t f = 0; f < F; ++f) op[(n * L + l) * F + f] = acc[f];
      }
    }
  }
  return out;
}

// grad_out (N,L,F) -> grad_table (L,T,F)
torch::Tensor hashgrid_backward(torch::Tensor grad_out, torch::Tensor x, torch::Tensor res, int64_t T,
                                int64_t threads) {
  const int64_t N = x.size(0), L = grad_out.size(1), F = grad_out.size(2);
  auto grad = torch::zeros({L, T, F}, grad_out.options());
  const float* xp = x.data_ptr<float>();
  const float* gp = grad_out.data_ptr<float>();
  const int64_t* rp = res.data_ptr<int64_t>();
  float* tp = grad.data_ptr<float>();
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t l = 0; l < L; ++l) {
    const int64_t r = rp[l], side = r + 1;
    const bool dense = side * side * side <= T;
    float* tl = tp + l * T * F;
    for (int64_t n = 0; n < N; ++n) {
      int64_t i0[3];
      float w[3];
      for (int d = 0; d < 3; ++d) {
        float p = fminf(fmaxf(xp[n * 3 + d], 0.f), 1.f) * (float)r;
        int64_t i = (int64_t)floorf(p);
        if (i >= r) i = r - 1;
        i0[d] = i;
        w[d] = p - (float)i;
      }
      const float* g = gp + (n * L + l) * F;
      for (int c = 0; c < 8; ++c) {
        const int cx = c & 1, cy = (c >> 1) & 1, cz = (c >> 2) & 1;
        const float wc = (cx ? w[0] : 1.f - w[0]) * (cy ? w[1] : 1.f - w[1]) * (cz ? w[2] : 1.f - w[2]);
        const int64_t idx = vertex_index(i0[0] + cx, i0[1] + cy, i0[2] + cz, side, dense, T - 1);
        for (int64_t f = 0; f < F; ++f) tl[idx * F + f] += wc * g[f];
      }
    }
  }
  return grad;
}

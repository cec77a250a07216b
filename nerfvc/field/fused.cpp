// Fused head-field density MLP for CPU: out = relu(hashgrid(x) @ w1 + b1) @ w2 + b2 in one pass over tiles of
// TP points, so the grid features (G,TP) and hidden activations (H,TP) live in L1/L2 and are never full-size.
// Same hash and interpolation as hashgrid.cpp (and hashgrid_torch). Inside a tile the data is point-major
// ("transposed": row m holds the TP points' values of channel m), and every matrix product is vectorised over
// points with GCC vector extensions (16 lanes with AVX-512, 8 with AVX/AVX2, 4 otherwise), register-blocked
// over 8 output channels, weights broadcast from memory; H, O and G are zero-padded to multiples of 8. The grid
// lookup computes a level's corner indices for a tile's points with vector arithmetic, then fetches the table
// rows with hardware gathers (AVX2/AVX-512), one level at a time over blocks of BT tiles.
// Backward recomputes the grid features and hidden layer per tile (nothing is stored by the forward); weight
// gradients accumulate in per-thread vector accumulators, the table gradient in per-thread tables (thread 0
// writes straight into the result), reduced at the end, so the result is race-free and deterministic for a
// given thread count. The expression blend-shape lookup lives at the end of this file (one build for both).
#include <torch/extension.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#include <immintrin.h>
#ifdef _OPENMP
#include <omp.h>
#endif

// Register blocks of matmul_tile: PV point vectors x MB output channels of accumulators.
#if defined(__AVX512F__)
constexpr int VW = 16;
constexpr int PV = 2, MB = 8;  // 16 of the 32 zmm accumulate
#elif defined(__AVX__)
constexpr int VW = 8;
constexpr int PV = 1, MB = 8;  // 8 of the 16 ymm accumulate (2 x 4 measured slower here)
#else
constexpr int VW = 4;
constexpr int PV = 1, MB = 8;
#endif
typedef float vf __attribute__((vector_size(VW * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(VW * sizeof(int32_t))));
typedef uint32_t vu __attribute__((vector_size(VW * sizeof(uint32_t))));
constexpr int TP = 64;        // points per tile
constexpr int NV = TP / VW;   // vectors per channel row
constexpr int KB = 8;         // every channel count is padded to a multiple of this
constexpr int BT = 16;        // tiles per block of the forward's grid lookup (see grid_block)
static_assert(NV % PV == 0, "tile must hold whole register blocks");

static inline vf ld(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
static inline void st(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
static inline vi ldi(const int32_t* p) {
  vi v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
// base[j[i]] for every lane i: a hardware gather where there is one
static inline vf gather(const float* base, vi j) {
#if defined(__AVX512F__)
  return (vf)_mm512_i32gather_ps((__m512i)j, base, 4);
#elif defined(__AVX2__)
  return (vf)_mm256_i32gather_ps(base, (__m256i)j, 4);
#else
  vf v;
  for (int i = 0; i < VW; ++i) v[i] = base[j[i]];
  return v;
#endif
}
static inline int64_t pad8(int64_t n) { return (n + KB - 1) / KB * KB; }

// e^x in every lane (Cephes' expf: x = n·ln2 + r, |r| ≤ ln2/2, e^r by a degree-7 polynomial, 2^n by exponent
// bits; relative error < 2e-7), x clamped to [-87.3, 88] so the result stays a normal float. The scalar
// std::exp per sample, colour and torso pixel was ~4% of a 512² frame.
static inline vf vexp(vf x) {
  const vf lo = vf{} - 87.33654f, hi = vf{} + 88.0f;
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const vf fx = x * 1.44269504088896341f + 0.5f;
  vi n = __builtin_convertvector(fx, vi);  // truncation, then floor
  n += (vi)(__builtin_convertvector(n, vf) > fx);  // a true lane compares as -1
  const vf fn = __builtin_convertvector(n, vf);
  const vf r = x - fn * 0.693359375f + fn * 2.12194440e-4f;
  vf y = vf{} + 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.f;
  const vi bits = (n + 127) << 23;
  vf scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

// rows[k][p] = sigmoid(rows[k][p]) for `n_rows` rows of a tile
static inline void sigmoid_rows(float* rows, int n_rows) {
  for (int k = 0; k < n_rows; ++k)
    for (int v = 0; v < NV; ++v) {
      float* at = rows + k * TP + v * VW;
      st(at, 1.f / (1.f + vexp(-ld(at))));
    }
}

// Trilinear corners of a tile's points at one level: idx[c][p] (table rows), wc[c][p] (weights).
// xs[d][p] are the clamped coordinates. Loops over p so the compiler vectorises the index arithmetic.
static void corners(const float* __restrict__ xs, int64_t r, bool dense, int64_t T, int32_t* __restrict__ idx,
                    float* __restrict__ wc) {
  alignas(64) int32_t i0[3][TP];
  alignas(64) float w[3][TP];
  const float rf = (float)r;
  const int32_t rm1 = (int32_t)(r - 1);
  for (int d = 0; d < 3; ++d)
    for (int p = 0; p < TP; ++p) {
      const float q = xs[d * TP + p] * rf;
      int32_t i = (int32_t)q;  // q >= 0: truncation is floor
      i = i < rm1 ? i : rm1;
      i0[d][p] = i;
      w[d][p] = q - (float)i;
    }
  for (int c = 0; c < 8; ++c) {
    const int cx = c & 1, cy = (c >> 1) & 1, cz = (c >> 2) & 1;
    int32_t* ic = idx + c * TP;
    float* wcc = wc + c * TP;
    for (int p = 0; p < TP; ++p)
      wcc[p] = (cx ? w[0][p] : 1.f - w[0][p]) * (cy ? w[1][p] : 1.f - w[1][p]) * (cz ? w[2][p] : 1.f - w[2][p]);
    if (dense) {
      const int32_t side = (int32_t)(r + 1);
      for (int p = 0; p < TP; ++p) ic[p] = (i0[0][p] + cx) + side * ((i0[1][p] + cy) + side * (i0[2][p] + cz));
    } else {
      const uint32_t mask = (uint32_t)(T - 1);
      for (int p = 0; p < TP; ++p) {
        const uint32_t h = (uint32_t)(i0[0][p] + cx) ^ ((uint32_t)(i0[1][p] + cy) * 2654435761u) ^
                           ((uint32_t)(i0[2][p] + cz) * 805459861u);
        ic[p] = (int32_t)(h & mask);
      }
    }
  }
}

// featT[l*F+f][p] = grid features of one level l of a tile.
template <int F>
static void grid_level(const float* xs, const float* __restrict__ table, const int64_t* res, int64_t l, int64_t T,
                       float* __restrict__ featT) {
  alignas(64) int32_t idx[8 * TP];
  alignas(64) float wc[8 * TP];
  const int64_t r = res[l];
  corners(xs, r, (r + 1) * (r + 1) * (r + 1) <= T, T, idx, wc);
  const float* tl = table + l * T * F;
  float* out = featT + l * F * TP;
  for (int v = 0; v < NV; ++v) {
    vf acc[F] = {};
    for (int c = 0; c < 8; ++c) {
      const vi j = ldi(idx + c * TP + v * VW) * F;
      const vf w = ld(wc + c * TP + v * VW);
      for (int f = 0; f < F; ++f) acc[f] += w * gather(tl + f, j);
    }
    for (int f = 0; f < F; ++f) st(out + f * TP + v * VW, acc[f]);
  }
}

// Grid features of nt consecutive tiles (tile i: coordinates xs + 3*TP*i, features featT + Gp*TP*i), level by
// level, so one level's table stays in cache for the whole block (measured 15-20% faster than tile by tile).
template <int F>
static void grid_block(const float* xs, int64_t nt, const float* table, const int64_t* res, int64_t L, int64_t T,
                       int64_t Gp, float* featT) {
  for (int64_t l = 0; l < L; ++l)
    for (int64_t i = 0; i < nt; ++i) grid_level<F>(xs + 3 * TP * i, table, res, l, T, featT + Gp * TP * i);
}

// Two float16 features per 32-bit table word (low half: feature 0): the frame renderer's half-size tables, so a
// corner is one gather instead of two and a level takes half the cache. h2f_lo / h2f_hi widen each half.
static inline vi gather_i(const int32_t* base, vi j) {
#if defined(__AVX512F__)
  return (vi)_mm512_i32gather_epi32((__m512i)j, base, 4);
#elif defined(__AVX2__)
  return (vi)_mm256_i32gather_epi32(base, (__m256i)j, 4);
#else
  vi v;
  for (int i = 0; i < VW; ++i) v[i] = base[j[i]];
  return v;
#endif
}
// The float16 in the low / high half of each lane, widened by bit arithmetic (no conversion unit needed): the
// exponent and mantissa bits move into float position and one multiplication by 2^112 rebiases the exponent.
// Exact for every finite float16, subnormals included (read as 0 while denormals-are-zero is on: |error| <
// 6.1e-5); infinities and NaNs are not kept (packed grid tables are finite). Measured faster than the F16C
// conversion, which needs a pack and a lane extract per 8 values on AVX2.
static inline vf half_bits(vu magnitude, vu sign) {
  vf f;
  std::memcpy(&f, &magnitude, sizeof f);
  f *= 0x1p112f;
  vu b;
  std::memcpy(&b, &f, sizeof b);
  b |= sign;
  std::memcpy(&f, &b, sizeof f);
  return f;
}
static inline vf half_lo(vi h) {
  const vu u = (vu)h;
  return half_bits((u << 13) & 0x0fffe000u, (u << 16) & 0x80000000u);
}
static inline vf half_hi(vi h) {
  const vu u = (vu)h;
  return half_bits((u >> 3) & 0x0fffe000u, u & 0x80000000u);
}

// featT rows 2l, 2l+1 of a tile at level l from a packed half-pair table (L,T).
static void grid_level_h2(const float* xs, const int32_t* __restrict__ table, const int64_t* res, int64_t l, int64_t T,
                          float* __restrict__ featT) {
  alignas(64) int32_t idx[8 * TP];
  alignas(64) float wc[8 * TP];
  const int64_t r = res[l];
  corners(xs, r, (r + 1) * (r + 1) * (r + 1) <= T, T, idx, wc);
  const int32_t* tl = table + l * T;
  float* out = featT + l * 2 * TP;
  for (int v = 0; v < NV; ++v) {
    vf a0 = {}, a1 = {};
    for (int c = 0; c < 8; ++c) {
      const vi h = gather_i(tl, ldi(idx + c * TP + v * VW));
      const vf w = ld(wc + c * TP + v * VW);
      a0 += w * half_lo(h);
      a1 += w * half_hi(h);
    }
    st(out + v * VW, a0);
    st(out + TP + v * VW, a1);
  }
}

static void grid_block_h2(const float* xs, int64_t nt, const int32_t* table, const int64_t* res, int64_t L, int64_t T,
                          int64_t Gp, float* featT) {
  for (int64_t l = 0; l < L; ++l)
    for (int64_t i = 0; i < nt; ++i) grid_level_h2(xs + 3 * TP * i, table, res, l, T, featT + Gp * TP * i);
}

// table_grad[l] += sum over the tile's corners of wc * dfeatT (the first n points only).
template <int F>
static void grid_scatter(const float* xs, const int64_t* res, int64_t L, int64_t T, const float* __restrict__ dfeatT,
                         int n, float* __restrict__ gt) {
  alignas(64) int32_t idx[8 * TP];
  alignas(64) float wc[8 * TP];
  for (int64_t l = 0; l < L; ++l) {
    const int64_t r = res[l];
    corners(xs, r, (r + 1) * (r + 1) * (r + 1) <= T, T, idx, wc);
    float* tl = gt + l * T * F;
    const float* g = dfeatT + l * F * TP;
    for (int p = 0; p < n; ++p)
      for (int c = 0; c < 8; ++c) {
        float* row = tl + (int64_t)idx[c * TP + p] * F;
        const float wt = wc[c * TP + p];
        for (int f = 0; f < F; ++f) row[f] += wt * g[f * TP + p];
      }
  }
}

enum Epilogue { kNone, kRelu, kMask };

// outT[m][p] = epi(bias[m] + bT[m][p] + sum_i W[i*M + m] * inT[i][p]) for a tile; W has M columns (row-major), M a
// multiple of 8; K is the number of real inputs: the zero rows of a padded input are skipped (the head's 34 grid
// and blend features are 40 padded rows, its 18 colour inputs 24). bias / bT may be null. kMask zeroes where
// maskT[m][p] <= 0 (the ReLU derivative).
template <Epilogue E>
static void matmul_tile(const float* __restrict__ W, int64_t K, int64_t M, const float* __restrict__ inT,
                        const float* __restrict__ bias, const float* __restrict__ bT, const float* __restrict__ maskT,
                        float* __restrict__ outT) {
  for (int v0 = 0; v0 < NV; v0 += PV)
    for (int64_t m0 = 0; m0 < M; m0 += MB) {
      vf acc[PV][MB];
      for (int j = 0; j < MB; ++j)
        for (int i = 0; i < PV; ++i) {
          vf a = {};
          if (bias) a += bias[m0 + j];
          if (bT) a += ld(bT + (m0 + j) * TP + (v0 + i) * VW);
          acc[i][j] = a;
        }
      for (int64_t k = 0; k < K; ++k) {
        vf x[PV];
        for (int i = 0; i < PV; ++i) x[i] = ld(inT + k * TP + (v0 + i) * VW);
        const float* w = W + k * M + m0;
        for (int j = 0; j < MB; ++j)
          for (int i = 0; i < PV; ++i) acc[i][j] += x[i] * w[j];
      }
      const vf zero = {};
      for (int j = 0; j < MB; ++j)
        for (int i = 0; i < PV; ++i) {
          vf a = acc[i][j];
          if (E == kRelu) a = a > zero ? a : zero;
          if (E == kMask) a = ld(maskT + (m0 + j) * TP + (v0 + i) * VW) > zero ? a : zero;
          st(outT + (m0 + j) * TP + (v0 + i) * VW, a);
        }
    }
}

// acc[a*B + b] += aT[a][.] * bT[b][.] lane-wise over the tile (horizontal sums are left to the end); A and B are
// multiples of 8. RELU_A applies max(., 0) to aT as it is read.
template <bool RELU_A>
static void outer_acc(const float* __restrict__ aT, int64_t A, const float* __restrict__ bT, int64_t B,
                      vf* __restrict__ acc) {
  constexpr int RA = VW == 16 ? 4 : 2, RB = 4;
  const vf zero = {};
  for (int64_t a0 = 0; a0 < A; a0 += RA)
    for (int64_t b0 = 0; b0 < B; b0 += RB) {
      vf s[RA][RB];
      for (int i = 0; i < RA; ++i)
        for (int j = 0; j < RB; ++j) s[i][j] = acc[(a0 + i) * B + b0 + j];
      for (int v = 0; v < NV; ++v) {
        vf x[RA], y[RB];
        for (int i = 0; i < RA; ++i) {
          x[i] = ld(aT + (a0 + i) * TP + v * VW);
          if (RELU_A) x[i] = x[i] > zero ? x[i] : zero;
        }
        for (int j = 0; j < RB; ++j) y[j] = ld(bT + (b0 + j) * TP + v * VW);
        for (int i = 0; i < RA; ++i)
          for (int j = 0; j < RB; ++j) s[i][j] += x[i] * y[j];
      }
      for (int i = 0; i < RA; ++i)
        for (int j = 0; j < RB; ++j) acc[(a0 + i) * B + b0 + j] = s[i][j];
    }
}

static inline float hsum(vf v) {
  float s = 0.f;
  for (int i = 0; i < VW; ++i) s += v[i];
  return s;
}

// rows (n, C) row-major, starting at row n0 -> dstT[c][p] for p < n (zero elsewhere and for c >= C)
static void load_rows_T(const float* src, int64_t n0, int n, int64_t C, int64_t Cp, float* dstT) {
  std::memset(dstT, 0, sizeof(float) * Cp * TP);
  for (int p = 0; p < n; ++p)
    for (int64_t c = 0; c < C; ++c) dstT[c * TP + p] = src[(n0 + p) * C + c];
}

static void store_rows(const float* srcT, int64_t n0, int n, int64_t C, float* dst) {
  for (int p = 0; p < n; ++p)
    for (int64_t c = 0; c < C; ++c) dst[(n0 + p) * C + c] = srcT[c * TP + p];
}

// Clamped coordinates of tile points n0..n0+n-1 into xs[d][p]; the padding points sit at the origin.
static void load_x(const float* x, int64_t n0, int n, float* xs) {
  std::memset(xs, 0, sizeof(float) * 3 * TP);
  for (int p = 0; p < n; ++p)
    for (int d = 0; d < 3; ++d) xs[d * TP + p] = fminf(fmaxf(x[(n0 + p) * 3 + d], 0.f), 1.f);
}

// (R, C) row-major, optionally transposed, zero-padded to (Rp, Cp)
static std::vector<float> padded(const torch::Tensor& t, int64_t Rp, int64_t Cp, bool transpose) {
  const int64_t R = t.size(0), C = t.size(1);
  const float* s = t.data_ptr<float>();
  std::vector<float> out((size_t)(Rp * Cp), 0.f);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) {
      if (transpose) out[c * Cp + r] = s[r * C + c];
      else out[r * Cp + c] = s[r * C + c];
    }
  return out;
}

struct Shapes {
  int64_t N, L, T, F, G, H, O, Gp, Hp, Op;
  bool b1_rows;
};

static Shapes check(const torch::Tensor& x, const torch::Tensor& table, const torch::Tensor& res,
                    const torch::Tensor& w1, const torch::Tensor& b1, const torch::Tensor& w2,
                    const torch::Tensor& b2) {
  for (const auto* t : {&x, &table, &w1, &b1, &w2, &b2}) {
    TORCH_CHECK(t->scalar_type() == torch::kFloat32 && t->is_contiguous() && t->device().is_cpu(),
                "fused density: float32 contiguous CPU tensors expected");
  }
  TORCH_CHECK(res.scalar_type() == torch::kInt64 && res.is_contiguous(), "fused density: res must be int64");
  Shapes s;
  s.N = x.size(0), s.L = table.size(0), s.T = table.size(1), s.F = table.size(2);
  s.G = s.L * s.F, s.H = w1.size(1), s.O = w2.size(1);
  TORCH_CHECK(x.dim() == 2 && x.size(1) == 3, "fused density: x must be (N,3)");
  TORCH_CHECK(res.numel() == s.L && (s.T & (s.T - 1)) == 0, "fused density: res (L,), T a power of two");
  TORCH_CHECK(w1.dim() == 2 && w1.size(0) == s.G, "fused density: w1 must be (L*F, H)");
  TORCH_CHECK(w2.dim() == 2 && w2.size(0) == s.H, "fused density: w2 must be (H, O)");
  TORCH_CHECK(b2.numel() == s.O, "fused density: b2 must be (O,)");
  TORCH_CHECK(b1.dim() == 2 && b1.size(1) == s.H && (b1.size(0) == 1 || b1.size(0) == s.N),
              "fused density: b1 must be (1,H) or (N,H)");
  s.b1_rows = b1.size(0) == s.N && s.N != 1;
  s.Gp = pad8(s.G), s.Hp = pad8(s.H), s.Op = pad8(s.O);
  return s;
}

#define DISPATCH_F(F, CALL)                 \
  switch (F) {                              \
    case 1: { constexpr int FF = 1; CALL; break; } \
    case 2: { constexpr int FF = 2; CALL; break; } \
    case 4: { constexpr int FF = 4; CALL; break; } \
    case 8: { constexpr int FF = 8; CALL; break; } \
    default: TORCH_CHECK(false, "fused density: features must be 1, 2, 4 or 8"); \
  }

// Runs body(tile, thread) for every tile on `threads` OpenMP threads (static schedule), or serially.
template <class Body>
static void for_tiles(int64_t tiles, int threads, Body body) {
  if (threads <= 1) {  // serial outside an OpenMP region: see hashgrid.cpp
    for (int64_t t = 0; t < tiles; ++t) body(t, 0);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; ++t) body(t, tid);
  }
}

// x (N,3); table (L,T,F); res (L,) int64; w1 (L*F,H); b1 (1,H) or (N,H); w2 (H,O); b2 (O,) -> (N,O)
torch::Tensor fused_forward(torch::Tensor x, torch::Tensor table, torch::Tensor res, torch::Tensor w1,
                            torch::Tensor b1, torch::Tensor w2, torch::Tensor b2, int64_t threads) {
  const Shapes s = check(x, table, res, w1, b1, w2, b2);
  auto out = torch::empty({s.N, s.O}, x.options());
  if (s.N == 0) return out;
  const std::vector<float> w1p = padded(w1, s.Gp, s.Hp, false), w2p = padded(w2, s.Hp, s.Op, false);
  const std::vector<float> b1p = padded(b1.narrow(0, 0, 1), 1, s.Hp, false), b2p = padded(b2.view({1, -1}), 1, s.Op, false);
  const float *xp = x.data_ptr<float>(), *tp = table.data_ptr<float>(), *b1r = b1.data_ptr<float>();
  const int64_t* rp = res.data_ptr<int64_t>();
  float* op = out.data_ptr<float>();
  const int64_t tiles = (s.N + TP - 1) / TP, blocks = (tiles + BT - 1) / BT;
  const int nthreads = (int)std::max<int64_t>(1, std::min<int64_t>(threads, blocks));
  std::vector<std::vector<vf>> scratch(nthreads);  // per thread: BT x (xs, featT), then hT, outT, b1T
  for (auto& v : scratch) v.assign((size_t)(BT * (3 + s.Gp) + s.Hp + s.Op + (s.b1_rows ? s.Hp : 0)) * NV, vf{});
  for_tiles(blocks, nthreads, [&](int64_t b, int tid) {
    float* xs = (float*)scratch[tid].data();
    float *feat = xs + 3 * TP * BT, *hT = feat + s.Gp * TP * BT, *outT = hT + s.Hp * TP, *b1T = outT + s.Op * TP;
    const int64_t t0 = b * BT, nt = std::min<int64_t>(BT, tiles - t0);
    for (int64_t i = 0; i < nt; ++i)
      load_x(xp, (t0 + i) * TP, (int)std::min<int64_t>(TP, s.N - (t0 + i) * TP), xs + 3 * TP * i);
    DISPATCH_F(s.F, grid_block<FF>(xs, nt, tp, rp, s.L, s.T, s.Gp, feat));
    for (int64_t i = 0; i < nt; ++i) {
      const int64_t n0 = (t0 + i) * TP;
      const int n = (int)std::min<int64_t>(TP, s.N - n0);
      if (s.b1_rows) load_rows_T(b1r, n0, n, s.H, s.Hp, b1T);
      matmul_tile<kRelu>(w1p.data(), s.G, s.Hp, feat + s.Gp * TP * i, s.b1_rows ? nullptr : b1p.data(),
                         s.b1_rows ? b1T : nullptr, nullptr, hT);
      matmul_tile<kNone>(w2p.data(), s.H, s.Op, hT, b2p.data(), nullptr, nullptr, outT);
      store_rows(outT, n0, n, s.O, op);
    }
  });
  return out;
}

// grad_out (N,O) and the forward's inputs -> [grad table (L,T,F), grad w1 (G,H), grad b1 (as b1),
// grad w2 (H,O), grad b2 (O,)]
std::vector<torch::Tensor> fused_backward(torch::Tensor grad_out, torch::Tensor x, torch::Tensor table,
                                          torch::Tensor res, torch::Tensor w1, torch::Tensor b1, torch::Tensor w2,
                                          torch::Tensor b2, int64_t threads) {
  const Shapes s = check(x, table, res, w1, b1, w2, b2);
  TORCH_CHECK(grad_out.scalar_type() == torch::kFloat32 && grad_out.is_contiguous() && grad_out.size(0) == s.N &&
                  grad_out.size(1) == s.O, "fused density: grad_out must be (N,O) float32 contiguous");
  auto g_table = torch::zeros_like(table), g_w1 = torch::zeros_like(w1), g_b1 = torch::zeros_like(b1);
  auto g_w2 = torch::zeros_like(w2), g_b2 = torch::zeros_like(b2);
  if (s.N == 0) return {g_table, g_w1, g_b1, g_w2, g_b2};
  const std::vector<float> w1p = padded(w1, s.Gp, s.Hp, false), w2p = padded(w2, s.Hp, s.Op, false);
  const std::vector<float> w1t = padded(w1, s.Hp, s.Gp, true), w2t = padded(w2, s.Op, s.Hp, true);
  const std::vector<float> b1p = padded(b1.narrow(0, 0, 1), 1, s.Hp, false);
  const float *xp = x.data_ptr<float>(), *tp = table.data_ptr<float>(), *b1r = b1.data_ptr<float>();
  const float* gp = grad_out.data_ptr<float>();
  const int64_t* rp = res.data_ptr<int64_t>();
  const int64_t tiles = (s.N + TP - 1) / TP, table_n = s.L * s.T * s.F;
  const int nthreads = (int)std::max<int64_t>(1, std::min<int64_t>(threads, tiles));
  // per thread: xs, featT, preT, gT, dpreT, dfeatT, b1T (tile rows), then accumulators for w1, w2, b1, b2
  const int64_t rows = 3 + s.Gp + s.Hp + s.Op + s.Hp + s.Gp + s.Hp;
  const int64_t accs = s.Gp * s.Hp + s.Hp * s.Op + s.Hp + s.Op;
  std::vector<std::vector<vf>> scratch(nthreads);
  for (auto& v : scratch) v.assign((size_t)(rows * NV + accs), vf{});
  std::vector<std::vector<float>> tables(nthreads - 1);  // thread 0 scatters into g_table itself
  float* gtp = g_table.data_ptr<float>();
  float* gb1p = g_b1.data_ptr<float>();
  for_tiles(tiles, nthreads, [&](int64_t t, int tid) {
    float* xs = (float*)scratch[tid].data();
    float *featT = xs + 3 * TP, *preT = featT + s.Gp * TP, *gT = preT + s.Hp * TP, *dpreT = gT + s.Op * TP;
    float *dfeatT = dpreT + s.Hp * TP, *b1T = dfeatT + s.Gp * TP;
    vf* acc_w1 = scratch[tid].data() + rows * NV;
    vf *acc_w2 = acc_w1 + s.Gp * s.Hp, *acc_b1 = acc_w2 + s.Hp * s.Op, *acc_b2 = acc_b1 + s.Hp;
    float* gt = gtp;
    if (tid > 0) {
      if (tables[tid - 1].empty()) tables[tid - 1].assign((size_t)table_n, 0.f);
      gt = tables[tid - 1].data();
    }
    const int64_t n0 = t * TP;
    const int n = (int)std::min<int64_t>(TP, s.N - n0);
    load_x(xp, n0, n, xs);
    DISPATCH_F(s.F, grid_block<FF>(xs, 1, tp, rp, s.L, s.T, s.Gp, featT));
    if (s.b1_rows) load_rows_T(b1r, n0, n, s.H, s.Hp, b1T);
    matmul_tile<kNone>(w1p.data(), s.G, s.Hp, featT, s.b1_rows ? nullptr : b1p.data(),
                       s.b1_rows ? b1T : nullptr, nullptr, preT);
    load_rows_T(gp, n0, n, s.O, s.Op, gT);  // zero for padding points: they add nothing below
    matmul_tile<kMask>(w2t.data(), s.O, s.Hp, gT, nullptr, nullptr, preT, dpreT);
    matmul_tile<kNone>(w1t.data(), s.H, s.Gp, dpreT, nullptr, nullptr, nullptr, dfeatT);
    outer_acc<false>(featT, s.Gp, dpreT, s.Hp, acc_w1);
    outer_acc<true>(preT, s.Hp, gT, s.Op, acc_w2);
    for (int64_t o = 0; o < s.Op; ++o)
      for (int v = 0; v < NV; ++v) acc_b2[o] += ld(gT + o * TP + v * VW);
    if (s.b1_rows) store_rows(dpreT, n0, n, s.H, gb1p);
    else
      for (int64_t h = 0; h < s.Hp; ++h)
        for (int v = 0; v < NV; ++v) acc_b1[h] += ld(dpreT + h * TP + v * VW);
    DISPATCH_F(s.F, grid_scatter<FF>(xs, rp, s.L, s.T, dfeatT, n, gt));
  });
  // reduce the per-thread accumulators in thread order
  float *gw1 = g_w1.data_ptr<float>(), *gw2 = g_w2.data_ptr<float>(), *gb2 = g_b2.data_ptr<float>();
  for (int tid = 0; tid < nthreads; ++tid) {
    const vf* acc_w1 = scratch[tid].data() + rows * NV;
    const vf *acc_w2 = acc_w1 + s.Gp * s.Hp, *acc_b1 = acc_w2 + s.Hp * s.Op, *acc_b2 = acc_b1 + s.Hp;
    for (int64_t g = 0; g < s.G; ++g)
      for (int64_t h = 0; h < s.H; ++h) gw1[g * s.H + h] += hsum(acc_w1[g * s.Hp + h]);
    for (int64_t h = 0; h < s.H; ++h)
      for (int64_t o = 0; o < s.O; ++o) gw2[h * s.O + o] += hsum(acc_w2[h * s.Op + o]);
    for (int64_t o = 0; o < s.O; ++o) gb2[o] += hsum(acc_b2[o]);
    if (!s.b1_rows)
      for (int64_t h = 0; h < s.H; ++h) gb1p[h] += hsum(acc_b1[h]);
  }
  if (!tables.empty()) {
    const int64_t chunks = (table_n + 4095) / 4096;
    for_tiles(chunks, nthreads, [&](int64_t c, int) {
      const int64_t i1 = std::min<int64_t>(table_n, (c + 1) * 4096);
      for (const auto& tb : tables)
        if (!tb.empty())
          for (int64_t i = c * 4096; i < i1; ++i) gtp[i] += tb[i];
    });
  }
  return {g_table, g_w1, g_b1, g_w2, g_b2};
}

// ---------------------------------------------------------------------------------------------------------------
// Fused volume rendering of a frame's head rays (the receiver's hot loop, nerfvc/render/fast.py `_march`).
// Every ray marches through its bins `edges` in chunks of `chunk` samples, like the torch reference: the
// occupied samples of a chunk (occupancy grid lookup) go through the density MLP in tiles gathered over a block
// of rays, each ray composites its chunk's weights in order, and (with colour) the samples whose weight is above
// min_weight go through the colour MLP, again in full tiles; a ray stops once its transmittance is <= stop. No
// per-sample tensor is ever materialised.

constexpr int RB = 256;  // rays per block (one thread marches a block at a time); 256 keeps the tiles full as rays
                         // finish (german 256², AVX2: fine march 15-20% faster than 64, 89% of tile slots used)

struct MarchColor {
  int64_t geo, view, Kc, Hc, Hcp;  // geo features, view dims (0 or 3), padded colour input, hidden (raw, padded)
  std::vector<float> w1, b1, w2, b2;  // padded (Kc,Hcp), (1,Hcp), (Hcp,8), (1,8)
};

// origin, direction (R,3); edges (R,S+1); box (7,) = lo(3), span(3), 1/scale; occupancy (r,r,r) bool;
// table, res, w1 (G,H), b1 (1,H), w2 (H,1+geo), b2 as fused_forward; colour MLP wc1 (geo[+3],Hc), bc1 (1,Hc),
// wc2 (Hc,3), bc2 (3,) or all empty (density only) -> [weights (R,S) (with_weights, else (0,S)), premultiplied
// rgb (R,3), opacity (R,), expected depth (R,): sum of weight x bin middle / max(sum of weights, 1e-8)]
std::vector<torch::Tensor> fused_march(torch::Tensor origin, torch::Tensor direction, torch::Tensor edges,
                                       torch::Tensor box, torch::Tensor occupancy, torch::Tensor table,
                                       torch::Tensor res, torch::Tensor w1, torch::Tensor b1, torch::Tensor w2,
                                       torch::Tensor b2, torch::Tensor wc1, torch::Tensor bc1, torch::Tensor wc2,
                                       torch::Tensor bc2, torch::Tensor half_table, int64_t chunk, double stop,
                                       double min_weight, bool with_weights, int64_t threads) {
  const int64_t R = edges.size(0), S = edges.size(1) - 1;
  for (const auto* t : {&origin, &direction, &edges, &box, &wc1, &bc1, &wc2, &bc2})
    TORCH_CHECK(t->scalar_type() == torch::kFloat32 && t->is_contiguous() && t->device().is_cpu(),
                "fused march: float32 contiguous CPU tensors expected");
  TORCH_CHECK(origin.size(0) == R && direction.size(0) == R && origin.size(1) == 3 && direction.size(1) == 3,
              "fused march: origin and direction must be (R,3)");
  TORCH_CHECK(box.numel() == 7 && S >= 1 && chunk >= 1, "fused march: box (7,), edges (R,S+1), chunk >= 1");
  TORCH_CHECK(occupancy.scalar_type() == torch::kBool && occupancy.is_contiguous() && occupancy.dim() == 3 &&
                  occupancy.size(1) == occupancy.size(0) && occupancy.size(2) == occupancy.size(0),
              "fused march: occupancy must be (r,r,r) bool");
  TORCH_CHECK(edges.dim() == 2, "fused march: edges must be (R,S+1)");
  auto dummy = torch::zeros({1, 3}, origin.options());
  const Shapes s = check(dummy, table, res, w1, b1, w2, b2);
  TORCH_CHECK(s.b1_rows == false && b1.size(0) == 1, "fused march: b1 must be (1,H)");
  const bool with_color = wc1.numel() > 0, half = half_table.numel() > 0;
  TORCH_CHECK(!half || (half_table.scalar_type() == torch::kInt32 && half_table.is_contiguous() && s.F == 2 &&
                        half_table.numel() == s.L * s.T),
              "fused march: half_table must be (L,T) int32 (two float16 features per word)");
  const int32_t* hp = half ? half_table.data_ptr<int32_t>() : nullptr;
  MarchColor mc{};
  if (with_color) {
    mc.geo = s.O - 1, mc.Hc = wc1.size(1), mc.view = wc1.size(0) - mc.geo;
    TORCH_CHECK(mc.view == 0 || mc.view == 3, "fused march: wc1 must be (geo,Hc) or (geo+3,Hc)");
    TORCH_CHECK(bc1.numel() == mc.Hc && wc2.size(0) == mc.Hc && wc2.size(1) == 3 && bc2.numel() == 3,
                "fused march: colour MLP shapes");
    mc.Kc = pad8(mc.geo + mc.view), mc.Hcp = pad8(mc.Hc);
    mc.w1 = padded(wc1, mc.Kc, mc.Hcp, false), mc.b1 = padded(bc1.view({1, -1}), 1, mc.Hcp, false);
    mc.w2 = padded(wc2, mc.Hcp, KB, false), mc.b2 = padded(bc2.view({1, -1}), 1, KB, false);
  }
  auto weights = torch::zeros({with_weights ? R : 0, S}, edges.options());
  auto rgb = torch::zeros({R, 3}, edges.options());
  auto opacity = torch::zeros({R}, edges.options());
  auto depth = torch::zeros({R}, edges.options());
  if (R == 0) return {weights, rgb, opacity, depth};
  const std::vector<float> w1p = padded(w1, s.Gp, s.Hp, false), w2p = padded(w2, s.Hp, s.Op, false);
  const std::vector<float> b1p = padded(b1, 1, s.Hp, false), b2p = padded(b2.view({1, -1}), 1, s.Op, false);
  const float *op = origin.data_ptr<float>(), *dp = direction.data_ptr<float>(), *ep = edges.data_ptr<float>();
  const float* bx = box.data_ptr<float>();
  const bool* occ = occupancy.data_ptr<bool>();
  const int64_t ores = occupancy.size(0);
  const float *tp = table.data_ptr<float>();
  const int64_t* rp = res.data_ptr<int64_t>();
  float *wp = with_weights ? weights.data_ptr<float>() : nullptr, *cp = rgb.data_ptr<float>();
  float *ap = opacity.data_ptr<float>(), *zp = depth.data_ptr<float>();
  const int64_t maxpts = RB * std::min<int64_t>(chunk, S), maxtiles = (maxpts + TP - 1) / TP;
  const int64_t blocks = (R + RB - 1) / RB;
  const int nthreads = (int)std::max<int64_t>(1, std::min<int64_t>(threads, blocks));
  const float fstop = (float)stop;

  // per thread, allocated once: tile inputs and activations; per-point raw density, weight and geometry
  // features (tile-major like xs); per-point sample and ray index, and the points that get a colour
  const int64_t geo = with_color ? mc.geo : 0;
  std::vector<std::vector<vf>> scratch(nthreads);
  for (auto& v : scratch)
    v.assign((size_t)(maxtiles * (3 + s.Gp + geo) + s.Hp + s.Op + mc.Kc + mc.Hcp + KB) * NV, vf{});
  std::vector<std::vector<float>> results(nthreads, std::vector<float>((size_t)(3 * maxtiles * TP)));
  std::vector<std::vector<int>> points(nthreads, std::vector<int>((size_t)(3 * maxpts)));
  const float wmin = (float)min_weight;
  auto march_block = [&](int64_t blk, int tid) {
    float* xs = (float*)scratch[tid].data();
    float *feat = xs + 3 * TP * maxtiles, *geoT = feat + s.Gp * TP * maxtiles, *hT = geoT + geo * TP * maxtiles;
    float *outT = hT + s.Hp * TP, *cinT = outT + s.Op * TP, *hcT = cinT + mc.Kc * TP, *colT = hcT + mc.Hcp * TP;
    // per point: the sample's opacity (the raw density first), its length in distance units, its weight
    float *alpha = results[tid].data(), *len = alpha + maxtiles * TP, *wpt = len + maxtiles * TP;
    int *pt_sample = points[tid].data(), *pt_ray = pt_sample + maxpts, *shaded = pt_ray + maxpts;
    const int64_t r0 = blk * RB, nr = std::min<int64_t>(RB, R - r0);
    float trans[RB], acc[RB][3] = {}, view[RB][3], wsum[RB] = {}, wmid[RB] = {};
    int64_t next[RB];
    int n_active = (int)nr;
    bool active[RB];
    for (int j = 0; j < nr; ++j) {
      trans[j] = 1.f, next[j] = 0, active[j] = true;
      const float* d = dp + (r0 + j) * 3;
      const float inv = 1.f / std::max(std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]), 1e-12f);
      for (int k = 0; k < 3; ++k) view[j][k] = d[k] * inv;
    }
    int pt_count[RB];
    while (n_active > 0) {
      // 1. the occupied samples of every active ray's next chunk, ray by ray in sample order
      int n = 0;
      for (int j = 0; j < nr; ++j) {
        pt_count[j] = 0;
        if (!active[j]) continue;
        const float *o = op + (r0 + j) * 3, *d = dp + (r0 + j) * 3, *e = ep + (r0 + j) * (S + 1);
        for (int64_t si = next[j]; si < std::min<int64_t>(next[j] + chunk, S); ++si) {
          const float mid = 0.5f * (e[si + 1] + e[si]);
          float x[3];
          int64_t cell[3];
          for (int k = 0; k < 3; ++k) {
            const float q = (o[k] + d[k] * mid - bx[k]) / bx[3 + k];
            x[k] = q < 0.f ? 0.f : (q > 1.f ? 1.f : q);
            cell[k] = std::min<int64_t>((int64_t)(x[k] * ores), ores - 1);
          }
          if (!occ[(cell[0] * ores + cell[1]) * ores + cell[2]]) continue;
          const int64_t t = n / TP, p = n % TP;
          for (int k = 0; k < 3; ++k) xs[3 * TP * t + k * TP + p] = x[k];
          len[n] = (e[si + 1] - e[si]) * bx[6];
          pt_sample[n] = (int)si, pt_ray[n] = j;
          ++pt_count[j], ++n;
        }
      }
      // 2. the field at those points, tile by tile
      if (n > 0) {
        const int64_t nt = (n + TP - 1) / TP;
        for (int64_t p = n; p < nt * TP; ++p) {
          for (int k = 0; k < 3; ++k) xs[3 * TP * (nt - 1) + k * TP + p % TP] = 0.f;
          len[p] = 0.f;
        }
        if (half) grid_block_h2(xs, nt, hp, rp, s.L, s.T, s.Gp, feat);
        else DISPATCH_F(s.F, grid_block<FF>(xs, nt, tp, rp, s.L, s.T, s.Gp, feat));
        for (int64_t t = 0; t < nt; ++t) {
          const int m = (int)std::min<int64_t>(TP, n - t * TP);
          matmul_tile<kRelu>(w1p.data(), s.G, s.Hp, feat + s.Gp * TP * t, b1p.data(), nullptr, nullptr, hT);
          matmul_tile<kNone>(w2p.data(), s.H, s.Op, hT, b2p.data(), nullptr, nullptr, outT);
          for (int v = 0; v < NV; ++v) {  // opacity 1 - exp(-sigma * length), sigma = exp(min(raw - 1, 15))
            const vf raw = ld(outT + v * VW) - 1.f, cap = vf{} + 15.f;
            const vf sigma = vexp(raw < cap ? raw : cap);
            st(alpha + t * TP + v * VW, 1.f - vexp(-sigma * ld(len + t * TP + v * VW)));
          }
          if (with_color) std::memcpy(geoT + geo * TP * t, outT + TP, sizeof(float) * geo * TP);  // rows 1..geo
        }
      }
      // 3. each ray composites its chunk's weights in order
      int q = 0, n_shaded = 0;
      for (int j = 0; j < nr; ++j) {
        if (!active[j]) continue;
        const float* e = ep + (r0 + j) * (S + 1);
        float* wrow = wp ? wp + (r0 + j) * S : nullptr;
        const int q1 = q + pt_count[j];
        float tr = trans[j];
        for (int64_t si = next[j]; si < std::min<int64_t>(next[j] + chunk, S); ++si) {
          if (q >= q1 || pt_sample[q] != si) continue;  // unoccupied: no density, nothing changes
          const float w = tr * alpha[q];
          if (wrow) wrow[si] = w;
          wsum[j] += w, wmid[j] += w * (0.5f * (e[si + 1] + e[si]));
          wpt[q] = w;
          if (with_color && w > wmin) shaded[n_shaded++] = q;
          tr *= 1.f - alpha[q];
          ++q;
        }
        trans[j] = tr;
        next[j] = std::min<int64_t>(next[j] + chunk, S);
        if (!(tr > fstop) || next[j] >= S) active[j] = false, --n_active;
      }
      // 4. the colour of the samples that weigh, in full tiles: geometry features (and view direction) in,
      // weight x sigmoid(rgb) onto their rays
      for (int t0 = 0; t0 < n_shaded; t0 += TP) {
        const int m = std::min(TP, n_shaded - t0);
        std::memset(cinT, 0, sizeof(float) * mc.Kc * TP);
        for (int p = 0; p < m; ++p) {
          const int pt = shaded[t0 + p];
          const float* g = geoT + geo * TP * (pt / TP) + pt % TP;
          for (int k = 0; k < geo; ++k) cinT[k * TP + p] = g[k * TP];
          if (mc.view)
            for (int k = 0; k < 3; ++k) cinT[(geo + k) * TP + p] = view[pt_ray[pt]][k];
        }
        matmul_tile<kRelu>(mc.w1.data(), geo + mc.view, mc.Hcp, cinT, mc.b1.data(), nullptr, nullptr, hcT);
        matmul_tile<kNone>(mc.w2.data(), mc.Hc, KB, hcT, mc.b2.data(), nullptr, nullptr, colT);
        sigmoid_rows(colT, 3);
        for (int p = 0; p < m; ++p) {
          const int pt = shaded[t0 + p];
          for (int k = 0; k < 3; ++k) acc[pt_ray[pt]][k] += wpt[pt] * colT[k * TP + p];
        }
      }
    }
    for (int j = 0; j < nr; ++j) {
      for (int k = 0; k < 3; ++k) cp[(r0 + j) * 3 + k] = acc[j][k];
      ap[r0 + j] = 1.f - trans[j];
      zp[r0 + j] = wmid[j] / std::max(wsum[j], 1e-8f);
    }
  };
  if (nthreads <= 1) {
    for (int64_t b = 0; b < blocks; ++b) march_block(b, 0);
  } else {
#pragma omp parallel num_threads(nthreads)
    {
      int tid = 0;
#ifdef _OPENMP
      tid = omp_get_thread_num();
#endif
#pragma omp for schedule(dynamic, 1)
      for (int64_t b = 0; b < blocks; ++b) march_block(b, tid);
    }
  }
  return {weights, rgb, opacity, depth};
}

// ---------------------------------------------------------------------------------------------------------------
// Fused torso field for one frame (nerfvc/field/fields.py TorsoField with the frame's pose and codes folded into
// the first-layer biases): uv -> deformation MLP -> offset -> multiresolution 2D planes (bilinear, border) ->
// colour/alpha MLP -> sigmoid, tile by tile.

// An MLP of ReLU hidden layers on tiles: weights (in, out) padded to multiples of 8.
struct TileMLP {
  std::vector<std::vector<float>> w, b;
  std::vector<int64_t> k, m, kin;  // padded rows and columns; real inputs
  int64_t widest = 0;
};

static TileMLP tile_mlp(const std::vector<torch::Tensor>& ws, const std::vector<torch::Tensor>& bs) {
  TORCH_CHECK(!ws.empty() && ws.size() == bs.size(), "fused torso: one bias per weight");
  TileMLP mlp;
  for (size_t i = 0; i < ws.size(); ++i) {
    const auto& w = ws[i];
    TORCH_CHECK(w.scalar_type() == torch::kFloat32 && w.is_contiguous() && w.dim() == 2 &&
                    bs[i].scalar_type() == torch::kFloat32 && bs[i].is_contiguous() && bs[i].numel() == w.size(1),
                "fused torso: layers must be float32 contiguous (in,out) weights and (out,) biases");
    TORCH_CHECK(i == 0 || w.size(0) == ws[i - 1].size(1), "fused torso: layer sizes do not chain");
    const int64_t k = pad8(w.size(0)), m = pad8(w.size(1));
    mlp.w.push_back(padded(w, k, m, false));
    mlp.b.push_back(padded(bs[i].view({1, -1}), 1, m, false));
    mlp.k.push_back(k), mlp.m.push_back(m), mlp.kin.push_back(w.size(0));
    mlp.widest = std::max(mlp.widest, std::max(k, m));
  }
  return mlp;
}

// Runs `mlp` (at least one layer) on a tile inT (k[0] rows); a and b are scratch tiles of `widest` rows. Returns
// the output tile (a or b).
static float* run_mlp(const TileMLP& mlp, const float* inT, float* a, float* b) {
  const float* x = inT;
  float* y = a;
  for (size_t i = 0; i < mlp.w.size(); ++i) {
    y = (i % 2 == 0) ? a : b;
    if (i + 1 < mlp.w.size())
      matmul_tile<kRelu>(mlp.w[i].data(), mlp.kin[i], mlp.m[i], x, mlp.b[i].data(), nullptr, nullptr, y);
    else
      matmul_tile<kNone>(mlp.w[i].data(), mlp.kin[i], mlp.m[i], x, mlp.b[i].data(), nullptr, nullptr, y);
    x = y;
  }
  return y;
}

// uv (N,2); planes: (C,h,w) each; deform / net: weights (in,out) and biases of each layer (ReLU between) with
// the frame's shared inputs already in the first biases; the deformation's 2 outputs become an offset
// tanh(.) * max_offset -> rgba (N,4) in [0,1]
torch::Tensor fused_torso(torch::Tensor uv, std::vector<torch::Tensor> planes, std::vector<torch::Tensor> deform_w,
                          std::vector<torch::Tensor> deform_b, std::vector<torch::Tensor> net_w,
                          std::vector<torch::Tensor> net_b, double max_offset, int64_t threads) {
  TORCH_CHECK(uv.scalar_type() == torch::kFloat32 && uv.is_contiguous() && uv.dim() == 2 && uv.size(1) == 2,
              "fused torso: uv must be (N,2) float32 contiguous");
  int64_t P = 0;
  for (const auto& p : planes) {
    TORCH_CHECK(p.scalar_type() == torch::kFloat32 && p.is_contiguous() && p.dim() == 3,
                "fused torso: planes must be (C,h,w) float32 contiguous");
    P += p.size(0);
  }
  const TileMLP deform = tile_mlp(deform_w, deform_b), net = tile_mlp(net_w, net_b);
  TORCH_CHECK(deform_w[0].size(0) == 2 && deform_w.back().size(1) == 2, "fused torso: deformation is 2 -> 2");
  TORCH_CHECK(net_w[0].size(0) == P && net_w.back().size(1) == 4, "fused torso: net is plane features -> 4");
  const int64_t N = uv.size(0);
  auto out = torch::empty({N, 4}, uv.options());
  if (N == 0) return out;
  const float* up = uv.data_ptr<float>();
  float* outp = out.data_ptr<float>();
  const float mo = (float)max_offset;
  const int64_t tiles = (N + TP - 1) / TP;
  const int nthreads = (int)std::max<int64_t>(1, std::min<int64_t>(threads, tiles));
  const int64_t widest = std::max(deform.widest, net.widest);
  std::vector<std::vector<vf>> scratch(nthreads);
  for (auto& v : scratch) v.assign((size_t)(8 + deform.k[0] + net.k[0] + 2 * widest) * NV, vf{});
  for_tiles(tiles, nthreads, [&](int64_t t, int tid) {
    float* uvT = (float*)scratch[tid].data();  // 8 rows: u, v, zeros
    float *dinT = uvT + 8 * TP, *featT = dinT + deform.k[0] * TP, *a = featT + net.k[0] * TP, *b = a + widest * TP;
    const int64_t n0 = t * TP;
    const int n = (int)std::min<int64_t>(TP, N - n0);
    std::memset(dinT, 0, sizeof(float) * deform.k[0] * TP);
    for (int p = 0; p < n; ++p) dinT[p] = up[(n0 + p) * 2], dinT[TP + p] = up[(n0 + p) * 2 + 1];
    const float* off = run_mlp(deform, dinT, a, b);
    for (int p = 0; p < TP; ++p)
      for (int k = 0; k < 2; ++k) {
        const float q = dinT[k * TP + p] + std::tanh(off[k * TP + p]) * mo;
        uvT[k * TP + p] = q < 0.f ? 0.f : (q > 1.f ? 1.f : q);
      }
    std::memset(featT, 0, sizeof(float) * net.k[0] * TP);
    int64_t row = 0;
    for (const auto& pl : planes) {  // bilinear, padding "border", align_corners=False (as F.grid_sample)
      const int64_t C = pl.size(0), h = pl.size(1), w = pl.size(2);
      const float* pp = pl.data_ptr<float>();
      for (int p = 0; p < n; ++p) {
        const float xr = uvT[p] * w - 0.5f, yr = uvT[TP + p] * h - 0.5f;
        const float x = xr < 0.f ? 0.f : (xr > (float)(w - 1) ? (float)(w - 1) : xr);
        const float y = yr < 0.f ? 0.f : (yr > (float)(h - 1) ? (float)(h - 1) : yr);
        const int64_t x0 = (int64_t)x, y0 = (int64_t)y;
        const int64_t x1 = std::min(x0 + 1, w - 1), y1 = std::min(y0 + 1, h - 1);
        const float fx = x - (float)x0, fy = y - (float)y0;
        for (int64_t c = 0; c < C; ++c) {
          const float* q = pp + c * h * w;
          const float top = q[y0 * w + x0] + fx * (q[y0 * w + x1] - q[y0 * w + x0]);
          const float bot = q[y1 * w + x0] + fx * (q[y1 * w + x1] - q[y1 * w + x0]);
          featT[(row + c) * TP + p] = top + fy * (bot - top);
        }
      }
      row += C;
    }
    float* rgba = run_mlp(net, featT, a, b);
    sigmoid_rows(rgba, 4);
    for (int p = 0; p < n; ++p)
      for (int k = 0; k < 4; ++k) outp[(n0 + p) * 4 + k] = rgba[k * TP + p];
  });
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Slab test of a frame's rays against the head box in one pass (nerfvc/render/rays.py `intersect_box`, the same
// float operations in the same order, so the results are identical). origin (R,3), or (1,3) shared by every ray;
// direction (R,3); lo, hi (3,) -> [t_near (R,) clamped to >= near, t_far (R,), hit (R,) bool]
std::vector<torch::Tensor> ray_box(torch::Tensor origin, torch::Tensor direction, torch::Tensor lo, torch::Tensor hi,
                                   double near, int64_t threads) {
  for (const auto* t : {&origin, &direction, &lo, &hi})
    TORCH_CHECK(t->scalar_type() == torch::kFloat32 && t->is_contiguous() && t->device().is_cpu(),
                "ray box: float32 contiguous CPU tensors expected");
  const int64_t R = direction.size(0);
  TORCH_CHECK(direction.dim() == 2 && direction.size(1) == 3, "ray box: direction must be (R,3)");
  TORCH_CHECK(origin.dim() == 2 && origin.size(1) == 3 && (origin.size(0) == R || origin.size(0) == 1),
              "ray box: origin must be (R,3) or (1,3)");
  TORCH_CHECK(lo.numel() == 3 && hi.numel() == 3, "ray box: lo and hi must have 3 values");
  auto t_near = torch::empty({R}, direction.options()), t_far = torch::empty({R}, direction.options());
  auto hit = torch::empty({R}, direction.options().dtype(torch::kBool));
  const float *op = origin.data_ptr<float>(), *dp = direction.data_ptr<float>();
  const float *lp = lo.data_ptr<float>(), *hp = hi.data_ptr<float>();
  float *np = t_near.data_ptr<float>(), *fp = t_far.data_ptr<float>();
  bool* hitp = hit.data_ptr<bool>();
  const int64_t ostride = origin.size(0) == 1 ? 0 : 3, blocks = (R + 4095) / 4096;
  const float fnear = (float)near;
  const int nthreads = (int)std::max<int64_t>(1, std::min<int64_t>(threads, blocks));
  for_tiles(blocks, nthreads, [&](int64_t blk, int) {
    for (int64_t r = blk * 4096; r < std::min<int64_t>(R, (blk + 1) * 4096); ++r) {
      float tn = -INFINITY, tf = INFINITY;
      for (int k = 0; k < 3; ++k) {
        float d = dp[r * 3 + k];
        d = std::fabs(d) < 1e-9f ? 1e-9f : d;
        const float inv = 1.f / d, o = op[r * ostride + k];
        const float a = (lp[k] - o) * inv, b = (hp[k] - o) * inv;
        tn = std::max(tn, std::min(a, b));
        tf = std::min(tf, std::max(a, b));
      }
      tn = tn < fnear ? fnear : tn;
      np[r] = tn, fp[r] = tf, hitp[r] = tf > tn;
    }
  });
  return {t_near, t_far, hit};
}

// ---------------------------------------------------------------------------------------------------------------
// Fine bins of a frame's head rays from the coarse pass (nerfvc/render/fast.py), as fractions of a ray's span:
// each coarse cell takes the bin-wise maximum of its corner rays' weights over B uniform bins of [0,1], then
// inverse-CDF samples n bins from them exactly as nerfvc/render/samplers.py `importance` (dilated by one bin,
// 1% uniform floor). Every pixel of the cell scales them to its own [t_near, t_far].

// coarse (Pc,B) weights; neighbours (K,R) int64 rows of `coarse` -> edges (R,n+1) in [0,1]
torch::Tensor unit_fine_edges(torch::Tensor coarse, torch::Tensor neighbours, int64_t n, int64_t threads) {
  TORCH_CHECK(coarse.scalar_type() == torch::kFloat32 && coarse.is_contiguous() && coarse.dim() == 2,
              "fine edges: coarse weights must be (Pc,B) float32 contiguous");
  TORCH_CHECK(neighbours.scalar_type() == torch::kInt64 && neighbours.is_contiguous() && neighbours.dim() == 2,
              "fine edges: neighbours must be (K,R) int64 contiguous");
  const int64_t B = coarse.size(1), K = neighbours.size(0), R = neighbours.size(1), Pc = coarse.size(0);
  TORCH_CHECK(n >= 1 && B >= 1 && K >= 1, "fine edges: n >= 1 and some bins and neighbours");
  auto out = torch::empty({R, n + 1}, coarse.options());
  const float* cw = coarse.data_ptr<float>();
  const int64_t* nb = neighbours.data_ptr<int64_t>();
  for (int64_t k = 0; k < K * R; ++k) TORCH_CHECK(nb[k] >= 0 && nb[k] < Pc, "fine edges: neighbour out of range");
  float* op = out.data_ptr<float>();
  const int64_t blocks = (R + 255) / 256;
  const int nthreads = (int)std::max<int64_t>(1, std::min<int64_t>(threads, blocks));
  for_tiles(blocks, nthreads, [&](int64_t blk, int) {
    std::vector<float> w(B), d(B), cdf(B + 1);
    for (int64_t r = blk * 256; r < std::min<int64_t>(R, (blk + 1) * 256); ++r) {
      for (int64_t b = 0; b < B; ++b) w[b] = cw[nb[r] * B + b];
      for (int64_t k = 1; k < K; ++k)
        for (int64_t b = 0; b < B; ++b) w[b] = std::max(w[b], cw[nb[k * R + r] * B + b]);
      float mean = 0.f;
      for (int64_t b = 0; b < B; ++b) {  // max_pool1d(3, 1, 1)
        float m = w[b];
        if (b > 0) m = std::max(m, w[b - 1]);
        if (b + 1 < B) m = std::max(m, w[b + 1]);
        d[b] = m, mean += m;
      }
      mean /= (float)B;
      float total = 0.f;
      for (int64_t b = 0; b < B; ++b) d[b] += 0.01f * mean + 1e-5f, total += d[b];
      const float inv_total = 1.f / total, inv_b = 1.f / (float)B, inv_n = 1.f / (float)n;
      cdf[0] = 0.f;
      float c = 0.f;
      for (int64_t b = 0; b < B; ++b) c += d[b] * inv_total, cdf[b + 1] = std::min(c, 1.f);
      int64_t idx = 1;
      for (int64_t i = 0; i <= n; ++i) {
        const float u = (float)i * inv_n;
        while (idx < B && cdf[idx] <= u) ++idx;  // searchsorted(right=True), clamped to [1, B]
        const float c0 = cdf[idx - 1], c1 = cdf[idx];
        const float gap = c1 - c0 > 1e-8f ? c1 - c0 : 1e-8f;
        float frac = (u - c0) / gap;
        frac = frac < 0.f ? 0.f : (frac > 1.f ? 1.f : frac);
        const float e0 = (float)(idx - 1) * inv_b;
        op[r * (n + 1) + i] = e0 + frac * inv_b;
      }
    }
  });
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Expression blend shapes (nerfvc/field/blend.py): out[n] = sum_k code[n,k] * trilerp(B_k, x[n]) for a dense
// grid B of C channels of F features, stored vertex-major (V, C*F) so a corner's C*F values are one contiguous
// row (one or two cache lines) instead of C scattered gathers. Same vertex indexing and interpolation as a dense
// level of hashgrid.cpp (vertex (i,j,l) at row i + side*(j + side*l), side = r+1). Per point:
// s = sum_c w_c * row_c (C*F floats), then out[f] = sum_k code[k] * s[k*F+f]. Backward: grad_code[k] =
// sum_f g[f] * s[k*F+f]; the table gradient row_c += w_c * code[k] * g[f] goes to per-thread tables (thread 0
// writes the result) reduced at the end, so it is race-free and deterministic for a given thread count.

// corner rows idx[8] and trilinear weights w[8] of point p at resolution r (p clamped to [0,1])
static inline void blend_corners(const float* p, int64_t r, int64_t* idx, float* w) {
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
static inline void blend_interpolate(const float* __restrict__ table, const int64_t* idx, const float* w, int64_t cf,
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

static void blend_check(const torch::Tensor& x, const torch::Tensor& table, const torch::Tensor& code, int64_t r,
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
      blend_corners(xp + 3 * (n0 + i), r, idx[i], w[i]);
      for (int c = 0; c < 8; ++c) prefetch_row(tp + idx[i][c] * CF, CF);
    }
    for (int64_t i = 0; i < nb; ++i) {
      const int64_t n = n0 + i;
      blend_interpolate<CT * FT>(tp, idx[i], w[i], CF, s);
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
  blend_check(x, table, code, r, F);
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
      blend_corners(xp + 3 * (n0 + i), r, idx[i], w[i]);
      for (int c = 0; c < 8; ++c) {
        prefetch_row(tp + idx[i][c] * CF, CF);
        prefetch_row(gt + idx[i][c] * CF, CF);
      }
    }
    for (int64_t i = 0; i < nb; ++i) {
      const int64_t n = n0 + i;
      blend_interpolate<CT * FT>(tp, idx[i], w[i], CF, s);
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
  blend_check(x, table, code, r, F);
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

// Denormal floats (below ~1.2e-38) cost ~100x a normal operation on x86, and training makes them (Adam's
// second moments of the blend shapes' tiny gradients: a 1-thread step on a Xeon with AVX512_BF16 grew from
// ~0.33 to ~0.41 s as they appeared). flush_denormals sets flush-to-zero and denormals-are-zero (MXCSR,
// which is per thread) on the calling thread, this extension's OpenMP threads and torch's intra-op
// threads; it returns whether every one of them now has the mode asked for.
static bool set_flush_bits(bool on) {
  constexpr unsigned bits = 0x8040;  // FTZ (bit 15) | DAZ (bit 6)
  const unsigned csr = _mm_getcsr();
  _mm_setcsr(on ? (csr | bits) : (csr & ~bits));
  return ((_mm_getcsr() & bits) == bits) == on;
}

bool flush_denormals(bool on, int64_t threads) {
  int ok = set_flush_bits(on);
#pragma omp parallel num_threads(std::max<int64_t>(1, threads)) reduction(&& : ok)
  ok = set_flush_bits(on);
  std::vector<int> torch_ok(std::max<int64_t>(1, threads), 1);
  at::parallel_for(0, (int64_t)torch_ok.size(), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) torch_ok[i] = set_flush_bits(on);
  });
  return ok && std::all_of(torch_ok.begin(), torch_ok.end(), [](int v) { return v != 0; });
}

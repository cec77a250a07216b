// Reference-texture blend for CPU (nerfvc/render/references.py, blend_references_torch is the reference): a few
// passes over the head's pixels instead of ~60 full-size tensor operations. The render's low band and detail
// energy are box-filtered on the head's box (edges replicated, as low_pass); every head pixel projects its
// surface point into each prepared reference; each reference is aligned to the render by the shift whose low
// band matches best (searched on a grid of every 2σ-th pixel, smoothed there); then every head pixel samples the
// references' 8 channels bilinearly at the shifted points (zeros outside the crop, as grid_sample with
// align_corners=False) and accumulates the two bands' weights in registers; a last pass scales the references'
// mean detail by the low-passed ratio of their mean detail energy to the mean detail's. Rows and pixels are
// split over `threads` OpenMP threads; the result does not depend on their count. Scratch buffers are kept per
// thread across calls (fresh pages cost more than the arithmetic).
#include <torch/extension.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

// A buffer of at least n floats reused across calls on this thread (the blend's scratch: fresh pages for
// tens of MB per frame cost more than the arithmetic); its contents are left from the last use.
template <class T>
static T* scratch(std::vector<T>& buffer, size_t n) {
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

// out (n,c) = the mean of in (n,c) over 2r + 1 neighbours, indices clamped (one box of low_pass, along a line):
// a running sum of whole points (the c channels contiguous, vectorised)
static void box_1d(const float* __restrict in, float* __restrict out, int n, int c, int r) {
  const float inv = 1.0f / (float)(2 * r + 1);
  float* __restrict sum = out;  // the running sum, scaled in place once the next point has used it
  for (int ch = 0; ch < c; ++ch) sum[ch] = 0.f;
  for (int i = -r; i <= r; ++i) {
    const float* p = in + (size_t)std::clamp(i, 0, n - 1) * c;
    for (int ch = 0; ch < c; ++ch) sum[ch] += p[ch];
  }
  for (int x = 1; x < n; ++x) {
    const float* add = in + (size_t)std::min(x + r, n - 1) * c;
    const float* sub = in + (size_t)std::max(x - r - 1, 0) * c;
    float* prev = out + (size_t)(x - 1) * c;
    float* cur = out + (size_t)x * c;
    for (int ch = 0; ch < c; ++ch) cur[ch] = prev[ch] + (add[ch] - sub[ch]);
    for (int ch = 0; ch < c; ++ch) prev[ch] *= inv;
  }
  for (int ch = 0; ch < c; ++ch) out[(size_t)(n - 1) * c + ch] *= inv;
}

// low_pass of the (h,w,c) image `in` (two box filters of radius r, edges replicated, as low_pass in
// nerfvc/render/references.py) made row by row, without the whole image: f(y, row) is handed each output row y
// (w·c), rows split over `threads` OpenMP threads in bands (f runs on them). Input rows are low-passed along x
// as they are first needed and kept with the first vertical box's rows in rings of 2r + 2: the image's bytes
// are read about once, in cache. Every row is summed the same way whatever the bands: the result does not
// depend on the thread count.
template <class F>
static void low_pass_rows(const float* in, int h, int w, int c, int r, int threads, F&& f) {
  const int R = 2 * r + 2;
  const size_t n = (size_t)w * c;
  const float inv = 1.0f / (float)(2 * r + 1);
#pragma omp parallel num_threads(threads)
  {
#ifdef _OPENMP
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
    const int t = 0, nt = 1;
#endif
    std::vector<float> ring_x((size_t)R * n), ring_y((size_t)R * n), half(n), sum(n), out(n);
    std::vector<int> at_x(R, -1), at_y(R, -1);  // the row each slot holds
    auto along_x = [&](int k) -> const float* {  // input row k, low-passed along x
      float* slot = ring_x.data() + (size_t)(k % R) * n;
      if (at_x[k % R] != k) {
        box_1d(in + (size_t)k * n, half.data(), w, c, r);
        box_1d(half.data(), slot, w, c, r);
        at_x[k % R] = k;
      }
      return slot;
    };
    auto box_y = [&](int k) -> const float* {  // the first vertical box at row k
      float* slot = ring_y.data() + (size_t)(k % R) * n;
      if (at_y[k % R] != k) {
        std::fill(sum.begin(), sum.end(), 0.f);
        float* __restrict acc = sum.data();
        for (int i = -r; i <= r; ++i) {
          const float* __restrict row = along_x(std::clamp(k + i, 0, h - 1));
          for (size_t j = 0; j < n; ++j) acc[j] += row[j];
        }
        for (size_t j = 0; j < n; ++j) slot[j] = acc[j] * inv;
        at_y[k % R] = k;
      }
      return slot;
    };
    const int y_end = (int)((int64_t)h * (t + 1) / nt);
    for (int y = (int)((int64_t)h * t / nt); y < y_end; ++y) {
      std::fill(out.begin(), out.end(), 0.f);
      float* __restrict acc = out.data();
      for (int i = -r; i <= r; ++i) {
        const float* __restrict row = box_y(std::clamp(y + i, 0, h - 1));
        for (size_t j = 0; j < n; ++j) acc[j] += row[j];
      }
      for (size_t j = 0; j < n; ++j) acc[j] *= inv;
      f(y, out.data());
    }
  }
}

// in (h,w,c) → out (h,w,c): low_pass_rows written out
static void low_pass(const float* in, float* out, int h, int w, int c, int r, int threads) {
  const size_t n = (size_t)w * c;
  low_pass_rows(in, h, w, c, r, threads, [&](int y, const float* row) { std::copy(row, row + n, out + y * n); });
}

// f(i, ci, a) for every head pixel (opacity a ≥ amin and > 0) in rows ymin..ymax, columns xmin..xmax: i its
// index in the (·,W) frame, ci in the crop of width cw from row cy0, column cx0; rows split over threads
template <class F>
static void for_head_pixels(const float* alpha, int W, int ymin, int ymax, int xmin, int xmax, float amin, int cy0,
                            int cx0, int cw, int threads, F&& f) {
#pragma omp parallel for num_threads(threads) schedule(dynamic, 4)
  for (int y = ymin; y <= ymax; ++y)
    for (int x = xmin; x <= xmax; ++x) {
      const size_t i = (size_t)y * W + x;
      const float a = alpha[i];
      if (a >= amin && a > 0.f) f(i, (size_t)(y - cy0) * cw + (x - cx0), a);
    }
}

struct Reference {
  const float* data;  // (ch,cw,8): colour, low-passed colour, head depth, detail energy
  int ch, cw, x0, y0;
  float rot[9], t[3];
};

// ref's channels C0..C0+NC-1 (of 8) at pixel position (u, v) into out[0..NC), bilinear, zero outside its crop
template <int C0 = 0, int NC = 8>
static inline void sample(const Reference& ref, float u, float v, float* out) {
  for (int k = 0; k < NC; ++k) out[k] = 0.f;
  const float ix = u - (float)ref.x0 - 0.5f, iy = v - (float)ref.y0 - 0.5f;
  if (!(ix > -1.f && iy > -1.f && ix < (float)ref.cw && iy < (float)ref.ch)) return;  // also NaN
  const int xa = (int)std::floor(ix), ya = (int)std::floor(iy);
  const float fx = ix - (float)xa, fy = iy - (float)ya;
  const float wts[4] = {(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy};
  const int xs[4] = {xa, xa + 1, xa, xa + 1}, ys[4] = {ya, ya, ya + 1, ya + 1};
  if (xa >= 0 && ya >= 0 && xa + 1 < ref.cw && ya + 1 < ref.ch) {  // all four corners inside
    const float* p = ref.data + ((size_t)ya * ref.cw + xa) * 8 + C0;
    const float* q = p + (size_t)ref.cw * 8;
    for (int k = 0; k < NC; ++k) out[k] = wts[0] * p[k] + wts[1] * p[8 + k] + wts[2] * q[k] + wts[3] * q[8 + k];
    return;
  }
  for (int q = 0; q < 4; ++q) {
    if (xs[q] < 0 || ys[q] < 0 || xs[q] >= ref.cw || ys[q] >= ref.ch) continue;
    const float* p = ref.data + ((size_t)ys[q] * ref.cw + xs[q]) * 8 + C0;
    for (int k = 0; k < NC; ++k) out[k] += wts[q] * p[k];
  }
}

// 1 where a point at reference depth z is the surface the reference shows there (its sampled head depth within
// the tolerance `tol` of z), else 0: visible() in nerfvc/render/references.py
static inline float visible(float z, float depth, float tol) {
  return std::fabs(z - depth) < tol * z ? 1.f : 0.f;
}

// ref's low-passed colour and head depth (channels 3..6) at the n1 × n1 points (u + (i − s)·step, v + (j − s)·step),
// s = (n1 − 1)/2, into out[(j·n1 + i)·4 + k]: sample<3, 4> at each point, by rows: each reference row the
// points reach is interpolated once at the n1 columns, then the n1 rows from those
constexpr int MAX_SHIFTS = 9, MAX_ROWS = 64;
static bool sample_shifts(const Reference& ref, float u, float v, int n1, float step, float* out) {
  const int s = (n1 - 1) / 2;
  int xa[MAX_SHIFTS], ya[MAX_SHIFTS];
  float fx[MAX_SHIFTS], fy[MAX_SHIFTS];
  for (int i = 0; i < n1; ++i) {
    // clamped to just outside the crop: the taps there are zeros either way
    const float ix = std::clamp(u + (float)(i - s) * step - (float)ref.x0 - 0.5f, -2.f, (float)ref.cw + 1.f);
    const float iy = std::clamp(v + (float)(i - s) * step - (float)ref.y0 - 0.5f, -2.f, (float)ref.ch + 1.f);
    if (!(ix == ix && iy == iy)) return false;  // NaN
    xa[i] = (int)std::floor(ix), ya[i] = (int)std::floor(iy);
    fx[i] = ix - (float)xa[i], fy[i] = iy - (float)ya[i];
  }
  const int y_first = ya[0], n_rows = ya[n1 - 1] + 2 - y_first;
  if (n_rows > MAX_ROWS) return false;
  float rows[MAX_ROWS][MAX_SHIFTS][4];
  for (int r = 0; r < n_rows; ++r) {
    const int y = y_first + r;
    if (y < 0 || y >= ref.ch) {
      for (int i = 0; i < n1; ++i)
        for (int k = 0; k < 4; ++k) rows[r][i][k] = 0.f;
      continue;
    }
    const float* row = ref.data + (size_t)y * ref.cw * 8 + 3;
    for (int i = 0; i < n1; ++i) {
      const int x = xa[i];
      const bool left = x >= 0 && x < ref.cw, right = x + 1 >= 0 && x + 1 < ref.cw;
      for (int k = 0; k < 4; ++k)
        rows[r][i][k] = (left ? (1 - fx[i]) * row[(size_t)x * 8 + k] : 0.f) +
                        (right ? fx[i] * row[(size_t)(x + 1) * 8 + k] : 0.f);
    }
  }
  for (int j = 0; j < n1; ++j) {
    const float(*top)[4] = rows[ya[j] - y_first], (*bottom)[4] = rows[ya[j] + 1 - y_first];
    for (int i = 0; i < n1; ++i)
      for (int k = 0; k < 4; ++k) out[(j * n1 + i) * 4 + k] = (1 - fy[j]) * top[i][k] + fy[j] * bottom[i][k];
  }
  return true;
}

// The shift (du, dv) aligning reference `ref` to the render at each head pixel of the crop (align_offsets in
// nerfvc/render/references.py): `proj` (ch·cw,3) the head pixels' u, v, z in the reference, `low` (ch·cw,3)
// the render's low band, `head` the crop's head pixels. On the grid of every `stride`-th pixel, shifts of a
// (2·steps + 1)² grid of `step` px are costed by the variance of the low bands' difference over a window
// (box-filtered there, radius `rw`, the head indicator as the normaliser); the cheapest are smoothed on the
// grid (radius `rs`) and interpolated bilinearly to the head pixels. `du`, `dv` are written at the head pixels.
static void align_reference(const Reference& ref, const float* proj, const float* low, const uint8_t* head,
                            int ch, int cw, int steps, float step, int stride, int rw, int rs, float hidden_cost,
                            float tol, float* du, float* dv, int threads) {
  const int n1 = 2 * steps + 1, O = n1 * n1, hc = (ch + stride - 1) / stride, wc = (cw + stride - 1) / stride;
  const int C = 4 * O + 1;  // per shift |e|² (+ the hidden cost) and e (3), then the head indicator
  static thread_local std::vector<float> cost_buffer, shift_buffer, shift_low_buffer;
  float* cost = scratch(cost_buffer, (size_t)hc * wc * C);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 4)
  for (int cy = 0; cy < hc; ++cy)
    for (int cx = 0; cx < wc; ++cx) {
      const size_t ci = (size_t)cy * stride * cw + (size_t)cx * stride;
      float* c = cost + ((size_t)cy * wc + cx) * C;
      if (!head[ci]) {
        std::fill(c, c + C, 0.f);
        continue;
      }
      const float *p = proj + ci * 3, *lo = low + ci * 3;
      float samples[MAX_SHIFTS * MAX_SHIFTS * 4];  // low-passed colour, head depth
      const bool fast = n1 <= MAX_SHIFTS && sample_shifts(ref, p[0], p[1], n1, step, samples);
      for (int o = 0; o < O; ++o) {
        float one[4];
        if (!fast)
          sample<3, 4>(ref, p[0] + (float)(o % n1 - steps) * step, p[1] + (float)(o / n1 - steps) * step, one);
        const float* sm = fast ? samples + o * 4 : one;
        const float e0 = lo[0] - sm[0], e1 = lo[1] - sm[1], e2 = lo[2] - sm[2];
        const float vis = visible(p[2], sm[3], tol);
        c[4 * o] = e0 * e0 + e1 * e1 + e2 * e2 + hidden_cost * (1.f - vis);
        c[4 * o + 1] = e0, c[4 * o + 2] = e1, c[4 * o + 3] = e2;
      }
      c[C - 1] = 1.f;
    }
  // each head grid pixel's cheapest shift (the windowed variance of e, mean |e|² − |mean e|², here times the
  // window's weight² to spare the divisions) and the head indicator, from the windowed sums row by row
  float* shift = scratch(shift_buffer, (size_t)hc * wc * 3);
  float* shift_low = scratch(shift_low_buffer, (size_t)hc * wc * 3);
  low_pass_rows(cost, hc, wc, C, rw, threads, [&](int gy, const float* window) {
    for (int gx = 0; gx < wc; ++gx) {
      const size_t g = (size_t)gy * wc + gx;
      float* sh = shift + g * 3;
      if (cost[g * C + C - 1] == 0.f) {
        sh[0] = sh[1] = sh[2] = 0.f;
        continue;
      }
      const float* c = window + (size_t)gx * C;
      const float norm = std::max(c[C - 1], 1e-6f);
      int best = 0;
      float best_cost = 0.f;
      for (int o = 0; o < O; ++o) {
        const float* co = c + 4 * o;
        const float v = co[0] * norm - (co[1] * co[1] + co[2] * co[2] + co[3] * co[3]);
        if (o == 0 || v < best_cost) best_cost = v, best = o;
      }
      sh[0] = (float)(best % n1 - steps) * step, sh[1] = (float)(best / n1 - steps) * step;
      sh[2] = 1.f;
    }
  });
  low_pass(shift, shift_low, hc, wc, 3, rs, threads);
  // bilinear at each head pixel, the smoothed indicator as the normaliser
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int y = 0; y < ch; ++y) {
    const float gy = (float)y / (float)stride;
    const int y0 = (int)gy, y1 = std::min(y0 + 1, hc - 1);
    const float fy = gy - (float)y0;
    for (int x = 0; x < cw; ++x) {
      const size_t ci = (size_t)y * cw + x;
      if (!head[ci]) continue;
      const float gx = (float)x / (float)stride;
      const int x0 = (int)gx, x1 = std::min(x0 + 1, wc - 1);
      const float fx = gx - (float)x0;
      float at[3];
      for (int k = 0; k < 3; ++k) {
        const float* a = shift_low + (size_t)y0 * wc * 3 + k;
        const float* b = shift_low + (size_t)y1 * wc * 3 + k;
        const float top = a[x0 * 3] * (1 - fx) + a[x1 * 3] * fx, bottom = b[x0 * 3] * (1 - fx) + b[x1 * 3] * fx;
        at[k] = top * (1 - fy) + bottom * fy;
      }
      const float norm = std::max(at[2], 1e-6f);
      du[ci] = at[0] / norm, dv[ci] = at[1] / norm;
    }
  }
}

// See blend_references_torch for the arguments and the blend; `radius` = low_pass_radius(blur_sigma).
torch::Tensor blend_references_fused(torch::Tensor image, torch::Tensor head_alpha, torch::Tensor points,
                                     torch::Tensor pose, std::vector<torch::Tensor> ref_data,
                                     std::vector<int64_t> ref_x0, std::vector<int64_t> ref_y0,
                                     std::vector<torch::Tensor> ref_poses, double fx, double fy, double cx,
                                     double cy, int64_t radius, double alpha_min, double agreement_sigma,
                                     double depth_tolerance, double detail_gain_max, int64_t align_steps,
                                     double align_step, int64_t align_stride, int64_t align_window_radius,
                                     int64_t align_smooth_radius, double hidden_cost, int64_t threads) {
  TORCH_CHECK(image.dtype() == torch::kFloat32 && image.is_contiguous() && image.dim() == 3 &&
                  image.size(2) == 3,
              "image must be contiguous float32 (H,W,3)");
  const int H = image.size(0), W = image.size(1);
  TORCH_CHECK(head_alpha.dtype() == torch::kFloat32 && head_alpha.is_contiguous() &&
                  head_alpha.numel() == (int64_t)H * W,
              "head_alpha must be contiguous float32 (H,W)");
  TORCH_CHECK(points.dtype() == torch::kFloat32 && points.is_contiguous() &&
                  points.numel() == (int64_t)H * W * 3,
              "points must be contiguous float32 (H,W,3)");
  const size_t K = ref_data.size();
  TORCH_CHECK(ref_x0.size() == K && ref_y0.size() == K && ref_poses.size() == K, "reference lists differ");
  auto out = image.clone();
  const float* img = image.data_ptr<float>();
  const float* alpha = head_alpha.data_ptr<float>();
  const float* pts = points.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const float amin = (float)alpha_min;

  int ymin = H, ymax = -1, xmin = W, xmax = -1;
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x)
      if (alpha[(size_t)y * W + x] >= amin && alpha[(size_t)y * W + x] > 0.f) {
        ymin = std::min(ymin, y), ymax = std::max(ymax, y);
        xmin = std::min(xmin, x), xmax = std::max(xmax, x);
      }
  if (ymax < 0 || K == 0) return out;

  std::vector<Reference> refs(K);
  for (size_t k = 0; k < K; ++k) {
    auto d = ref_data[k];
    TORCH_CHECK(d.dtype() == torch::kFloat32 && d.is_contiguous() && d.dim() == 3 && d.size(2) == 8,
                "reference data must be contiguous float32 (h,w,8)");
    auto p = ref_poses[k].to(torch::kFloat32).contiguous();
    TORCH_CHECK(p.numel() == 12, "reference pose must have 12 values");
    refs[k].data = d.data_ptr<float>();
    refs[k].ch = d.size(0), refs[k].cw = d.size(1);
    refs[k].x0 = ref_x0[k], refs[k].y0 = ref_y0[k];
    for (int i = 0; i < 9; ++i) refs[k].rot[i] = p.data_ptr<float>()[i];
    for (int i = 0; i < 3; ++i) refs[k].t[i] = p.data_ptr<float>()[9 + i];
  }
  auto pose_f = pose.to(torch::kFloat32).contiguous();
  TORCH_CHECK(pose_f.numel() == 12, "pose must have 12 values");
  const float* P = pose_f.data_ptr<float>();

  // the render's low band and detail energy on the head's box grown by what they reach (4r)
  const int r = radius, pad = 4 * r + 1;
  const int cy0 = std::max(0, ymin - pad), cx0 = std::max(0, xmin - pad);
  const int cy1 = std::min(H, ymax + pad + 1), cx1 = std::min(W, xmax + pad + 1);
  const int ch = cy1 - cy0, cw = cx1 - cx0;
  static thread_local std::vector<float> crop_buffer, low_buffer, diff2_buffer, energy_buffer, proj_buffer,
      du_buffer, dv_buffer, det_mix_buffer, det_weight_buffer, energies_buffer, energies_low_buffer;
  static thread_local std::vector<uint8_t> head_buffer;
  float* crop = scratch(crop_buffer, (size_t)ch * cw * 3);
  float* low = scratch(low_buffer, (size_t)ch * cw * 3);
  float* diff2 = scratch(diff2_buffer, (size_t)ch * cw);
  float* energy = scratch(energy_buffer, (size_t)ch * cw);
  for (int y = 0; y < ch; ++y)
    std::copy(img + ((size_t)(cy0 + y) * W + cx0) * 3, img + ((size_t)(cy0 + y) * W + cx1) * 3,
              crop + (size_t)y * cw * 3);
  low_pass(crop, low, ch, cw, 3, r, threads);
  for (size_t i = 0; i < (size_t)ch * cw; ++i) {
    float s = 0.f;
    for (int c = 0; c < 3; ++c) s += (crop[i * 3 + c] - low[i * 3 + c]) * (crop[i * 3 + c] - low[i * 3 + c]);
    diff2[i] = s;
  }
  low_pass(diff2, energy, ch, cw, 1, r, threads);

  const float fxf = fx, fyf = fy, cxf = cx, cyf = cy;
  const float inv2s2 = 1.0f / (2.0f * (float)agreement_sigma * (float)agreement_sigma);
  const float tol = depth_tolerance;
  // pass 0, per head pixel: its surface point's projection into each reference (u, v, z on the crop's grid),
  // then each reference's alignment shift
  const size_t n_crop = (size_t)ch * cw;
  float* proj = scratch(proj_buffer, K * n_crop * 3);  // read at head pixels only, as du, dv
  float* du = scratch(du_buffer, K * n_crop);
  float* dv = scratch(dv_buffer, K * n_crop);
  uint8_t* head = scratch(head_buffer, n_crop);
  std::fill(head, head + n_crop, 0);
  for_head_pixels(alpha, W, ymin, ymax, xmin, xmax, amin, cy0, cx0, cw, threads, [&](size_t i, size_t ci, float) {
    // Rᵀ(X − t): the point in canonical head space
    const float d0 = pts[i * 3] - P[9], d1 = pts[i * 3 + 1] - P[10], d2 = pts[i * 3 + 2] - P[11];
    float can[3];
    for (int j = 0; j < 3; ++j) can[j] = d0 * P[j] + d1 * P[3 + j] + d2 * P[6 + j];
    for (size_t k = 0; k < K; ++k) {
      const Reference& ref = refs[k];
      float xr[3];
      for (int j = 0; j < 3; ++j)
        xr[j] = can[0] * ref.rot[3 * j] + can[1] * ref.rot[3 * j + 1] + can[2] * ref.rot[3 * j + 2] + ref.t[j];
      const float z = std::max(xr[2], 1e-6f);
      float* p = proj + (k * n_crop + ci) * 3;
      p[0] = fxf * xr[0] / z + cxf, p[1] = fyf * xr[1] / z + cyf, p[2] = xr[2];
    }
    head[ci] = 1;
  });
  for (size_t k = 0; k < K; ++k)
    align_reference(refs[k], proj + k * n_crop * 3, low, head, ch, cw, align_steps,
                    (float)align_step, align_stride, align_window_radius, align_smooth_radius, hidden_cost, tol,
                    du + k * n_crop, dv + k * n_crop, threads);
  // pass 1, per head pixel: the frame with its new low band (into dst), the references' mean detail, the
  // detail's weight and the two detail energies (the references' weighted mean, the mean detail's) on the
  // crop's grid
  float* det_mix = scratch(det_mix_buffer, n_crop * 3);
  float* det_weight = scratch(det_weight_buffer, n_crop);
  float* energies = scratch(energies_buffer, n_crop * 2);
  float* energies_low = scratch(energies_low_buffer, n_crop * 2);
  std::fill(energies, energies + n_crop * 2, 0.f);
  for_head_pixels(alpha, W, ymin, ymax, xmin, xmax, amin, cy0, cx0, cw, threads, [&](size_t i, size_t ci, float a) {
    const float* lo = low + ci * 3;
    const float own = energy[ci];
    float acc_low[3] = {0, 0, 0}, acc_det[3] = {0, 0, 0};
    float sum_low = 0.f, sum_det = 0.f, max_low = 0.f, max_det = 0.f, acc_energy = 0.f;
    for (size_t k = 0; k < K; ++k) {
      const float* p = proj + (k * n_crop + ci) * 3;
      float s[8];
      sample(refs[k], p[0] + du[k * n_crop + ci], p[1] + dv[k * n_crop + ci], s);
      const float vis = visible(p[2], s[6], tol);
      const float e0 = lo[0] - s[3], e1 = lo[1] - s[4], e2 = lo[2] - s[5];
      const float w_low = std::exp(-(e0 * e0 + e1 * e1 + e2 * e2) * inv2s2) * vis;
      const float w_det = w_low * std::clamp(1.f - own / std::max(s[7], 1e-8f), 0.f, 1.f);
      for (int c = 0; c < 3; ++c) {
        const float d = s[c] - s[3 + c];
        acc_low[c] += w_low * s[3 + c];
        acc_det[c] += w_det * d;
        acc_energy += w_det * d * d;
      }
      sum_low += w_low, sum_det += w_det;
      max_low = std::max(max_low, w_low), max_det = std::max(max_det, w_det);
    }
    const float gl = max_low * a / std::max(sum_low, 1e-6f), inv_det = 1.f / std::max(sum_det, 1e-6f);
    float mix_energy = 0.f;
    for (int c = 0; c < 3; ++c) {
      dst[i * 3 + c] = img[i * 3 + c] + (gl * acc_low[c] - max_low * a * lo[c]);
      det_mix[ci * 3 + c] = acc_det[c] * inv_det;
      mix_energy += det_mix[ci * 3 + c] * det_mix[ci * 3 + c];
    }
    det_weight[ci] = max_det * a;
    energies[ci * 2] = acc_energy * inv_det;
    energies[ci * 2 + 1] = mix_energy;
  });
  // pass 2: the mean detail scaled toward the references' mean detail energy, both low-passed (capped):
  // details that do not align cancel in a mean
  low_pass(energies, energies_low, ch, cw, 2, r, threads);
  const float gain_max = detail_gain_max;
  for_head_pixels(alpha, W, ymin, ymax, xmin, xmax, amin, cy0, cx0, cw, threads, [&](size_t i, size_t ci, float) {
    // (box_1d's running sums can leave a zero energy a rounding error below zero)
    const float gain = std::min(
        std::sqrt(std::max(energies_low[ci * 2], 0.f) / std::max(energies_low[ci * 2 + 1], 1e-8f)), gain_max);
    for (int c = 0; c < 3; ++c)
      dst[i * 3 + c] += det_weight[ci] * (gain * det_mix[ci * 3 + c] - (img[i * 3 + c] - low[ci * 3 + c]));
  });
  return out;
}

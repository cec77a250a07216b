// Reference-texture blend for CPU (nerfvc/render/references.py, blend_references_torch is the reference): a few
// passes over the head's pixels instead of ~60 full-size tensor operations. The render's low band and detail
// energy are box-filtered on the head's box with running sums (edges replicated, as low_pass); every head
// pixel projects its surface point into each prepared reference; each reference is aligned to the render by the
// shift whose low band matches best (searched on a coarser grid, smoothed); then every head pixel samples the
// references' 8 channels bilinearly at the shifted points (zeros outside the crop, as grid_sample with
// align_corners=False) and accumulates the two bands' weights in registers; a last pass scales the references'
// mean detail by the low-passed ratio of their mean detail energy to the mean detail's. Rows and pixels are
// split over `threads` OpenMP threads; the result does not depend on their count.
#include <torch/extension.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

// in (h,w,c) → out (h,w,c): the mean over a (2r+1)² box, indices clamped to the image (replicated edges)
static void box_filter(const float* in, float* out, int h, int w, int c, int r, int threads) {
  std::vector<float> rows((size_t)h * w * c);
  const float inv = 1.0f / (float)(2 * r + 1);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int y = 0; y < h; ++y) {
    const float* src = in + (size_t)y * w * c;
    float* dst = rows.data() + (size_t)y * w * c;
    for (int ch = 0; ch < c; ++ch) {
      float s = 0.f;
      for (int i = -r; i <= r; ++i) s += src[std::clamp(i, 0, w - 1) * c + ch];
      dst[ch] = s;
      for (int x = 1; x < w; ++x) {
        s += src[std::min(x + r, w - 1) * c + ch] - src[std::max(x - r - 1, 0) * c + ch];
        dst[x * c + ch] = s;
      }
    }
  }
  // columns: running sums of whole rows (contiguous, vectorised), rows split over threads in bands
  const size_t n = (size_t)w * c;
#pragma omp parallel num_threads(threads)
  {
#ifdef _OPENMP
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
    const int t = 0, nt = 1;
#endif
    const int ya = (int)((int64_t)h * t / nt), yb = (int)((int64_t)h * (t + 1) / nt);
    if (ya < yb) {
      std::vector<float> s(n, 0.f);
      for (int i = ya - r; i <= ya + r; ++i) {
        const float* row = rows.data() + std::clamp(i, 0, h - 1) * n;
        for (size_t j = 0; j < n; ++j) s[j] += row[j];
      }
      for (int y = ya; y < yb; ++y) {
        if (y > ya) {
          const float* add = rows.data() + std::min(y + r, h - 1) * n;
          const float* sub = rows.data() + std::max(y - r - 1, 0) * n;
          for (size_t j = 0; j < n; ++j) s[j] += add[j] - sub[j];
        }
        float* o = out + (size_t)y * n;
        for (size_t j = 0; j < n; ++j) o[j] = s[j] * inv * inv;
      }
    }
  }
}

// low_pass: two box filters
static void low_pass(const float* in, float* out, int h, int w, int c, int r, int threads) {
  std::vector<float> once((size_t)h * w * c);
  box_filter(in, once.data(), h, w, c, r, threads);
  box_filter(once.data(), out, h, w, c, r, threads);
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

// The shift (du, dv) aligning reference `ref` to the render at each head pixel of the crop (align_offsets in
// nerfvc/render/references.py): `proj` (ch·cw,3) the head pixels' u, v, z in the reference, `low` (ch·cw,3)
// the render's low band, `head` the crop's head pixels. Shifts of a (2·steps + 1)² grid of `step` px are
// costed on every `stride`-th pixel by the variance of the low bands' difference over a window (box-filtered
// there, radius `rw`, the head indicator as the normaliser); each head pixel takes its grid pixel's cheapest
// shift, averaged over the head (radius `rs`). `du`, `dv` are written at the head pixels.
static void align_reference(const Reference& ref, const float* proj, const float* low, const uint8_t* head,
                            int ch, int cw, int steps, float step, int stride, int rw, int rs, float hidden_cost,
                            float tol, float* du, float* dv, int threads) {
  const int n1 = 2 * steps + 1, O = n1 * n1, hc = (ch + stride - 1) / stride, wc = (cw + stride - 1) / stride;
  const int C = 4 * O + 1;  // per shift |e|² (+ the hidden cost) and e (3), then the head indicator
  std::vector<float> cost((size_t)hc * wc * C, 0.f), cost_low(cost.size());
#pragma omp parallel for num_threads(threads) schedule(dynamic, 4)
  for (int cy = 0; cy < hc; ++cy)
    for (int cx = 0; cx < wc; ++cx) {
      const size_t ci = (size_t)cy * stride * cw + (size_t)cx * stride;
      if (!head[ci]) continue;
      const float *p = proj + ci * 3, *lo = low + ci * 3;
      float* c = cost.data() + ((size_t)cy * wc + cx) * C;
      for (int o = 0; o < O; ++o) {
        float s[4];  // low-passed colour, head depth
        sample<3, 4>(ref, p[0] + (float)(o % n1 - steps) * step, p[1] + (float)(o / n1 - steps) * step, s);
        const float e0 = lo[0] - s[0], e1 = lo[1] - s[1], e2 = lo[2] - s[2];
        const float vis = visible(p[2], s[3], tol);
        c[4 * o] = e0 * e0 + e1 * e1 + e2 * e2 + hidden_cost * (1.f - vis);
        c[4 * o + 1] = e0, c[4 * o + 2] = e1, c[4 * o + 3] = e2;
      }
      c[C - 1] = 1.f;
    }
  low_pass(cost.data(), cost_low.data(), hc, wc, C, rw, threads);
  std::vector<float> shift((size_t)ch * cw * 3, 0.f), shift_low(shift.size());
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int y = 0; y < ch; ++y)
    for (int x = 0; x < cw; ++x) {
      const size_t ci = (size_t)y * cw + x;
      if (!head[ci]) continue;
      const float* c = cost_low.data() + ((size_t)(y / stride) * wc + x / stride) * C;
      const float norm = std::max(c[C - 1], 1e-6f);
      int best = 0;
      float best_cost = 0.f;
      for (int o = 0; o < O; ++o) {  // the windowed variance of e: mean |e|² − |mean e|²
        const float m0 = c[4 * o + 1] / norm, m1 = c[4 * o + 2] / norm, m2 = c[4 * o + 3] / norm;
        const float v = c[4 * o] / norm - (m0 * m0 + m1 * m1 + m2 * m2);
        if (o == 0 || v < best_cost) best_cost = v, best = o;
      }
      shift[ci * 3] = (float)(best % n1 - steps) * step;
      shift[ci * 3 + 1] = (float)(best / n1 - steps) * step;
      shift[ci * 3 + 2] = 1.f;
    }
  low_pass(shift.data(), shift_low.data(), ch, cw, 3, rs, threads);
  for (size_t ci = 0; ci < (size_t)ch * cw; ++ci)
    if (head[ci]) {
      const float norm = std::max(shift_low[ci * 3 + 2], 1e-6f);
      du[ci] = shift_low[ci * 3] / norm, dv[ci] = shift_low[ci * 3 + 1] / norm;
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
  std::vector<float> crop((size_t)ch * cw * 3), low(crop.size()), diff2((size_t)ch * cw), energy(diff2.size());
  for (int y = 0; y < ch; ++y)
    std::copy(img + ((size_t)(cy0 + y) * W + cx0) * 3, img + ((size_t)(cy0 + y) * W + cx1) * 3,
              crop.data() + (size_t)y * cw * 3);
  low_pass(crop.data(), low.data(), ch, cw, 3, r, threads);
  for (size_t i = 0; i < diff2.size(); ++i) {
    float s = 0.f;
    for (int c = 0; c < 3; ++c) s += (crop[i * 3 + c] - low[i * 3 + c]) * (crop[i * 3 + c] - low[i * 3 + c]);
    diff2[i] = s;
  }
  low_pass(diff2.data(), energy.data(), ch, cw, 1, r, threads);

  const float fxf = fx, fyf = fy, cxf = cx, cyf = cy;
  const float inv2s2 = 1.0f / (2.0f * (float)agreement_sigma * (float)agreement_sigma);
  const float tol = depth_tolerance;
  // pass 0, per head pixel: its surface point's projection into each reference (u, v, z on the crop's grid),
  // then each reference's alignment shift
  const size_t n_crop = (size_t)ch * cw;
  std::vector<float> proj(K * n_crop * 3), du(K * n_crop), dv(K * n_crop);
  std::vector<uint8_t> head(n_crop, 0);
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
      float* p = proj.data() + (k * n_crop + ci) * 3;
      p[0] = fxf * xr[0] / z + cxf, p[1] = fyf * xr[1] / z + cyf, p[2] = xr[2];
    }
    head[ci] = 1;
  });
  for (size_t k = 0; k < K; ++k)
    align_reference(refs[k], proj.data() + k * n_crop * 3, low.data(), head.data(), ch, cw, align_steps,
                    (float)align_step, align_stride, align_window_radius, align_smooth_radius, hidden_cost, tol,
                    du.data() + k * n_crop, dv.data() + k * n_crop, threads);
  // pass 1, per head pixel: the frame with its new low band (into dst), the references' mean detail, the
  // detail's weight and the two detail energies (the references' weighted mean, the mean detail's) on the
  // crop's grid
  std::vector<float> det_mix((size_t)ch * cw * 3), det_weight((size_t)ch * cw);
  std::vector<float> energies((size_t)ch * cw * 2, 0.f), energies_low(energies.size());
  for_head_pixels(alpha, W, ymin, ymax, xmin, xmax, amin, cy0, cx0, cw, threads, [&](size_t i, size_t ci, float a) {
    const float* lo = low.data() + ci * 3;
    const float own = energy[ci];
    float acc_low[3] = {0, 0, 0}, acc_det[3] = {0, 0, 0};
    float sum_low = 0.f, sum_det = 0.f, max_low = 0.f, max_det = 0.f, acc_energy = 0.f;
    for (size_t k = 0; k < K; ++k) {
      const float* p = proj.data() + (k * n_crop + ci) * 3;
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
  low_pass(energies.data(), energies_low.data(), ch, cw, 2, r, threads);
  const float gain_max = detail_gain_max;
  for_head_pixels(alpha, W, ymin, ymax, xmin, xmax, amin, cy0, cx0, cw, threads, [&](size_t i, size_t ci, float) {
    // (running sums can leave a zero energy a rounding error below zero)
    const float gain = std::min(
        std::sqrt(std::max(energies_low[ci * 2], 0.f) / std::max(energies_low[ci * 2 + 1], 1e-8f)), gain_max);
    for (int c = 0; c < 3; ++c)
      dst[i * 3 + c] += det_weight[ci] * (gain * det_mix[ci * 3 + c] - (img[i * 3 + c] - low[ci * 3 + c]));
  });
  return out;
}

// SPDX-License-Identifier: Apache-2.0
// Our driver for ggml's public API (ggml itself is not in this repository; see build.sh).
// Standalone benchmark of ggml_flash_attn_ext on the ggml CPU backend.
// Usage: fa_bench D S H full|causal [threads]   -> timing line
//        fa_bench check [D S H full|causal]      -> compare against naive attention
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ggml-cpu.h"
#include "ggml.h"

struct Case {
  int64_t D, S, H;
  bool causal;
};

struct Setup {
  ggml_context *ctx = nullptr;
  ggml_cgraph *gf = nullptr;
  ggml_tensor *q = nullptr, *k = nullptr, *v = nullptr, *mask = nullptr, *out = nullptr;
  std::vector<uint8_t> work;
  ggml_cplan plan;
};

static Setup build(const Case &c, int n_threads, uint32_t seed) {
  Setup s;
  const int64_t D = c.D, S = c.S, H = c.H;
  size_t mem = 0;
  mem += ggml_row_size(GGML_TYPE_F32, D) * S * H;            // q
  mem += 2 * ggml_row_size(GGML_TYPE_F16, D) * S * H;        // k, v
  mem += ggml_row_size(GGML_TYPE_F32, D) * S * H;            // out
  if (c.causal) mem += ggml_row_size(GGML_TYPE_F16, S) * S;  // mask
  mem += 16 * ggml_tensor_overhead() + ggml_graph_overhead() + (1 << 20);

  ggml_init_params ip = {mem, nullptr, false};
  s.ctx = ggml_init(ip);
  if (!s.ctx) {
    fprintf(stderr, "ggml_init failed\n");
    exit(1);
  }

  s.q = ggml_new_tensor_4d(s.ctx, GGML_TYPE_F32, D, S, H, 1);
  s.k = ggml_new_tensor_4d(s.ctx, GGML_TYPE_F16, D, S, H, 1);
  s.v = ggml_new_tensor_4d(s.ctx, GGML_TYPE_F16, D, S, H, 1);
  if (c.causal) {
    // mask: ne = [n_kv, n_q, 1, 1]; this ggml version has no GGML_KQ_MASK_PAD requirement
    s.mask = ggml_new_tensor_4d(s.ctx, GGML_TYPE_F16, S, S, 1, 1);
  }

  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  {
    float *qd = (float *)s.q->data;
    for (int64_t i = 0; i < D * S * H; ++i) qd[i] = dist(rng);
    ggml_fp16_t *kd = (ggml_fp16_t *)s.k->data;
    for (int64_t i = 0; i < D * S * H; ++i) kd[i] = ggml_fp32_to_fp16(dist(rng));
    ggml_fp16_t *vd = (ggml_fp16_t *)s.v->data;
    for (int64_t i = 0; i < D * S * H; ++i) vd[i] = ggml_fp32_to_fp16(dist(rng));
  }
  if (s.mask) {
    const ggml_fp16_t zero = ggml_fp32_to_fp16(0.0f);
    const ggml_fp16_t ninf = ggml_fp32_to_fp16(-INFINITY);
    ggml_fp16_t *md = (ggml_fp16_t *)s.mask->data;
    for (int64_t i = 0; i < S; ++i)    // query row
      for (int64_t j = 0; j < S; ++j)  // key column
        md[i * S + j] = (j <= i) ? zero : ninf;
  }

  const float scale = 1.0f / std::sqrt((float)D);
  s.out = ggml_flash_attn_ext(s.ctx, s.q, s.k, s.v, s.mask, scale, 0.0f, 0.0f);
  ggml_flash_attn_ext_set_prec(s.out, GGML_PREC_F32);

  s.gf = ggml_new_graph(s.ctx);
  ggml_build_forward_expand(s.gf, s.out);

  s.plan = ggml_graph_plan(s.gf, n_threads, nullptr);
  if (s.plan.work_size > 0) {
    s.work.resize(s.plan.work_size);
    s.plan.work_data = s.work.data();
  }
  return s;
}

static double run_once(Setup &s) {
  auto t0 = std::chrono::steady_clock::now();
  ggml_status st = ggml_graph_compute(s.gf, &s.plan);
  auto t1 = std::chrono::steady_clock::now();
  if (st != GGML_STATUS_SUCCESS) {
    fprintf(stderr, "compute failed: %d\n", (int)st);
    exit(1);
  }
  return std::chrono::duration<double>(t1 - t0).count();
}

static bool parse_case(int argc, char **argv, int i0, Case &c) {
  if (argc < i0 + 4) return false;
  c.D = atoll(argv[i0]);
  c.S = atoll(argv[i0 + 1]);
  c.H = atoll(argv[i0 + 2]);
  std::string m = argv[i0 + 3];
  if (m == "causal")
    c.causal = true;
  else if (m == "full")
    c.causal = false;
  else
    return false;
  return c.D > 0 && c.S > 0 && c.H > 0;
}

static int do_check(const Case &c, int n_threads) {
  Setup s = build(c, n_threads, 1234);
  run_once(s);
  const int64_t D = c.D, S = c.S, H = c.H;
  const float scale = 1.0f / std::sqrt((float)D);
  const float *qd = (const float *)s.q->data;
  const ggml_fp16_t *kd = (const ggml_fp16_t *)s.k->data;
  const ggml_fp16_t *vd = (const ggml_fp16_t *)s.v->data;
  const float *od = (const float *)s.out->data;  // ne = [D, H, S, 1]

  std::vector<float> kf(D * S * H), vf(D * S * H), sc(S), acc(D);
  for (int64_t i = 0; i < D * S * H; ++i) {
    kf[i] = ggml_fp16_to_fp32(kd[i]);
    vf[i] = ggml_fp16_to_fp32(vd[i]);
  }

  double max_diff = 0.0, max_ref = 0.0;
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t i = 0; i < S; ++i) {
      const float *qi = qd + (h * S + i) * D;
      const int64_t nk = c.causal ? i + 1 : S;
      double mx = -INFINITY;
      for (int64_t j = 0; j < nk; ++j) {
        const float *kj = kf.data() + (h * S + j) * D;
        double dot = 0.0;
        for (int64_t d = 0; d < D; ++d) dot += (double)qi[d] * kj[d];
        sc[j] = (float)(dot * scale);
        mx = std::max(mx, (double)sc[j]);
      }
      double sum = 0.0;
      std::vector<double> o(D, 0.0);
      for (int64_t j = 0; j < nk; ++j) {
        const double p = std::exp((double)sc[j] - mx);
        sum += p;
        const float *vj = vf.data() + (h * S + j) * D;
        for (int64_t d = 0; d < D; ++d) o[d] += p * vj[d];
      }
      const float *oi = od + (i * H + h) * D;
      for (int64_t d = 0; d < D; ++d) {
        const double ref = o[d] / sum;
        max_diff = std::max(max_diff, std::fabs(ref - (double)oi[d]));
        max_ref = std::max(max_ref, std::fabs(ref));
      }
    }
  }
  const bool ok = max_diff < 1e-2;
  printf("check D=%lld S=%lld H=%lld %s: max abs diff = %.3e (max |ref| = %.3f) -> %s\n",
         (long long)D, (long long)S, (long long)H, c.causal ? "causal" : "full", max_diff, max_ref,
         ok ? "PASS" : "FAIL");
  ggml_free(s.ctx);
  return ok ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc >= 2 && std::string(argv[1]) == "check") {
    Case c{64, 128, 2, true};
    if (argc > 2 && !parse_case(argc, argv, 2, c)) {
      fprintf(stderr, "usage: %s check [D S H full|causal]\n", argv[0]);
      return 2;
    }
    return do_check(c, 2);
  }

  Case c;
  if (!parse_case(argc, argv, 1, c)) {
    fprintf(stderr, "usage: %s D S H full|causal [threads]\n       %s check [D S H full|causal]\n",
            argv[0], argv[0]);
    return 2;
  }
  const int n_threads = argc > 5 ? atoi(argv[5]) : 2;

  Setup s = build(c, n_threads, 42);
  run_once(s);  // warm-up
  std::vector<double> t;
  for (int r = 0; r < 3; ++r) t.push_back(run_once(s));
  std::sort(t.begin(), t.end());
  const double sec = t[1];

  const double S = (double)c.S;
  const double area = c.causal ? S * (S + 1) / 2 : S * S;
  const double gflops = 4.0 * area * c.H * c.D / sec / 1e9;
  printf("ggml fa D=%lld S=%lld H=%lld %s: %.1f ms %.1f GFLOP/s\n", (long long)c.D, (long long)c.S,
         (long long)c.H, c.causal ? "causal" : "full", sec * 1e3, gflops);
  ggml_free(s.ctx);
  return 0;
}

// SPDX-License-Identifier: Apache-2.0
// `longattn info [--peak]`: version, backends, SIMD level, threads; --peak measures the fp32 FMA
// throughput and copy bandwidth of this machine (the floors of bench/NOTES.md).
#include <fmt/core.h>
#include <omp.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "longattn/longattn.hpp"
#include "tools/commands.hpp"

namespace longattn::tools {
namespace {

// NOTE: 16 independent accumulators per thread: two FMA pipes x 4-cycle latency need at least
// 8 in flight; fewer would measure latency, not throughput.
#if defined(__x86_64__)
__attribute__((target("avx512f,fma"))) double fma_loop_avx512(long iters) {
  __m512 acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i) * 1e-3F);
  const __m512 a = _mm512_set1_ps(0.999999F);
  const __m512 b = _mm512_set1_ps(1e-7F);
  for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, acc[i]);
  return static_cast<double>(_mm512_reduce_add_ps(s));
}

__attribute__((target("avx2,fma"))) double fma_loop_avx2(long iters) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i) * 1e-3F);
  const __m256 a = _mm256_set1_ps(0.999999F);
  const __m256 b = _mm256_set1_ps(1e-7F);
  for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  float out[8];
  __m256 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
  _mm256_storeu_ps(out, s);
  return out[0];
}
#endif

/// The same for any CPU, as plain arrays the compiler vectorizes for the baseline target (NEON
/// on aarch64, SSE2 on an x86-64 without AVX2): 16 accumulators of 8 floats.
double fma_loop_portable(long iters) {
  float acc[16][8];
  for (int i = 0; i < 16; ++i)
    for (int l = 0; l < 8; ++l) acc[i][l] = static_cast<float>(i * 8 + l) * 1e-3F;
  for (long it = 0; it < iters; ++it) {
    for (auto& a : acc)
#if defined(__FP_FAST_FMAF)
      for (float& x : a) x = std::fma(x, 0.999999F, 1e-7F);  // one instruction (aarch64: FMLA)
#else
      for (float& x : a) x = x * 0.999999F + 1e-7F;  // no FMA unit: two, counted as two FLOPs
#endif
  }
  double s = 0.0;
  for (const auto& a : acc)
    for (const float x : a) s += x;
  return s;
}

/// The widest FMA loop this CPU runs, and its FLOPs per iteration.
struct FmaLoop {
  double (*run)(long);
  double flops_per_iter;
};
FmaLoop widest_fma_loop() {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx512f")) return {fma_loop_avx512, 16.0 * 16 * 2};
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return {fma_loop_avx2, 12.0 * 8 * 2};
#endif
  return {fma_loop_portable, 16.0 * 8 * 2};
}

}  // namespace

Peak measure_peak() {
  Peak peak;
  const FmaLoop loop = widest_fma_loop();
  const long iters = 20'000'000;
  double sink = 0.0;
  int threads = 1;
  double best = 0.0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel reduction(+ : sink)
    {
#pragma omp single
      threads = omp_get_num_threads();
      sink += loop.run(iters);
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, loop.flops_per_iter * static_cast<double>(iters) * threads / s / 1e9);
  }
  peak.gflops = best;
  // Copy bandwidth: 1 GiB, bytes read + written.
  const std::size_t bytes = std::size_t{1} << 30;
  std::unique_ptr<char[]> src(new char[bytes]);
  std::unique_ptr<char[]> dst(new char[bytes]);
  std::memset(src.get(), 1, bytes);
  std::memset(dst.get(), 0, bytes);
  double best_bw = 0.0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel
    {
      const std::size_t n = static_cast<std::size_t>(omp_get_num_threads());
      const std::size_t t = static_cast<std::size_t>(omp_get_thread_num());
      const std::size_t chunk = bytes / n;
      std::memcpy(dst.get() + t * chunk, src.get() + t * chunk, chunk);
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best_bw = std::max(best_bw, 2.0 * static_cast<double>(bytes) / s / 1e9);
  }
  peak.copy_gbps = best_bw;
  if (sink == 12345.0) fmt::print("");  // keep the loops alive
  return peak;
}

void add_info_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Version, backends, SIMD level, threads (and --peak)");
  auto peak = std::make_shared<bool>(false);
  cmd->add_flag("--peak", *peak, "Measure the fp32 FMA peak and the copy bandwidth");
  cmd->callback([peak]() {
    const RuntimeInfo info = runtime_info();
    fmt::print("longattn {}\n", info.version);
    std::string backends;
    for (const auto& b : info.backends) backends += (backends.empty() ? "" : ", ") + b;
    fmt::print("backends:  {}\n", backends);
    fmt::print("cpu simd:  {}\n", info.simd);
    fmt::print("bf16 fwd:  {}\n", info.bf16_path);
    fmt::print("threads:   {}\n", info.threads);
    fmt::print("gpus:      {}\n", info.gpus.empty() ? std::string("none") : info.gpus.front());
    if (*peak) {
      const Peak p = measure_peak();
      fmt::print("fp32 FMA peak:  {:.1f} GFLOP/s ({} threads)\n", p.gflops, info.threads);
      fmt::print("copy bandwidth: {:.1f} GB/s (read + write)\n", p.copy_gbps);
    }
  });
}

}  // namespace longattn::tools

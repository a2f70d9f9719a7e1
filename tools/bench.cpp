// SPDX-License-Identifier: Apache-2.0
// `longattn bench`: times forward and backward over suites of masks and shapes; prints ms,
// TFLOP/s over the unmasked area (DESIGN.md §5), GB/s, peak memory, and the error against the
// oracle at a small size of the same configuration.
#include <fmt/core.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "check/cases.hpp"
#include "check/device_mirror.hpp"
#include "core/problem.hpp"
#include "core/schedule.hpp"
#include "cuda/cuda_backend.hpp"
#include "longattn/longattn.hpp"
#include "tools/commands.hpp"

namespace longattn::tools {
namespace {

struct Config {
  bool backward = false;
  DType dtype = DType::kF32;
  std::string mask = "full";
  std::int64_t batch = 1, hq = 16, hkv = 16, sq = 4096, skv = 4096, dim = 128;
  std::int64_t window = -1;  // -1: S/16
  std::int64_t doc_len = 0;  // 0: seeded documents of S/64..S/4
};

struct Row {
  Config cfg;
  double ms = 0, tflops = 0, gbps = 0, peak_mb = 0, rel_err = -1, area_fraction = 0;
};

/// Process peak RSS since the last reset (Linux; 0 where unavailable).
void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }
double peak_rss_mb() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return 0.0;
}

MaskSpec mask_for(const Config& c, std::int64_t s, std::int64_t window) {
  const Pattern kind = parse_pattern(c.mask, "--mask");
  MaskSpec m = MaskSpec::of(check::scaled_pattern(kind, s, window));
  if (pattern_uses_documents(kind)) {
    if (c.doc_len > 0) {
      for (std::int64_t left = s; left > 0; left -= c.doc_len)
        m.doc_lens.push_back(std::min(left, c.doc_len));
    } else {
      m.doc_lens = check::scaled_documents(s);
    }
  }
  return m;
}

/// Error against the oracle of the same configuration at a small size.
double small_size_error(const Config& c, Backend backend) {
  check::Case k;
  k.dtype = c.dtype;
  k.backward = c.backward;
  k.sq = std::min<std::int64_t>(c.sq, 256);
  k.skv = std::min<std::int64_t>(c.skv, 256);
  k.hq = std::min<std::int64_t>(c.hq, 4);
  k.hkv = std::max<std::int64_t>(1, k.hq * c.hkv / c.hq);
  k.dim = c.dim;
  const std::int64_t window =
      c.window < 0 ? -1 : std::max<std::int64_t>(1, c.window * k.skv / c.skv);
  Config small = c;
  small.doc_len = c.doc_len > 0 ? std::max<std::int64_t>(1, c.doc_len * k.skv / c.skv) : 0;
  k.mask = mask_for(small, k.skv, window);
  const auto r = check::run_case(k, backend);
  return r.error.empty() ? r.worst_rel_l2() : -1.0;
}

struct HostTensor {
  std::vector<std::uint16_t> half;
  std::vector<float> full;
  TensorView view;
  HostTensor(DType dtype, std::initializer_list<std::int64_t> shape, std::mt19937& rng,
             bool random) {
    std::int64_t n = 1;
    for (auto s : shape) n *= s;
    std::uniform_real_distribution<float> dist(-1.0F, 1.0F);
    if (dtype == DType::kF32) {
      full.resize(static_cast<std::size_t>(n));
      if (random)
        for (auto& x : full) x = dist(rng);
      view = TensorView::contiguous(full.data(), dtype, shape);
    } else {
      half.resize(static_cast<std::size_t>(n));
      if (random) {
        for (auto& x : half) {
          x = dtype == DType::kBF16 ? detail::float_to_bf16(dist(rng))
                                    : detail::float_to_f16(dist(rng));
        }
      }
      view = TensorView::contiguous(half.data(), dtype, shape);
    }
  }
  /// A GPU copy of this tensor (the view's data is its whole allocation).
  [[nodiscard]] check::DeviceMirror on_gpu() const {
    return {view.data, static_cast<std::size_t>(view.numel()) * dtype_size(view.dtype), view};
  }
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

Row run_config(const Config& c, int reps, int threads, bool with_check, bool gpu,
               bool deterministic) {
  Row row;
  row.cfg = c;
  std::mt19937 rng(1234);
  const MaskSpec mask = mask_for(c, c.skv, c.window);
  AttentionOptions o;
  o.mask = &mask;
  o.num_threads = threads;
  o.deterministic = deterministic;
  HostTensor q(c.dtype, {c.batch, c.sq, c.hq, c.dim}, rng, true);
  HostTensor k(c.dtype, {c.batch, c.skv, c.hkv, c.dim}, rng, true);
  HostTensor v(c.dtype, {c.batch, c.skv, c.hkv, c.dim}, rng, true);
  HostTensor out(c.dtype, {c.batch, c.sq, c.hq, c.dim}, rng, false);
  HostTensor lse(DType::kF32, {c.batch, c.hq, c.sq}, rng, false);
  // Visible area from the schedule (exact: FULL and PARTIAL tiles count their visible pairs).
  const detail::Problem p =
      detail::make_forward_problem(q.view, k.view, v.view, out.view, lse.view, o);
  const double area = static_cast<double>(detail::ScheduleSet(p, 64, 64).total_area());
  row.area_fraction = area / (static_cast<double>(c.batch * c.hq) * static_cast<double>(c.sq) *
                              static_cast<double>(c.skv));
  double flops = 4.0 * area * static_cast<double>(c.dim);
  const double esize = static_cast<double>(dtype_size(c.dtype));
  double bytes = esize * static_cast<double>(2 * q.view.numel() + 2 * k.view.numel());
  const bool bwd = c.backward;
  std::optional<HostTensor> dout, dq, dk, dv;
  if (bwd) {
    dout.emplace(c.dtype, std::initializer_list<std::int64_t>{c.batch, c.sq, c.hq, c.dim}, rng,
                 true);
    dq.emplace(c.dtype, std::initializer_list<std::int64_t>{c.batch, c.sq, c.hq, c.dim}, rng,
               false);
    dk.emplace(c.dtype, std::initializer_list<std::int64_t>{c.batch, c.skv, c.hkv, c.dim}, rng,
               false);
    dv.emplace(c.dtype, std::initializer_list<std::int64_t>{c.batch, c.skv, c.hkv, c.dim}, rng,
               false);
  }
  // On the GPU: device copies of every operand, and the call timed between two device syncs
  // over all repetitions (launch overhead included, as a caller sees it).
  std::vector<check::DeviceMirror> g;
  auto view_of = [&](const HostTensor& t) -> TensorView {
    if (!gpu) return t.view;
    return g.emplace_back(t.on_gpu()).view();
  };
  g.reserve(9);
  const TensorView qv = view_of(q), kv = view_of(k), vv = view_of(v), ov = view_of(out),
                   lv = view_of(lse);
  TensorView dov, dqv, dkv, dvv;
  if (bwd) {
    dov = view_of(*dout);
    dqv = view_of(*dq);
    dkv = view_of(*dk);
    dvv = view_of(*dv);
  }
  auto call = [&]() {
    if (bwd) {
      attention_backward(qv, kv, vv, ov, lv, dov, dqv, dkv, dvv, {}, o);
    } else {
      attention_forward(qv, kv, vv, ov, lv, o);
    }
  };
  reset_peak_rss();
  attention_forward(qv, kv, vv, ov, lv, o);  // warm-up (and the backward's input)
  if (bwd) {
    flops *= 2.5;
    bytes *= 2.0;
    call();  // warm-up
  }
  std::vector<double> times;
  if (gpu) {
    detail::cuda::synchronize(0);
    const auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r) call();
    detail::cuda::synchronize(0);
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
                    reps);
  } else {
    for (int r = 0; r < reps; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      call();
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  row.peak_mb = gpu ? 0.0 : peak_rss_mb();
  const double s = median(times);
  row.ms = s * 1e3;
  row.tflops = flops / s / 1e12;
  row.gbps = bytes / s / 1e9;
  if (with_check) row.rel_err = small_size_error(c, gpu ? Backend::kCUDA : Backend::kCPU);
  return row;
}

std::vector<Config> suite(const std::string& name) {
  std::vector<Config> out;
  if (name == "quick" || name == "all") {
    // The twelve benchmark masks (LongCA-bench semantics, its 8:1 GQA ratio), fwd and bwd.
    for (Pattern pat : benchmark_patterns()) {
      for (bool bwd : {false, true}) {
        Config c;
        c.mask = pattern_name(pat);
        c.hq = 8;
        c.hkv = 1;
        c.sq = c.skv = 4096;
        c.backward = bwd;
        out.push_back(c);
      }
    }
  }
  if (name == "kernels" || name == "all") {
    // The shapes of the Foundation bars (bench/NOTES.md).
    for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
      for (const char* m : {"full", "causal"}) {
        Config c;
        c.dtype = dt;
        c.mask = m;
        out.push_back(c);
      }
    }
    for (const char* m : {"full", "causal", "sliding_window_causal"}) {
      Config c;
      c.mask = m;
      c.hq = c.hkv = 4;
      c.sq = c.skv = 16384;
      c.window = 512;
      out.push_back(c);
    }
    for (const char* m : {"full", "causal"}) {
      Config c;
      c.mask = m;
      c.backward = true;
      out.push_back(c);
    }
  }
  if (name == "masks" || name == "all") {
    for (Pattern pat : benchmark_patterns()) {
      Config c;
      c.mask = pattern_name(pat);
      c.hq = 8;
      c.hkv = 1;
      c.sq = c.skv = 8192;
      out.push_back(c);
    }
  }
  if (name == "gpu") {
    // The CUDA bars of the CUDA-backend issue (bf16), in the shapes of anchors_gpu.py: dense
    // and causal at D = 128 and 64, B*S = 16384, H = 2048 / D; backward at S = 8192, B = 2; the
    // twelve masks in the setting of
    // ../shared/anchors/longca_masks_flex.py (64 query / 8 KV heads, D = 128, S = 16384).
    for (std::int64_t dim : {128, 64}) {
      for (const char* m : {"full", "causal"}) {
        Config c;
        c.dtype = DType::kBF16;
        c.mask = m;
        c.dim = dim;
        c.hq = c.hkv = 2048 / dim;  // anchors_gpu.py: H = 2048 / D
        c.sq = c.skv = 16384;
        out.push_back(c);
      }
    }
    for (const char* m : {"full", "causal"}) {
      Config c;
      c.dtype = DType::kBF16;
      c.mask = m;
      c.batch = 2;
      c.sq = c.skv = 8192;
      c.backward = true;
      out.push_back(c);
    }
    // Decode (one query, 32 query / 8 KV heads, D = 128) as in anchors_gpu.py's decode rows.
    for (const auto& [b, len] :
         {std::pair<std::int64_t, std::int64_t>{1, 4096}, {16, 32768}, {1, 131072}, {64, 4096}}) {
      Config c;
      c.dtype = DType::kBF16;
      c.mask = "full";
      c.batch = b;
      c.hq = 32;
      c.hkv = 8;
      c.sq = 1;
      c.skv = len;
      out.push_back(c);
    }
    for (Pattern pat : benchmark_patterns()) {
      for (bool bwd : {false, true}) {
        Config c;
        c.dtype = DType::kBF16;
        c.mask = pattern_name(pat);
        c.hq = 64;
        c.hkv = 8;
        c.sq = c.skv = 16384;
        c.backward = bwd;
        out.push_back(c);
      }
    }
  }
  if (out.empty()) {
    throw Error(ErrorKind::kInvalidArgument, "--suite",
                "unknown suite '" + name + "', expected quick, masks, kernels, gpu or all");
  }
  return out;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> parts;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) {
    if (!item.empty()) parts.push_back(item);
  }
  return parts;
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto* cmd =
      app.add_subcommand("bench", "Time forward/backward over a suite or a custom configuration");
  struct Args {
    std::string suite = "quick", device = "cpu", dtype, json, masks, lengths;
    std::int64_t batch = 0, hq = 0, hkv = 0, skv = 0, dim = 0, window = -1, doc_len = 0;
    bool fwd = false, bwd = false, no_check = false, deterministic = false;
    int reps = 3, threads = 0;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--suite", a->suite,
                  "quick (default: the twelve benchmark masks, fwd+bwd), masks, kernels, gpu (the "
                  "CUDA bars), all");
  cmd->add_option("--device", a->device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--dtype", a->dtype, "fp32, bf16 or fp16 (overrides the suite's)");
  cmd->add_option("--B", a->batch, "Batch size");
  cmd->add_option("--H", a->hq, "Query heads");
  cmd->add_option("--Hkv", a->hkv, "KV heads (default: H)");
  cmd->add_option("--S", a->lengths, "Query length(s), comma separated");
  cmd->add_option("--Skv", a->skv, "Key length (default: S)");
  cmd->add_option("--D", a->dim, "Head dim");
  std::string mask_names;
  for (Pattern pat : all_patterns())
    mask_names += std::string(mask_names.empty() ? "" : ", ") + pattern_name(pat);
  cmd->add_option("--mask", a->masks, "Mask name(s), comma separated: " + mask_names);
  cmd->add_option("--window", a->window, "Window of sliding-window masks (default S/16)");
  cmd->add_option("--doc-len", a->doc_len, "Fixed document length (default: seeded S/64..S/4)");
  cmd->add_flag("--fwd", a->fwd, "Forward only");
  cmd->add_flag("--bwd", a->bwd, "Backward only");
  cmd->add_option("--reps", a->reps, "Timed repetitions (median reported)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--threads", a->threads, "CPU threads (default: all)");
  cmd->add_flag("--no-check", a->no_check, "Skip the small-size accuracy check");
  cmd->add_flag("--deterministic", a->deterministic,
                "Backward in deterministic mode (the same bits on every run; CUDA: no atomics)");
  cmd->add_option("--json", a->json, "Write the rows as JSON to this file");
  cmd->callback([a]() {
    const bool gpu = a->device == "cuda";
    if (gpu && detail::cuda::usable_devices() == 0) {
      throw Error(ErrorKind::kUnsupported, "--device",
                  detail::cuda::built() ? "no usable GPU: " + detail::cuda::device_summary()
                                        : std::string("this build has no CUDA backend"));
    }
    const bool custom =
        a->batch || a->hq || a->hkv || a->skv || a->dim || !a->lengths.empty() || !a->masks.empty();
    std::vector<Config> configs;
    if (custom) {
      const auto masks = a->masks.empty() ? std::vector<std::string>{"full"} : split(a->masks);
      const auto lengths =
          a->lengths.empty() ? std::vector<std::string>{"4096"} : split(a->lengths);
      for (const auto& m : masks) {
        (void)parse_pattern(m, "--mask");
        for (const auto& s : lengths) {
          for (bool bwd : {false, true}) {
            if ((bwd && a->fwd) || (!bwd && a->bwd)) continue;
            Config c;
            c.mask = m;
            c.backward = bwd;
            c.batch = a->batch ? a->batch : 1;
            c.hq = a->hq ? a->hq : 16;
            c.hkv = a->hkv ? a->hkv : c.hq;
            c.sq = std::stoll(s);
            c.skv = a->skv ? a->skv : c.sq;
            c.dim = a->dim ? a->dim : 128;
            c.window = a->window;
            c.doc_len = a->doc_len;
            configs.push_back(c);
          }
        }
      }
    } else {
      configs = suite(a->suite);
      if (a->fwd || a->bwd) {
        std::erase_if(configs, [&](const Config& c) { return c.backward ? a->fwd : a->bwd; });
      }
    }
    if (!a->dtype.empty()) {
      const DType dt = parse_dtype(a->dtype, "--dtype");
      for (auto& c : configs) c.dtype = dt;
    }
    const RuntimeInfo info = runtime_info();
    const int threads = a->threads > 0 ? a->threads : info.threads;
    if (gpu) {
      fmt::print("longattn {} bench: {}\n", info.version, detail::cuda::device_summary());
    } else {
      fmt::print("longattn {} bench: cpu {} x{} threads\n", info.version, info.simd, threads);
    }
    fmt::print(
        "{:<3} {:<22} {:<5} {:>2} {:>3} {:>3} {:>6} {:>6} {:>4} {:>6} {:>10} {:>8} {:>8} {:>8} "
        "{:>9}\n",
        "op", "mask", "dtype", "B", "Hq", "Hkv", "Sq", "Skv", "D", "area", "ms", "TFLOP/s", "GB/s",
        "peak MB", "rel_err");
    nlohmann::json rows = nlohmann::json::array();
    std::size_t n = 0;
    for (const auto& c : configs) {
      ++n;
      fmt::print(stderr, "[{}/{}] {} {} {} S={} ...\n", n, configs.size(),
                 c.backward ? "bwd" : "fwd", c.mask, dtype_name(c.dtype), c.sq);
      const Row r = run_config(c, a->reps, threads, !a->no_check, gpu, a->deterministic);
      fmt::print(
          "{:<3} {:<22} {:<5} {:>2} {:>3} {:>3} {:>6} {:>6} {:>4} {:>6.3f} {:>10.2f} {:>8.4f} "
          "{:>8.2f} {:>8.0f} {:>9.2e}\n",
          c.backward ? "bwd" : "fwd", c.mask, dtype_name(c.dtype), c.batch, c.hq, c.hkv, c.sq,
          c.skv, c.dim, r.area_fraction, r.ms, r.tflops, r.gbps, r.peak_mb, r.rel_err);
      std::fflush(stdout);
      rows.push_back({{"op", c.backward ? "bwd" : "fwd"},
                      {"impl", "longattn"},
                      {"deterministic", a->deterministic},
                      {"device", gpu ? "cuda" : "cpu"},
                      {"simd", gpu ? detail::cuda::device_summary() : info.simd},
                      {"threads", threads},
                      {"dtype", dtype_name(c.dtype)},
                      {"mask", c.mask},
                      {"B", c.batch},
                      {"Hq", c.hq},
                      {"Hkv", c.hkv},
                      {"Sq", c.sq},
                      {"Skv", c.skv},
                      {"D", c.dim},
                      {"unmasked_fraction", r.area_fraction},
                      {"ms", r.ms},
                      {"tflops", r.tflops},
                      {"gbps", r.gbps},
                      {"peak_mem_mb", r.peak_mb},
                      {"rel_err", r.rel_err}});
    }
    if (!a->json.empty()) {
      std::ofstream(a->json) << rows.dump(1) << "\n";
      fmt::print(stderr, "wrote {}\n", a->json);
    }
  });
}

}  // namespace longattn::tools

// SPDX-License-Identifier: Apache-2.0
// `longattn check`: runs the generic driver's cases on a backend against the float64 oracle.
#include <fmt/core.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "check/cases.hpp"
#include "cuda/cuda_backend.hpp"
#include "longattn/longattn.hpp"
#include "tools/commands.hpp"

namespace longattn::tools {

void add_check_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "check", "Run every case against the float64 oracle; exit 1 on any failure");
  struct Args {
    std::string device = "cpu";
    bool quick = false;
    std::string filter;
    std::string simd;
    bool verbose = false;
    std::string shard;
  };
  auto args = std::make_shared<Args>();
  cmd->add_option("--device", args->device, "cpu, cuda (oracle on the CPU) or reference")
      ->check(CLI::IsMember({"cpu", "cuda", "reference"}));
  cmd->add_flag("--quick", args->quick, "The reduced case list");
  cmd->add_option("--filter", args->filter, "Only cases whose variant or mask contains this text");
  cmd->add_option("--simd", args->simd, "Force the CPU SIMD level: avx512, avx2, generic");
  cmd->add_flag("-v,--verbose", args->verbose, "Print every metric of every case");
  cmd->add_option("--shard", args->shard,
                  "K/N: only every N-th of the selected cases, from the K-th (0 <= K < N), so N "
                  "processes share a list");
  cmd->callback([args]() {
    if (!args->simd.empty()) set_cpu_simd_level(args->simd);
    int shard = 0;
    int shards = 1;
    if (!args->shard.empty()) {
      char slash = 0;
      char rest = 0;
      if (std::sscanf(args->shard.c_str(), "%d%c%d%c", &shard, &slash, &shards, &rest) != 3 ||
          slash != '/' || shards < 1 || shard < 0 || shard >= shards) {
        fmt::print(stderr, "longattn check: --shard '{}': expected K/N with 0 <= K < N\n",
                   args->shard);
        std::exit(2);
      }
    }
    const Backend backend = args->device == "cuda"        ? Backend::kCUDA
                            : args->device == "reference" ? Backend::kReference
                                                          : Backend::kCPU;
    if (backend == Backend::kCUDA && detail::cuda::usable_devices() == 0) {
      fmt::print(stderr, "longattn check --device cuda: {}\n",
                 detail::cuda::built() ? detail::cuda::device_summary()
                                       : std::string("this build has no CUDA backend"));
      std::exit(2);
    }
    const auto cases = check::default_cases(args->quick);
    fmt::print("{:<4} {:<22} {:<5} {:<44} {:<26} {:>10} {:>10}  {}\n", "op", "variant", "dtype",
               "shape", "mask", "max-abs", "rel-L2", "verdict");
    int failed = 0;
    int run = 0;
    int selected = 0;
    for (const auto& c : cases) {
      const std::string mask = check::mask_string(c);
      if (!args->filter.empty() && c.variant.find(args->filter) == std::string::npos &&
          mask.find(args->filter) == std::string::npos) {
        continue;
      }
      if (selected++ % shards != shard) continue;
      ++run;
      const auto r = check::run_case(c, backend);
      std::string verdict = r.passed ? "ok" : "FAIL";
      if (!r.error.empty()) verdict += " (" + r.error + ")";
      if (!r.guards_ok) verdict += " (wrote outside its outputs)";
      if (!r.deterministic) verdict += " (not deterministic)";
      for (const auto& m : r.metrics) {
        if (!m.passed) {
          verdict +=
              fmt::format(" ({}: max_abs {:.2e} > {:.2e} or rel_l2 {:.2e}{})", m.name, m.max_abs,
                          m.bound, m.rel_l2, m.nonfinite_ok ? "" : ", NaN/Inf mismatch");
        }
      }
      if (!r.passed) verdict += fmt::format(" [LONGATTN_SEED={}]", r.seed);
      fmt::print("{:<4} {:<22} {:<5} {:<44} {:<26} {:>10.2e} {:>10.2e}  {}\n",
                 c.backward ? "bwd" : "fwd", c.variant, dtype_name(c.dtype), check::shape_string(c),
                 mask, r.worst_max_abs(), r.worst_rel_l2(), verdict);
      if (args->verbose) {
        for (const auto& m : r.metrics) {
          fmt::print("       {:<6} max_abs {:.3e} (bound {:.3e}) rel_l2 {:.3e}\n", m.name,
                     m.max_abs, m.bound, m.rel_l2);
        }
      }
      failed += r.passed ? 0 : 1;
    }
    fmt::print("{} passed, {} failed\n", run - failed, failed);
    if (failed > 0) std::exit(1);
  });
}

}  // namespace longattn::tools

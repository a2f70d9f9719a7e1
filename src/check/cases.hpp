// SPDX-License-Identifier: Apache-2.0
// The generic case driver (DESIGN.md §3): one case = shapes + options + mask + layout + dtype,
// run on a backend and compared with the float64 oracle. The same list feeds `longattn check`
// and the test suite; `longattn bench` uses run_case for its accuracy column.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "longattn/attention.hpp"

namespace longattn::check {

/// How the operands are laid out in memory.
enum class Layout : std::uint8_t {
  kContiguous,  ///< [B, S, H, D] dense
  kHeadMajor,   ///< memory [B, H, S, D] viewed as [B, S, H, D] (strided token and head)
  kKvCache,     ///< K/V are the first Skv tokens of a larger [B, Scache, Hkv, D] cache
  kVarlen,      ///< packed [total, H, D] with cu_seqlens
};

/// One test case.
struct Case {
  std::string variant;  ///< short description of what is special
  DType dtype = DType::kF32;
  std::int64_t batch = 1, hq = 1, hkv = 1, sq = 1, skv = 1, dim = 64;
  std::vector<std::int64_t> seqlens_q, seqlens_k;  ///< varlen lengths (Layout::kVarlen)
  Layout layout = Layout::kContiguous;
  bool causal = false;
  std::int64_t window_left = -1, window_right = -1, num_sinks = 0;
  bool sink_logits = false;
  float softcap = 0.0F;
  ScoreFn score = ScoreFn::kSoftmax;
  float sigmoid_bias = 0.0F;
  std::optional<float> scale;
  std::optional<MaskSpec> mask;
  bool backward = false;
  bool nonfinite = false;  ///< inject NaN/Inf into q, k, v (and dO for the backward)
};

/// Errors of one output against the oracle.
struct Metric {
  std::string name;          ///< "out", "lse", "dq", ...
  double max_abs = 0.0;      ///< max |x - ref| over finite pairs
  double rel_l2 = 0.0;       ///< ||x - ref|| / ||ref||
  double bound = 0.0;        ///< the max_abs bound applied (0 = none)
  bool nonfinite_ok = true;  ///< NaN/Inf positions match the oracle
  bool passed = true;
};

/// The result of running a case.
struct CaseResult {
  std::vector<Metric> metrics;
  bool guards_ok = true;      ///< nothing written outside the outputs
  bool deterministic = true;  ///< same bits on a repeated run
  bool passed = true;
  std::string error;  ///< exception text when the call threw
  std::uint64_t seed = 0;
  double seconds = 0.0;  ///< time of the backend call (first run)
  [[nodiscard]] double worst_rel_l2() const;
  [[nodiscard]] double worst_max_abs() const;
};

/// A one-line shape summary "B=2 Hq=8 Hkv=2 Sq=113 Skv=77 D=64".
std::string shape_string(const Case& c);
/// The mask summary ("causal", "sliding_window(20)", "-").
std::string mask_string(const Case& c);

/// Runs `c` on `backend` and on the oracle and compares. Never throws for a failing backend
/// (the exception text lands in CaseResult::error). `seed` 0 draws a fresh seed.
CaseResult run_case(const Case& c, Backend backend, std::uint64_t seed = 0);

/// The case list: quick is a reduced list (sanitizer builds, `check --quick`).
std::vector<Case> default_cases(bool quick);

/// The FLOPs of the unmasked area (forward 4·area·D per head; backward 2.5× that).
double case_flops(const Case& c);

/// Builds the PatternSpec of a named pattern scaled to a sequence of length s (window s/16,
/// block s/8, prefix s/8, stride ~sqrt(s), ...) — the settings the cases and the bench use.
PatternSpec scaled_pattern(Pattern kind, std::int64_t s, std::int64_t window = -1);
/// Documents for a sequence of length s: seeded lengths in [s/64, s/4] (at least 1).
std::vector<std::int64_t> scaled_documents(std::int64_t s, std::uint64_t seed = 42);

}  // namespace longattn::check

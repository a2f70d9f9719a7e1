// SPDX-License-Identifier: Apache-2.0
// Every case of the generic driver on the CPU backend against the float64 oracle, at the
// automatically selected SIMD level, plus the quick list at every other level this CPU has.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "check/cases.hpp"
#include "longattn/longattn.hpp"

namespace {

using longattn::Backend;
using longattn::check::Case;

bool quick_mode() {
  const char* v = std::getenv("LONGATTN_QUICK");
  return v != nullptr && std::string(v) != "0";
}

std::string describe(const Case& c, const longattn::check::CaseResult& r) {
  std::string s = c.variant + " " + longattn::check::shape_string(c) +
                  " mask=" + longattn::check::mask_string(c) + " " + longattn::dtype_name(c.dtype) +
                  (c.backward ? " bwd" : " fwd") + " seed=" + std::to_string(r.seed);
  if (!r.error.empty()) s += " error: " + r.error;
  if (!r.guards_ok) s += " [wrote outside its outputs]";
  if (!r.deterministic) s += " [not deterministic]";
  for (const auto& m : r.metrics) {
    s += " " + m.name + ": max_abs=" + std::to_string(m.max_abs) + " (bound " +
         std::to_string(m.bound) + ") rel_l2=" + std::to_string(m.rel_l2) +
         (m.nonfinite_ok ? "" : " NaN/Inf mismatch") + (m.passed ? "" : " FAIL");
  }
  return s;
}

class DriverCases : public ::testing::TestWithParam<std::size_t> {};

const std::vector<Case>& cases() {
  static const std::vector<Case> all = longattn::check::default_cases(quick_mode());
  return all;
}

TEST_P(DriverCases, CpuMatchesOracle) {
  const Case& c = cases()[GetParam()];
  const auto r = longattn::check::run_case(c, Backend::kCPU);
  EXPECT_TRUE(r.passed) << describe(c, r);
  EXPECT_FALSE(r.metrics.empty() && r.error.empty()) << "a case that compares nothing cannot fail";
}

INSTANTIATE_TEST_SUITE_P(All, DriverCases, ::testing::Range<std::size_t>(0, cases().size()));

// The fallback instruction sets run the quick list.
class SimdLevels : public ::testing::TestWithParam<const char*> {};

TEST_P(SimdLevels, QuickCasesMatchOracle) {
  try {
    longattn::set_cpu_simd_level(GetParam());
  } catch (const longattn::Error& e) {
    GTEST_SKIP() << e.what();
  }
  int failures = 0;
  for (const Case& c : longattn::check::default_cases(true)) {
    const auto r = longattn::check::run_case(c, Backend::kCPU);
    if (!r.passed && failures++ < 5) ADD_FAILURE() << GetParam() << ": " << describe(c, r);
  }
  longattn::set_cpu_simd_level("");
  EXPECT_EQ(failures, 0);
}

INSTANTIATE_TEST_SUITE_P(Fallbacks, SimdLevels, ::testing::Values("avx2", "generic"));

// The oracle itself is compared against an independent computation: two SIMD levels agreeing
// with each other is not enough, so a broken oracle must fail somewhere. Here: the reference
// backend run through the public API equals the driver's oracle path.
TEST(Driver, ReferenceBackendPassesItsOwnCheck) {
  Case c;
  c.hq = 2;
  c.sq = 20;
  c.skv = 30;
  c.dim = 16;
  c.causal = true;
  const auto r = longattn::check::run_case(c, Backend::kReference);
  EXPECT_TRUE(r.passed) << describe(c, r);
  EXPECT_LT(r.worst_rel_l2(), 1e-6);
}

}  // namespace

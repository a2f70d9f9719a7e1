// SPDX-License-Identifier: Apache-2.0
/// @file runtime.hpp
/// @brief What this build and machine offer: backends, SIMD level, threads.
#pragma once

#include <string>
#include <vector>

namespace longattn {

/// A description of the running library and machine.
struct RuntimeInfo {
  std::string version;                ///< Library version.
  std::vector<std::string> backends;  ///< Built backends ("reference", "cpu", "cuda").
  std::string simd;       ///< CPU kernel selected at run time ("avx512", "avx2", "generic").
  std::string bf16_path;  ///< bf16 forward products at D=128: "amx", "avx512bf16", "fp32".
  int threads = 1;        ///< OpenMP threads the CPU backend uses by default.
  std::vector<std::string> gpus;  ///< Visible GPUs (empty without CUDA).
};

/// Probes the build and the machine.
[[nodiscard]] RuntimeInfo runtime_info();

/// Forces the CPU SIMD level ("avx512", "avx2", "generic") for testing the fallbacks;
/// "" restores automatic selection. The environment variable LONGATTN_SIMD does the same.
/// @throws Error if the level is unknown or not supported by this CPU.
void set_cpu_simd_level(const std::string& level);

}  // namespace longattn

// SPDX-License-Identifier: Apache-2.0
// The CPU backend as seen by the dispatcher.
#pragma once

#include "core/problem.hpp"

namespace longattn::detail::cpu {

/// @throws Error(kUnsupported) when the CPU engine cannot run this problem (head dim).
void check_supported(const Problem& p);
void forward(const Problem& p);
void backward(const Problem& p);
int default_threads();
/// How bf16 forward products run for head dim `dim` here: "amx", "avx512bf16" or "fp32".
const char* bf16_forward_path(std::int64_t dim);
const char* simd_level();

}  // namespace longattn::detail::cpu

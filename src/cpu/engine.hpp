// SPDX-License-Identifier: Apache-2.0
// Entry points of the CPU engine, one namespace per instruction set. The same source
// (engine.inc) is compiled into each namespace with that instruction set's flags.
#pragma once

#include "core/problem.hpp"
#include "core/schedule.hpp"

namespace longattn::detail::cpu {

/// Query and key tile of every CPU kernel (the schedule is built for this shape).
inline constexpr std::int64_t kTile = 64;

#define LONGATTN_DECLARE_ENGINE(ns)                                           \
  namespace ns {                                                              \
  void forward(const Problem& p, const ScheduleSet& schedules, int threads);  \
  void backward(const Problem& p, const ScheduleSet& schedules, int threads); \
  const char* bf16_forward_path(std::int64_t dim);                            \
  }

LONGATTN_DECLARE_ENGINE(avx512)
LONGATTN_DECLARE_ENGINE(avx2)
LONGATTN_DECLARE_ENGINE(generic)
#undef LONGATTN_DECLARE_ENGINE

/// The instruction set the dispatcher selects ("avx512", "avx2", "generic").
const char* simd_level();

}  // namespace longattn::detail::cpu

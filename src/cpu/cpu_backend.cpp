// SPDX-License-Identifier: Apache-2.0
// CPU backend: picks the instruction set at run time and runs the engine over the schedule.
#include "cpu/cpu_backend.hpp"

#include <omp.h>

#include <cstdlib>
#include <mutex>
#include <string>

#include "core/schedule.hpp"
#include "cpu/engine.hpp"
#include "longattn/error.hpp"
#include "longattn/runtime.hpp"

namespace longattn::detail::cpu {
namespace {

enum class Level { kAvx512, kAvx2, kGeneric };

bool cpu_has_avx512() {
#if defined(__x86_64__)
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

bool cpu_has_avx2() {
#if defined(__x86_64__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

Level parse_level(const std::string& name) {
  if (name == "avx512" || name == "avx512bf16") {
    if (!cpu_has_avx512()) {
      throw Error(ErrorKind::kUnsupported, "simd", "avx512 is not supported by this CPU");
    }
    return Level::kAvx512;
  }
  if (name == "avx2") {
    if (!cpu_has_avx2())
      throw Error(ErrorKind::kUnsupported, "simd", "avx2 is not supported by this CPU");
    return Level::kAvx2;
  }
  if (name == "generic") return Level::kGeneric;
  throw Error(ErrorKind::kInvalidArgument, "simd",
              "unknown level '" + name + "', expected avx512, avx2 or generic");
}

Level detect() {
  if (const char* env = std::getenv("LONGATTN_SIMD"); env != nullptr && *env != '\0') {
    return parse_level(env);
  }
  if (cpu_has_avx512()) return Level::kAvx512;
  if (cpu_has_avx2()) return Level::kAvx2;
  return Level::kGeneric;
}

std::mutex g_level_mutex;
bool g_level_set = false;
Level g_level = Level::kGeneric;

Level level() {
  std::lock_guard<std::mutex> lock(g_level_mutex);
  if (!g_level_set) {
    g_level = detect();
    g_level_set = true;
  }
  return g_level;
}

}  // namespace

const char* simd_level() {
  switch (level()) {
    case Level::kAvx512:
      return "avx512";
    case Level::kAvx2:
      return "avx2";
    case Level::kGeneric:
      return "generic";
  }
  return "?";
}

int default_threads() { return omp_get_max_threads(); }

const char* bf16_forward_path(std::int64_t dim) {
  switch (level()) {
    case Level::kAvx512:
      return avx512::bf16_forward_path(dim);
    case Level::kAvx2:
      return avx2::bf16_forward_path(dim);
    case Level::kGeneric:
      return generic::bf16_forward_path(dim);
  }
  return "?";
}

void check_supported(const Problem& p) {
  if (p.dim % 16 != 0 || p.dim > 512) {
    throw Error(
        ErrorKind::kUnsupported, "q",
        "head dim D = " + std::to_string(p.dim) +
            " is not supported by the CPU backend (expected a multiple of 16 in [16, 512])");
  }
}

void forward(const Problem& p) {
  check_supported(p);
  const int threads = p.num_threads > 0 ? p.num_threads : default_threads();
  const auto schedules_ptr = cached_schedules(p, kTile, kTile);
  const ScheduleSet& schedules = *schedules_ptr;
  switch (level()) {
    case Level::kAvx512:
      avx512::forward(p, schedules, threads);
      return;
    case Level::kAvx2:
      avx2::forward(p, schedules, threads);
      return;
    case Level::kGeneric:
      generic::forward(p, schedules, threads);
      return;
  }
}

void backward(const Problem& p) {
  check_supported(p);
  const int threads = p.num_threads > 0 ? p.num_threads : default_threads();
  const auto schedules_ptr = cached_schedules(p, kTile, kTile);
  const ScheduleSet& schedules = *schedules_ptr;
  switch (level()) {
    case Level::kAvx512:
      avx512::backward(p, schedules, threads);
      return;
    case Level::kAvx2:
      avx2::backward(p, schedules, threads);
      return;
    case Level::kGeneric:
      generic::backward(p, schedules, threads);
      return;
  }
}

}  // namespace longattn::detail::cpu

namespace longattn {

void set_cpu_simd_level(const std::string& name) {
  using namespace detail::cpu;
  const Level chosen = name.empty() ? detect() : parse_level(name);
  std::lock_guard<std::mutex> lock(g_level_mutex);
  g_level = chosen;
  g_level_set = true;
}

}  // namespace longattn

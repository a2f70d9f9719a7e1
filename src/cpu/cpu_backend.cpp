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

// NOTE: LONGATTN_X86_ENGINES (CMake) says whether the AVX2 / AVX-512 engines are compiled in.
#if !defined(LONGATTN_X86_ENGINES)
#error "cpu_backend.cpp: LONGATTN_X86_ENGINES must be defined (0 or 1) by the build"
#endif

bool cpu_has_avx512() {
#if LONGATTN_X86_ENGINES
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

bool cpu_has_avx2() {
#if LONGATTN_X86_ENGINES
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

namespace {

/// The entry points of one compiled instruction set.
struct Engine {
  const char* name;
  void (*forward)(const Problem&, const ScheduleSet&, int);
  void (*backward)(const Problem&, const ScheduleSet&, int);
  const char* (*bf16_forward_path)(std::int64_t);
};

const Engine& engine() {
  static const Engine generic_engine{"generic", generic::forward, generic::backward,
                                     generic::bf16_forward_path};
#if LONGATTN_X86_ENGINES
  static const Engine avx512_engine{"avx512", avx512::forward, avx512::backward,
                                    avx512::bf16_forward_path};
  static const Engine avx2_engine{"avx2", avx2::forward, avx2::backward, avx2::bf16_forward_path};
  switch (level()) {
    case Level::kAvx512:
      return avx512_engine;
    case Level::kAvx2:
      return avx2_engine;
    case Level::kGeneric:
      break;
  }
#else
  (void)level();  // still parses LONGATTN_SIMD: avx2 / avx512 are refused by name
#endif
  return generic_engine;
}

int threads_for(const Problem& p) { return p.num_threads > 0 ? p.num_threads : default_threads(); }

}  // namespace

const char* simd_level() { return engine().name; }

int default_threads() { return omp_get_max_threads(); }

const char* bf16_forward_path(std::int64_t dim) { return engine().bf16_forward_path(dim); }

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
  engine().forward(p, *cached_schedules(p, kTile, kTile), threads_for(p));
}

void backward(const Problem& p) {
  check_supported(p);
  engine().backward(p, *cached_schedules(p, kTile, kTile), threads_for(p));
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

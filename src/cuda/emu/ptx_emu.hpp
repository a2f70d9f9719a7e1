// SPDX-License-Identifier: Apache-2.0
// The CUDA emulator's versions of the inline-PTX wrappers of common/ptx.cuh: cp.async (queued
// until the covering wait), ldmatrix (.trans) and mma.sync m16n8k16 as warp collectives, with
// the fragment layouts of the PTX ISA (the comment at the top of ptx.cuh). Alignment and the
// shared-memory range of every address are checked.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cuda/emu/emu_device.hpp"

namespace longattn::emu {
/// Fails the launch with `message` unless [address, address + bytes) lies in the block's
/// dynamic shared memory and address is a multiple of `alignment`.
void check_shared_range(std::uintptr_t address, std::size_t bytes, std::size_t alignment,
                        const char* what);
/// Fails the running launch with a diagnostic.
[[noreturn]] void fault(const char* what, const char* detail);
}  // namespace longattn::emu

namespace longattn::detail::cuda {

/// A shared-memory address as the PTX wrappers take it (a host address under the emulator).
using SmemAddr = std::uintptr_t;

inline SmemAddr smem_addr(const void* p) { return reinterpret_cast<std::uintptr_t>(p); }

inline void cp_async_16(SmemAddr dst, const void* src, bool valid) {
  ::longattn::emu::check_shared_range(dst, 16, 16, "cp.async destination");
  if (valid && reinterpret_cast<std::uintptr_t>(src) % 16 != 0) {
    ::longattn::emu::fault("cp.async", "global source address is not 16-byte aligned");
  }
  ::longattn::emu::cp_async_queue(dst, src, 16, valid);
}
inline void cp_async_4(SmemAddr dst, const void* src, bool valid) {
  ::longattn::emu::check_shared_range(dst, 4, 4, "cp.async destination");
  if (valid && reinterpret_cast<std::uintptr_t>(src) % 4 != 0) {
    ::longattn::emu::fault("cp.async", "global source address is not 4-byte aligned");
  }
  ::longattn::emu::cp_async_queue(dst, src, 4, valid);
}
inline void cp_async_commit() { ::longattn::emu::cp_async_commit_group(); }
template <int N>
void cp_async_wait() {
  ::longattn::emu::cp_async_wait_groups(N);
}
inline void named_barrier_arrive(int id, int threads) {
  ::longattn::emu::named_barrier(id, threads, false);
}
inline void named_barrier_arrive_if(bool arrive, int id, int threads) {
  if (arrive) ::longattn::emu::named_barrier(id, threads, false);
}
inline void named_barrier_sync(int id, int threads) {
  ::longattn::emu::named_barrier(id, threads, true);
}
inline void named_barrier_sync_if(bool sync, int id, int threads) {
  if (sync) ::longattn::emu::named_barrier(id, threads, true);
}

namespace emu_detail {
inline std::uint16_t load_b16(std::uintptr_t row, int element) {
  std::uint16_t v = 0;
  // NOLINTNEXTLINE(performance-no-int-to-ptr): shared addresses travel as integers, as in PTX
  std::memcpy(&v, reinterpret_cast<const void*>(row + 2 * static_cast<std::uintptr_t>(element)),
              sizeof v);
  return v;
}
/// The 32 lanes' 8x8 row addresses of the four matrices, after checking this lane's.
inline ::longattn::emu::LaneValues<SmemAddr> gather_rows(SmemAddr addr, const char* what) {
  ::longattn::emu::check_shared_range(addr, 16, 16, what);
  return ::longattn::emu::warp_exchange(addr, what);
}
}  // namespace emu_detail

/// Four 8x8 b16 matrices; lane i gives the row address of matrix i / 8, row i % 8; lane L gets
/// row L / 4, columns 2 (L % 4) and 2 (L % 4) + 1 of each matrix.
inline void ldmatrix_x4(std::uint32_t (&r)[4], SmemAddr addr) {
  const auto rows = emu_detail::gather_rows(addr, "ldmatrix.x4");
  const int lane = ::longattn::emu::lane();
  const int g = lane / 4;
  const int t = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const SmemAddr row = rows[8 * i + g];
    r[i] = emu_detail::load_b16(row, 2 * t) |
           (static_cast<std::uint32_t>(emu_detail::load_b16(row, 2 * t + 1)) << 16);
  }
}
/// As ldmatrix_x4 with each matrix transposed: lane L gets rows 2 (L % 4), 2 (L % 4) + 1 of
/// column L / 4.
inline void ldmatrix_x4_trans(std::uint32_t (&r)[4], SmemAddr addr) {
  const auto rows = emu_detail::gather_rows(addr, "ldmatrix.x4.trans");
  const int lane = ::longattn::emu::lane();
  const int g = lane / 4;
  const int t = lane % 4;
  for (int i = 0; i < 4; ++i) {
    r[i] = emu_detail::load_b16(rows[8 * i + 2 * t], g) |
           (static_cast<std::uint32_t>(emu_detail::load_b16(rows[8 * i + 2 * t + 1], g)) << 16);
  }
}

namespace emu_detail {
template <class T>
float b16_to_float(std::uint16_t bits) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
  } else {
    __half_raw raw;
    raw.x = bits;
    return __half2float(__half(raw));
  }
}
}  // namespace emu_detail

/// d += a * b for one m16n8k16 tile (fp32 accumulation), from the 32 lanes' fragments.
template <class T>
void mma_16816(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  struct Fragments {
    std::uint32_t a[4];
    std::uint32_t b[2];
  };
  const Fragments mine{{a[0], a[1], a[2], a[3]}, {b0, b1}};
  const auto all = ::longattn::emu::warp_exchange(
      mine, std::is_same_v<T, __nv_bfloat16> ? "mma.m16n8k16.bf16" : "mma.m16n8k16.f16");
  // Lane (g, t) needs rows g and g + 8 of A (lanes 4g..4g+3) and columns 2t, 2t + 1 of B
  // (lanes 8t..8t+3 and 8t+4..8t+7).
  auto lo = [](std::uint32_t w) { return emu_detail::b16_to_float<T>(w & 0xffffU); };
  auto hi = [](std::uint32_t w) { return emu_detail::b16_to_float<T>(w >> 16); };
  const int lane = ::longattn::emu::lane();
  const int g = lane / 4;
  const int t = lane % 4;
  float arow[2][16];
  float bcol[2][16];
  for (int q = 0; q < 4; ++q) {
    const Fragments fa = all[4 * g + q];
    for (int r = 0; r < 2; ++r) {
      arow[r][2 * q] = lo(fa.a[r]);
      arow[r][2 * q + 1] = hi(fa.a[r]);
      arow[r][2 * q + 8] = lo(fa.a[r + 2]);
      arow[r][2 * q + 9] = hi(fa.a[r + 2]);
    }
    for (int c = 0; c < 2; ++c) {
      const Fragments fb = all[4 * (2 * t + c) + q];
      bcol[c][2 * q] = lo(fb.b[0]);
      bcol[c][2 * q + 1] = hi(fb.b[0]);
      bcol[c][2 * q + 8] = lo(fb.b[1]);
      bcol[c][2 * q + 9] = hi(fb.b[1]);
    }
  }
  for (int e = 0; e < 4; ++e) {
    const float* a_row = arow[e >> 1];
    const float* b_col = bcol[e & 1];
    float acc = d[e];
    for (int k = 0; k < 16; ++k) acc = std::fma(a_row[k], b_col[k], acc);
    d[e] = acc;
  }
}

}  // namespace longattn::detail::cuda

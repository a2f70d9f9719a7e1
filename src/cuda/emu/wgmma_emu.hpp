// SPDX-License-Identifier: Apache-2.0
// The CUDA emulator's versions of the wgmma wrappers of common/wgmma.cuh. An mma_async is
// queued with its register operands and runs at the wgmma_wait that covers its commit group, so
// it reads shared memory then (refilling an operand before the wait shows) and its accumulators
// change then (reading them before the wait sees the old values; writing them, or its A
// registers, before the wait fails the launch). The descriptor is decoded as
// the hardware would (start, leading and stride byte offsets, 128-byte swizzle on the address
// bits), against the emulated block's shared memory.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cuda/emu/emu_device.hpp"

namespace longattn::detail::cuda {

using WgmmaDesc = std::uint64_t;

/// The shared-window address of an emulated shared-memory address: its offset in the block's
/// dynamic shared memory (the emulator's window starts there).
inline std::uint32_t emu_window_address(SmemAddr addr) {
  return static_cast<std::uint32_t>(
      addr - reinterpret_cast<std::uintptr_t>(::longattn::emu::dynamic_shared_memory()));
}

inline WgmmaDesc wgmma_desc(SmemAddr addr, std::uint32_t leading_bytes,
                            std::uint32_t stride_bytes) {
  ::longattn::emu::check_shared_range(addr, 16, 16, "wgmma descriptor start");
  return sw128_descriptor(emu_window_address(addr), leading_bytes, stride_bytes);
}

inline void wgmma_fence() {}
inline void fence_proxy_async() { ::longattn::emu::fence_proxy_async(); }
template <int NB>
void wgmma_fence_operand(float (&)[NB][4]) {}
template <int KS>
void wgmma_fence_operand(std::uint32_t (&)[KS][4]) {}
inline void bulk_reduce_add_f32(float* dst, SmemAddr src, std::uint32_t bytes) {
  if (bytes == 0 || bytes % 16 != 0) {
    ::longattn::emu::fault("cp.reduce.async.bulk", "size is not a positive multiple of 16 bytes");
  }
  ::longattn::emu::check_shared_range(src, bytes, 16, "cp.reduce.async.bulk source");
  if (reinterpret_cast<std::uintptr_t>(dst) % 16 != 0) {
    ::longattn::emu::fault("cp.reduce.async.bulk", "global destination is not 16-byte aligned");
  }
  ::longattn::emu::bulk_reduce_queue(dst, src, bytes);
}
inline void bulk_commit() { ::longattn::emu::bulk_commit_group(); }
template <int N>
void bulk_wait_read() {
  ::longattn::emu::bulk_wait_groups(N);
}
inline void wgmma_commit() { ::longattn::emu::wgmma_commit_group(); }
template <int N>
void wgmma_wait() {
  ::longattn::emu::wgmma_wait_groups(N);
}

namespace emu_detail {
/// A decoded SW128 descriptor.
struct Sw128Operand {
  std::uintptr_t start;
  std::uint32_t leading;
  std::uint32_t stride;
};
inline Sw128Operand decode_sw128(WgmmaDesc desc, const char* what) {
  if ((desc >> 62) != 1 || ((desc >> 49) & 7U) != 0) {
    ::longattn::emu::fault(what, "descriptor is not a 128-byte swizzle with base offset 0");
  }
  const auto base = reinterpret_cast<std::uintptr_t>(::longattn::emu::dynamic_shared_memory());
  return {base + ((desc & 0x3fffU) << 4), static_cast<std::uint32_t>((desc >> 16) & 0x3fffU) << 4,
          static_cast<std::uint32_t>((desc >> 32) & 0x3fffU) << 4};
}
/// The b16 element at an unswizzled address of a SW128 operand, as a float.
template <class T>
float sw128_element(std::uintptr_t unswizzled, const char* what) {
  const std::uintptr_t address = unswizzled ^ (((unswizzled >> 7) & 7U) << 4);
  return b16_to_float<T>(::longattn::emu::async_proxy_load_b16(address, what));
}
/// K-major: element (row, k) of the instruction's rows x 16 operand.
template <class T>
float k_major(const Sw128Operand& o, int row, int k, const char* what) {
  return sw128_element<T>(o.start + (row / 8) * o.stride + (row % 8) * 128 + k * 2, what);
}
/// MN-major: element (k, n) of the instruction's 16 x N operand.
template <class T>
float mn_major(const Sw128Operand& o, int k, int n, const char* what) {
  return sw128_element<T>(
      o.start + (n / 64) * o.leading + (n % 64) * 2 + (k / 8) * o.stride + (k % 8) * 128, what);
}
/// This thread's rows of the m64 tile (group and group + 8 of its warp's 16) and its column pair.
struct WarpgroupLane {
  int row0;
  int col0;
};
inline WarpgroupLane warpgroup_lane() {
  const int lane = ::longattn::emu::lane();
  const int warp = static_cast<int>(::longattn::emu::thread_index().x / 32) % 4;
  return {16 * warp + lane / 4, 2 * (lane % 4)};
}
}  // namespace emu_detail

namespace emu_detail {
/// An mma_async with both operands in shared memory; kTransA / kTransB: that operand is
/// MN-major (imm-trans = 1), else K-major.
template <class T, int N, bool kTransA, bool kTransB>
void wgmma_ss(float (&d)[N / 8][4], WgmmaDesc a, WgmmaDesc b, bool accumulate) {
  constexpr const char* kWhat =
      std::is_same_v<T, __nv_bfloat16> ? "wgmma.m64nNk16.bf16 (ss)" : "wgmma.m64nNk16.f16 (ss)";
  // Every lane of the warp must issue it, with the same descriptors.
  const auto descs = ::longattn::emu::warp_exchange(a ^ (b * 3), kWhat);
  for (int l = 0; l < 32; ++l) {
    if (descs[l] != (a ^ (b * 3))) ::longattn::emu::fault(kWhat, "descriptors differ across lanes");
  }
  float(*acc)[4] = d;
  // store = false reads (and checks) the operands only.
  auto product = [acc, a, b, accumulate](bool store) {
    const auto oa = decode_sw128(a, kWhat);
    const auto ob = decode_sw128(b, kWhat);
    const auto me = warpgroup_lane();
    for (int nb = 0; nb < N / 8; ++nb) {
      for (int e = 0; e < 4; ++e) {
        const int row = me.row0 + (e >> 1) * 8;
        const int col = nb * 8 + me.col0 + (e & 1);
        float sum = accumulate && store ? acc[nb][e] : 0.0F;
        for (int k = 0; k < 16; ++k) {
          const float x = kTransA ? mn_major<T>(oa, k, row, kWhat) : k_major<T>(oa, row, k, kWhat);
          const float y = kTransB ? mn_major<T>(ob, k, col, kWhat) : k_major<T>(ob, col, k, kWhat);
          sum = std::fma(x, y, sum);
        }
        if (store) acc[nb][e] = sum;
      }
    }
  };
  // The async proxy may read the operands at any time from the issue to the retiring wait: they
  // must be visible to it at both ends (here, and when the product runs at the wait).
  product(false);
  ::longattn::emu::wgmma_queue([product] { product(true); }, {d, sizeof(d)});
}
}  // namespace emu_detail

template <class T, int N>
void wgmma_ss(float (&d)[N / 8][4], WgmmaDesc a, WgmmaDesc b, bool accumulate) {
  emu_detail::wgmma_ss<T, N, false, false>(d, a, b, accumulate);
}
template <class T, int N>
void wgmma_ss_tt(float (&d)[N / 8][4], WgmmaDesc a, WgmmaDesc b, bool accumulate) {
  emu_detail::wgmma_ss<T, N, true, true>(d, a, b, accumulate);
}

template <class T, int N>
void wgmma_rs_tb(float (&d)[N / 8][4], const std::uint32_t (&a)[4], WgmmaDesc b, bool accumulate) {
  constexpr const char* kWhat =
      std::is_same_v<T, __nv_bfloat16> ? "wgmma.m64nNk16.bf16 (rs)" : "wgmma.m64nNk16.f16 (rs)";
  struct Fragment {
    std::uint32_t a[4];
    WgmmaDesc b;
  };
  const Fragment mine{{a[0], a[1], a[2], a[3]}, b};
  const auto all = ::longattn::emu::warp_exchange(mine, kWhat);
  // Rows group and group + 8 of A (the registers of lanes 4 group .. 4 group + 3), read now:
  // the registers may be reused after the issue.
  const int g = ::longattn::emu::lane() / 4;
  auto lo = [](std::uint32_t w) { return emu_detail::b16_to_float<T>(w & 0xffffU); };
  auto hi = [](std::uint32_t w) { return emu_detail::b16_to_float<T>(w >> 16); };
  struct Rows {
    float v[2][16];
  };
  Rows rows{};
  for (int q = 0; q < 4; ++q) {
    const Fragment f = all[4 * g + q];
    if (f.b != b) ::longattn::emu::fault(kWhat, "descriptors differ across lanes");
    for (int r = 0; r < 2; ++r) {
      rows.v[r][2 * q] = lo(f.a[r]);
      rows.v[r][2 * q + 1] = hi(f.a[r]);
      rows.v[r][2 * q + 8] = lo(f.a[r + 2]);
      rows.v[r][2 * q + 9] = hi(f.a[r + 2]);
    }
  }
  float(*acc)[4] = d;
  auto product = [acc, rows, b, accumulate](bool store) {  // as in wgmma_ss
    const auto ob = emu_detail::decode_sw128(b, kWhat);
    const auto me = emu_detail::warpgroup_lane();
    for (int nb = 0; nb < N / 8; ++nb) {
      for (int e = 0; e < 4; ++e) {
        const int col = nb * 8 + me.col0 + (e & 1);
        float sum = accumulate && store ? acc[nb][e] : 0.0F;
        for (int k = 0; k < 16; ++k) {
          sum = std::fma(rows.v[e >> 1][k], emu_detail::mn_major<T>(ob, k, col, kWhat), sum);
        }
        if (store) acc[nb][e] = sum;
      }
    }
  };
  product(false);
  ::longattn::emu::wgmma_queue([product] { product(true); }, {d, sizeof(d)}, {a, sizeof(a)});
}

}  // namespace longattn::detail::cuda

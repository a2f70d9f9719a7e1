// SPDX-License-Identifier: Apache-2.0
// Inline PTX wrappers for sm_80+: cp.async, ldmatrix, mma.sync m16n8k16 (bf16/fp16 -> fp32).
//
// Fragment layouts of mma.m16n8k16 (lane = 4 * group + t, group = lane / 4, t = lane % 4):
//   A 16x16 (row-major): a0 (row group, cols 2t..2t+1), a1 (row group+8, same cols),
//                        a2 (row group, cols 2t+8..), a3 (row group+8, cols 2t+8..)
//   B 16x8 (k x n, "col"): b0 (k 2t..2t+1, n group), b1 (k 2t+8.., n group)
//   C 16x8 fp32:          c0,c1 (row group, cols 2t..2t+1), c2,c3 (row group+8, same cols)
// The lower 16 bits of a packed pair hold the lower column (or k) index.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

#ifdef LONGATTN_CUDA_EMULATOR
#include "cuda/emu/ptx_emu.hpp"  // the same wrappers, emulated on the CPU
#else
namespace longattn::detail::cuda {

/// A shared-memory address as the PTX wrappers take it (32-bit shared window).
using SmemAddr = std::uint32_t;

__device__ __forceinline__ SmemAddr smem_addr(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

/// 16-byte asynchronous global->shared copy; `valid` false zero-fills the destination.
__device__ __forceinline__ void cp_async_16(SmemAddr dst, const void* src, bool valid) {
  const int bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes)
               : "memory");
}
/// 4-byte asynchronous global->shared copy (through L1: .cg takes 16 bytes only); `valid` false
/// zero-fills the destination.
__device__ __forceinline__ void cp_async_4(SmemAddr dst, const void* src, bool valid) {
  const int bytes = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/// Named barrier `id` (1..15; 0 is __syncthreads) of `threads` threads (a multiple of 32), whole
/// warps taking part: arrive signals without waiting, sync signals and waits until `threads`
/// have arrived (either way) in this phase.
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
/// bar.arrive when `arrive`, as one predicated instruction: no branch, so it may sit between a
/// wgmma issue and its wait (ptxas serializes wgmma across divergent-looking branches).
__device__ __forceinline__ void named_barrier_arrive_if(bool arrive, int id, int threads) {
  asm volatile("{\n .reg .pred p;\n setp.ne.u32 p, %0, 0;\n @p bar.arrive %1, %2;\n}\n" ::"r"(
                   static_cast<unsigned>(arrive)),
               "r"(id), "r"(threads)
               : "memory");
}
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
/// bar.sync when `sync`, as one predicated instruction (see named_barrier_arrive_if).
__device__ __forceinline__ void named_barrier_sync_if(bool sync, int id, int threads) {
  asm volatile("{\n .reg .pred p;\n setp.ne.u32 p, %0, 0;\n @p bar.sync %1, %2;\n}\n" ::"r"(
                   static_cast<unsigned>(sync)),
               "r"(id), "r"(threads)
               : "memory");
}

/// Four 8x8 b16 matrices; lane i gives the row address of matrix i / 8, row i % 8.
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], SmemAddr addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
/// As ldmatrix_x4, each matrix transposed (lane gets rows 2t..2t+1 of column group).
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], SmemAddr addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

/// d += a * b for one m16n8k16 tile.
template <class T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const std::uint32_t (&a)[4],
                                          std::uint32_t b0, std::uint32_t b1);
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&d)[4], const std::uint32_t (&a)[4],
                                                         std::uint32_t b0, std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_16816<__half>(float (&d)[4], const std::uint32_t (&a)[4],
                                                  std::uint32_t b0, std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

}  // namespace longattn::detail::cuda
#endif  // LONGATTN_CUDA_EMULATOR

namespace longattn::detail::cuda {

/// Two floats rounded to a packed pair (lo in the low half).
template <class T>
__device__ __forceinline__ std::uint32_t pack_pair(float lo, float hi);
template <>
__device__ __forceinline__ std::uint32_t pack_pair<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  std::uint32_t bits;
  // No type punning (a register move once compiled). The pair types have user-declared copy
  // assignments but are plain bits.
  memcpy(&bits, &v, sizeof bits);  // NOLINT(bugprone-undefined-memory-manipulation)
  return bits;
}
template <>
__device__ __forceinline__ std::uint32_t pack_pair<__half>(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  std::uint32_t bits;
  memcpy(&bits, &v, sizeof bits);  // NOLINT(bugprone-undefined-memory-manipulation)
  return bits;
}

/// True when a bf16/fp16 bit pattern is Inf or NaN (exponent all ones).
template <class T>
__device__ __forceinline__ bool nonfinite_bits(std::uint16_t bits);
template <>
__device__ __forceinline__ bool nonfinite_bits<__nv_bfloat16>(std::uint16_t bits) {
  return (bits & 0x7f80U) == 0x7f80U;
}
template <>
__device__ __forceinline__ bool nonfinite_bits<__half>(std::uint16_t bits) {
  return (bits & 0x7c00U) == 0x7c00U;
}

}  // namespace longattn::detail::cuda

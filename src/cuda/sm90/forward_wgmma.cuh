// SPDX-License-Identifier: Apache-2.0
// Tensor-core forward for Hopper (sm_90a): the block schedule's 128 x 64 tiles on two
// warpgroups with wgmma.mma_async, the rest of the sm80 forward unchanged.
//
// Block = 8 warps = 2 warpgroups; warpgroup g owns query rows 64 g .. 64 g + 63 (warp w rows
// 16 w .. 16 w + 15, as in the 8-warp sm80 kernel), against 64-key tiles of the same schedule
// as the 128-row sm80 kernels. Per key tile and warpgroup: S = Q K^T as D / 16 wgmma m64n64k16
// with both operands in shared memory, then P V as 4 wgmma m64nDk16 with P from registers (the
// S accumulators re-packed, as in sm80) and V in shared memory read N-major. Q, K and V sit in
// 128-byte-swizzled panels (common/wgmma.cuh), filled by cp.async (double-buffered K/V as in
// sm80) and published to the async proxy with fence.proxy.async before the barrier.
// This first Hopper mainloop waits for each wgmma group before the softmax (no intra-warpgroup
// overlap and no producer warps, TMA or mbarriers yet): the two warpgroups of a block and the
// blocks of an SM overlap each other's softmax and MMAs. Masks, softcap, sigmoid, sinks, GQA
// packing, split-KV parts and the exact P.V path for Inf/NaN in V are the sm80 code.
#pragma once

#include <cuda_runtime.h>

#include "cuda/common/device.cuh"
#include "cuda/common/ptx.cuh"
#include "cuda/common/wgmma.cuh"
#include "cuda/kernels.hpp"
#include "cuda/sm80/forward_mma.cuh"

namespace longattn::detail::cuda {

template <int D>
struct ForwardWgmmaTraits {
  static constexpr int kWarps = 8;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBlockM = kMmaWideTileQ;  // 2 warpgroups x 64 rows
  static constexpr int kBlockN = kMmaTileK;      // 64 keys
  static constexpr int kChunks = D / 8;
  static constexpr int kWordsPerRow = (kBlockM + 63) / 64;
  static constexpr std::uint32_t kQBytes = 2U * kBlockM * D;
  static constexpr std::uint32_t kKVBytes = 2U * kBlockN * D;  // one K or V buffer
  // + 1024: the panels start 1024-byte aligned (the swizzle atom) wherever the window begins.
  static constexpr std::size_t kSmemBytes = kQBytes + 4 * kKVBytes + 1024;
  // D = 64: 52 KB, room for 3-4 blocks; D = 128 needs ~160 registers for O, S and P.
  static constexpr int kMinBlocks = D <= 64 ? 2 : 1;
  static_assert(D == 64 || D == 128, "SW128 panels of 64 columns; wgmma N = D <= 256");
};

template <class T, int D>
__global__ void __launch_bounds__(ForwardWgmmaTraits<D>::kThreads,
                                  ForwardWgmmaTraits<D>::kMinBlocks)
    forward_wgmma_kernel(const AttnParams p) {
#ifdef LONGATTN_WGMMA_UNAVAILABLE
  __trap();  // not an sm_90a build of this kernel; the host never launches it
#else
  using Tr = ForwardWgmmaTraits<D>;
  constexpr int BM = Tr::kBlockM;
  constexpr int BN = Tr::kBlockN;
  constexpr int NB = BN / 8;  // n8 blocks of S
  constexpr int DB = D / 8;   // n8 blocks of O
  LONGATTN_DYNAMIC_SHARED(unsigned char, smem_raw);
  unsigned char* qs = smem_raw + (1024U - smem_addr(smem_raw) % 1024U) % 1024U;
  unsigned char* ks = qs + Tr::kQBytes;       // [2][BN rows in SW128 panels]
  unsigned char* vs = ks + 2 * Tr::kKVBytes;  // [2][BN rows in SW128 panels]
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int group = lane >> 2;
  const int tq = lane & 3;
  const int warpgroup = warp / 4;
  const bool softmax = p.softmax;
  const float post = softmax ? kLog2eF : 1.0F;
  const bool plain_softmax = softmax && p.softcap <= 0.0F && p.scale > 0.0F;
  const float raw_to_log2 = p.scale * kLog2eF;
  const int warp_row0 = warp * 16;
  // Descriptors: Q (K-major, this warpgroup's 64 rows), K (K-major), V (N-major); the k-steps
  // add their offsets (>> 4) to the start address field.
  const WgmmaDesc q_desc =
      wgmma_desc(smem_addr(qs + static_cast<std::uint32_t>(warpgroup) * 64U * 128U), 16, 1024);
  // (Buffer 1 is kKVBytes after buffer 0: added to the start field, not indexed, which would put
  // the descriptors in local memory.)
  const WgmmaDesc k_desc = wgmma_desc(smem_addr(ks), 16, 1024);
  const WgmmaDesc v_desc = wgmma_desc(smem_addr(vs), BN * 128, 1024);
  constexpr std::uint32_t kBufferStep = Tr::kKVBytes >> 4;
  auto q_dst = [qs](int r, int ch) { return smem_addr(qs + sw128_offset(Tr::kBlockM, r, ch * 8)); };

  for_each_work_item(p.work_counter, p.num_row_work, [&](int item) {
    const RowWork w = p.row_work[item];
    const BatchEntry be = p.batch[w.b];
    const int kvh = w.h / p.group;
    const int q0 = w.qt * BM;
    const int qn = tile_rows(p, w.qt, BM, be.sq);
    const SlotRef sr = schedule_of(p, w.b, w.h);
    const SlotEntry& se = sr.entry;
    const std::int64_t ebase = sr.base;
    const int entries = static_cast<int>(w.end - w.begin);
    // Schedule entries a tile ahead, as in sm80.
    const std::int32_t* key_tiles = p.sched.key_tile + ebase + w.begin;
    const std::int32_t* tile_bits_index = p.sched.row_bits + ebase + w.begin;
    int kt_cur = entries > 0 ? key_tiles[0] : 0;
    int bits_cur = entries > 0 ? tile_bits_index[0] : -1;
    int kt_next = entries > 1 ? key_tiles[1] : 0;
    auto issue_kv = [&](int kt, int buf) {
      const int k0 = kt * BN;
      const int jn = min(BN, be.skv - k0);
      unsigned char* kd = ks + buf * Tr::kKVBytes;
      unsigned char* vd = vs + buf * Tr::kKVBytes;
      load_rows_async<T, D, Tr::kThreads>(
          [kd](int r, int ch) { return smem_addr(kd + sw128_offset(Tr::kBlockN, r, ch * 8)); }, BN,
          p.k, be.k + kvh * p.k_hs, p.k_ts, k0, jn);
      load_rows_async<T, D, Tr::kThreads>(
          [vd](int r, int ch) { return smem_addr(vd + sw128_offset(Tr::kBlockN, r, ch * 8)); }, BN,
          p.v, be.v + kvh * p.v_hs, p.v_ts, k0, jn);
      cp_async_commit();
    };
    load_query_rows_async<T, D, Tr::kThreads>(q_dst, BM, p, be, w.h, w.qt, qn);
    cp_async_commit();
    if (entries > 0) issue_kv(kt_cur, 0);
    int row_bit[1][2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = warp_row0 + group + r * 8;
      row_bit[0][r] = row < qn ? tile_row(p, w.h, w.qt, BM, be.sq, row).query - q0 : 0;
    }

    float o[1][DB][4];
    float m[1][2] = {{neg_inf(), neg_inf()}};
    float l[1][2] = {{0.0F, 0.0F}};
#pragma unroll
    for (int db = 0; db < DB; ++db) o[0][db][0] = o[0][db][1] = o[0][db][2] = o[0][db][3] = 0.0F;
    // wgmma is a warpgroup instruction: all four warps of a warpgroup run it or none (rows past
    // qn hold zero Q rows and are never written).
    const bool warpgroup_active = warpgroup * 64 < qn;

    for (int i = 0; i < entries; ++i) {
      const int buf = i & 1;
      if (i + 1 < entries) {
        issue_kv(kt_next, (i + 1) & 1);
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      fence_proxy_async();  // this thread's copies, visible to wgmma after the barrier
      __syncthreads();
      const int kt = kt_cur;
      const int bits_index = bits_cur;
      kt_cur = kt_next;
      bits_cur = i + 1 < entries ? tile_bits_index[i + 1] : -1;
      kt_next = i + 2 < entries ? key_tiles[i + 2] : 0;
      const int jn = min(BN, be.skv - kt * BN);
      const unsigned char* vb = vs + buf * Tr::kKVBytes;

      // Inf/NaN in V of a PARTIAL tile: the exact P.V path (see sm80).
      bool v_nonfinite = false;
      if (bits_index >= 0) {
        const bool v_bad = tile_has_nonfinite<T, Tr::kChunks, Tr::kThreads>(jn, [&](int r, int c) {
          return reinterpret_cast<const T*>(vb + sw128_offset(Tr::kBlockN, r, c * 8));
        });
        v_nonfinite = __syncthreads_or(v_bad) != 0;
      }

      if (warpgroup_active) {
        // ---- S = Q K^T: D / 16 k-steps of 16 columns (32 bytes), 4 per 64-column panel ----
        float s[1][NB][4];
#pragma unroll
        for (int nb = 0; nb < NB; ++nb)
          s[0][nb][0] = s[0][nb][1] = s[0][nb][2] = s[0][nb][3] = 0.0F;
        wgmma_fence_operand(s[0]);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
          const std::uint32_t q_off = (kk / 4) * BM * 128 + (kk % 4) * 32;
          const std::uint32_t k_off = (kk / 4) * BN * 128 + (kk % 4) * 32;
          wgmma_ss<T, BN>(s[0], q_desc + (q_off >> 4), k_desc + buf * kBufferStep + (k_off >> 4),
                          kk > 0);
        }
        wgmma_commit();
        wgmma_wait<0>();
        wgmma_fence_operand(s[0]);

        // ---- mask, logit transform, online softmax (the sm80 code) ----
        const bool raw_scores = plain_softmax && bits_index < 0 && jn == BN;
        const float to_log2 = raw_scores ? raw_to_log2 : 1.0F;
        const std::uint64_t* tile_bits =
            bits_index >= 0 ? p.sched.bits + se.bits +
                                  static_cast<std::int64_t>(bits_index) * BN * Tr::kWordsPerRow
                            : nullptr;
        if (!raw_scores) {
          mask_and_transform<1, NB, Tr::kWordsPerRow>(p, s, tile_bits, row_bit, warp_row0, group,
                                                      tq, jn, qn, post);
        }
        if (softmax) online_softmax(s, m, l, o, to_log2);

        // ---- O += P V: 4 k-steps of 16 keys (2048 bytes of each panel) ----
        if (!v_nonfinite) {
          std::uint32_t a[BN / 16][4];
#pragma unroll
          for (int kk = 0; kk < BN / 16; ++kk) probability_fragment<T>(s[0], kk, a[kk]);
          wgmma_fence_operand(o[0]);
          wgmma_fence();
#pragma unroll
          for (int kk = 0; kk < BN / 16; ++kk) {
            wgmma_rs_tb<T, D>(o[0], a[kk], v_desc + buf * kBufferStep + ((kk * 16U * 128U) >> 4),
                              true);
          }
          wgmma_commit();
          wgmma_wait<0>();
          wgmma_fence_operand(o[0]);
        } else {
          exact_pv<T>(s[0], o[0], jn, lane, tq, [&](int key, int col) {
            return reinterpret_cast<const T*>(vb + sw128_offset(Tr::kBlockN, key, col));
          });
        }
      }
      __syncthreads();  // this buffer is refilled by the prefetch of iteration i + 2
    }
    cp_async_wait<0>();  // Q alone was in flight when the tile has no key tiles

    store_forward_rows<T, D, BM, 1>(p, w, be, o, m, l, warp_row0, group, tq, qn);
  });
#endif  // LONGATTN_WGMMA_UNAVAILABLE
}

/// Resident blocks per SM (0 when the kernel cannot be configured).
template <int ELEM, int D>
int forward_wgmma_occupancy() {
  using T = std::conditional_t<ELEM == static_cast<int>(ElemType::kBF16), __nv_bfloat16, __half>;
  using Tr = ForwardWgmmaTraits<D>;
  constexpr auto* kKernel = forward_wgmma_kernel<T, D>;
  if (!fits_shared_memory(Tr::kSmemBytes)) return 0;
  if (allow_dynamic_smem(kKernel, Tr::kSmemBytes) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  int blocks = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kKernel, Tr::kThreads,
                                                    Tr::kSmemBytes) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return blocks;
}

template <int ELEM, int D>
cudaError_t launch_forward_wgmma(const AttnParams& p, int grid, cudaStream_t stream) {
  using T = std::conditional_t<ELEM == static_cast<int>(ElemType::kBF16), __nv_bfloat16, __half>;
  using Tr = ForwardWgmmaTraits<D>;
  if (p.sched.tile_q != Tr::kBlockM || p.sched.tile_k != Tr::kBlockN) return cudaErrorInvalidValue;
  constexpr auto* kKernel = forward_wgmma_kernel<T, D>;
  if (cudaError_t e = allow_dynamic_smem(kKernel, Tr::kSmemBytes); e != cudaSuccess) return e;
  launch_kernel(kKernel, grid, Tr::kThreads, Tr::kSmemBytes, stream, p);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  return launch_merge(p, stream);
}

}  // namespace longattn::detail::cuda

/// Explicit instantiation of one (element type, head dim) Hopper forward (kernels.list kind
/// fwdh; built for sm_90a only).
#define LONGATTN_INSTANTIATE_FORWARD_WGMMA(ELEM, D)                           \
  template int longattn::detail::cuda::forward_wgmma_occupancy<ELEM, D>();    \
  template cudaError_t longattn::detail::cuda::launch_forward_wgmma<ELEM, D>( \
      const longattn::detail::cuda::AttnParams&, int, cudaStream_t);
